// Throwaway redis-server processes on loopback ports for failure and Cluster tests, so pausing,
// killing or flushing scripts never disturbs the shared Redis other suites use.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';

export function redisServerInstalled(): boolean {
  const found = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!found) console.warn('SKIPPING: redis-server is not installed (apt-get install redis-server)');
  return found;
}

/** A port nothing listens on right now, optionally with port + 10000 free too (Cluster bus). */
export async function freePort(withBus = false): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    if (!withBus) return port;
    if (port + 10000 < 65536 && (await portFree(port + 10000))) return port;
  }
  throw new Error('no free port found');
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export class RedisServer {
  private process: ChildProcess | undefined;
  readonly dir = mkdtempSync(path.join(tmpdir(), 'portcullis-redis-'));

  /** `configFile` (written into the server's directory) comes first on the command line, e.g. for --sentinel. */
  constructor(
    readonly port: number,
    private readonly extraArgs: string[] = [],
    private readonly configFile?: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const config: string[] = [];
    if (this.configFile !== undefined) {
      const file = path.join(this.dir, 'redis.conf');
      writeFileSync(file, this.configFile);
      config.push(file);
    }
    const persistence = this.configFile === undefined ? ['--save', '', '--appendonly', 'no'] : [];
    this.process = spawn(
      'redis-server',
      [...config, '--port', String(this.port), '--bind', '127.0.0.1', ...persistence, '--dir', this.dir, ...this.extraArgs],
      { stdio: 'ignore' },
    );
    const deadline = Date.now() + 5000;
    for (;;) {
      const client = new Redis(this.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
      client.on('error', () => {});
      try {
        await client.connect();
        await client.ping();
        client.disconnect();
        return;
      } catch {
        client.disconnect();
        if (Date.now() > deadline) throw new Error(`redis-server on ${this.port} did not start`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** SIGKILL: the connection drops the way a crashed server's does. */
  async kill(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    this.process = undefined;
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  admin(): Redis {
    const client = new Redis(this.url, { maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    return client;
  }
}
