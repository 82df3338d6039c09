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

  /** SIGSTOP: the server stops answering while its connections stay open (a hung node). */
  pause(): void {
    this.process?.kill('SIGSTOP');
  }

  /** SIGCONT after pause(). */
  resume(): void {
    this.process?.kill('SIGCONT');
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

/**
 * A Redis Cluster of `masters` redis-server processes (no replicas) on loopback ports, created with
 * redis-cli and waited for until every node reports cluster_state:ok. Servers are pushed to
 * `servers` as they start, so the caller can stop them even when creation fails half-way.
 */
export async function startCluster(servers: RedisServer[], extraArgs: string[] = [], masters = 3): Promise<void> {
  for (let i = 0; i < masters; i++) {
    const server = new RedisServer(await freePort(true), ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', ...extraArgs]);
    servers.push(server);
    await server.start();
  }
  const create = spawnSync(
    'redis-cli',
    ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', '0', '--cluster-yes'],
    { encoding: 'utf8', timeout: 20_000 },
  );
  if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
  const deadline = Date.now() + 15_000;
  for (const server of servers) {
    const admin = server.admin();
    try {
      while (!String(await admin.cluster('INFO')).includes('cluster_state:ok')) {
        if (Date.now() > deadline) throw new Error('the cluster did not reach cluster_state:ok');
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      admin.disconnect();
    }
  }
}
