// A real nginx (Debian nginx-light) on loopback, run by the tests with examples/nginx/nginx.conf
// rendered for the test's ports: its own prefix directory (logs, temp), `daemon off`, as the
// current user. Under CI=true a missing nginx fails the tests (.ci/run installs it).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const NGINX_CONF = path.join(ROOT, 'examples/nginx/nginx.conf');

/** The nginx binary, or undefined when not installed (a failure under CI=true). */
export function nginxBinary(): string | undefined {
  for (const candidate of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx']) if (existsSync(candidate)) return candidate;
  const found = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).stdout.trim();
  if (found) return found;
  if (process.env.CI === 'true') throw new Error('nginx is not installed (apt-get install nginx-light); .ci/run installs it');
  return undefined;
}

export interface RunningNginx {
  readonly port: number;
  errorLog(): string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** examples/nginx/nginx.conf with its three placeholders filled in. */
export function renderNginxConf(listen: string, portcullis: string, app: string): string {
  return readFileSync(NGINX_CONF, 'utf8').replaceAll('${LISTEN}', listen).replaceAll('${PORTCULLIS_AUTHZ}', portcullis).replaceAll('${APP}', app);
}

export async function startNginx(binary: string, authzPort: number, appPort: number): Promise<RunningNginx> {
  const prefix = mkdtempSync(path.join(tmpdir(), 'portcullis-nginx-'));
  mkdirSync(path.join(prefix, 'logs'));
  mkdirSync(path.join(prefix, 'temp'));
  const port = await freePort();
  writeFileSync(path.join(prefix, 'nginx.conf'), renderNginxConf(`127.0.0.1:${port}`, `127.0.0.1:${authzPort}`, `127.0.0.1:${appPort}`));
  // As root nginx would switch its workers to "nobody"; run them as the current user instead.
  const globals = process.getuid?.() === 0 ? 'daemon off; user root;' : 'daemon off;';
  const child: ChildProcess = spawn(binary, ['-p', prefix, '-c', 'nginx.conf', '-g', globals], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const errorLog = () => {
    try {
      return readFileSync(path.join(prefix, 'logs/error.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    rmSync(prefix, { recursive: true, force: true });
  };
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) break;
    if (await accepts(port)) return { port, errorLog, stop };
    await new Promise((r) => setTimeout(r, 50));
  }
  const log = errorLog();
  await stop();
  throw new Error(`nginx did not start: ${stderr} ${log}`);
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** An upstream app that answers every request with the headers it received (JSON). */
export async function startEchoUpstream(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
