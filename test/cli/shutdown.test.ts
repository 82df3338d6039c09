// Graceful shutdown and workers, on the built program as a child process (npm test builds first).
//   SIGTERM → health NOT_SERVING and /readyz 503 → drain delay (load balancers stop sending) →
//   in-flight checks finish → exit 0. No check that was sent may fail.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { askShape } from '../support/authz-http.js';
import { CheckClient } from '../support/grpc-client.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const POLICY = 'server: { decisionLog: none }\nroutes:\n  - { match: { path: /health }, public: true }\n';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function startChild(args: string[], policy = POLICY): Promise<{ child: ChildProcess; grpcPort: number; httpPort: number; logs: () => string }> {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'pc-shutdown-')), 'policy.yaml');
  writeFileSync(file, policy);
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/cli.js'), 'serve', '--config', file, '--bind', '127.0.0.1', '--grpc-port', String(grpcPort), '--http-port', String(httpPort), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let logs = '';
  child.stdout!.on('data', (d) => (logs += d));
  child.stderr!.on('data', (d) => (logs += d));
  const until = Date.now() + 40_000;
  while (Date.now() < until) {
    const ok = await fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.status === 200, () => false);
    if (ok) return { child, grpcPort, httpPort, logs: () => logs };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`server did not become ready: ${logs}`);
}

describe('graceful shutdown', () => {
  it('drains under steady load: every check sent gets its answer, then exit 0', async () => {
    const { child, grpcPort, httpPort, logs } = await startChild(['--drain-delay', '2s', '--drain-timeout', '5s']);
    const client = new CheckClient(grpcPort);
    let sent = 0;
    let ok = 0;
    const failures: string[] = [];
    let serving = true;
    // 16 concurrent callers, like an Envoy connection pool; they stop sending once readiness flips,
    // as Kubernetes endpoints / Envoy health checks would.
    const callers = Array.from({ length: 16 }, async () => {
      while (serving) {
        sent++;
        try {
          const r = await client.check({ path: '/health' });
          if (r.http_response === 'ok_response') ok++;
          else failures.push(JSON.stringify(r));
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    });
    await new Promise((r) => setTimeout(r, 300));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    const until = Date.now() + 5000;
    while (Date.now() < until) {
      const status = await fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.status, () => 0);
      if (status !== 200) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    serving = false;
    await Promise.all(callers);
    client.close();
    expect(await exited).toBe(0);
    expect(failures).toEqual([]);
    expect(ok).toBe(sent);
    expect(sent).toBeGreaterThanOrEqual(16);
    expect(logs()).toContain('shutdown complete');
  });
});

function childPids(pid: number): number[] {
  const out = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' });
  return out.split('\n').map((l) => Number(l.trim())).filter((n) => n > 0);
}

async function bothWorkersReady(httpPort: number): Promise<void> {
  const until = Date.now() + 20_000;
  while (Date.now() < until) {
    const text = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text(), () => '');
    if (/^portcullis_ready 2$/m.test(text)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the two workers did not both become ready');
}

describe('shutdown with connections that never spoke HTTP/2', () => {
  it('SIGTERM ends within the drain timeout even while clients hold preface-less gRPC connections open', async () => {
    const { child, grpcPort } = await startChild(['--drain-delay', '0s', '--drain-timeout', '1s']);
    const sockets = Array.from({ length: 10 }, () => net.connect(grpcPort, '127.0.0.1').on('error', () => undefined));
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running after 8 s'), 8000))]);
    const took = Date.now() - started;
    for (const socket of sockets) socket.destroy();
    if (code === 'still running after 8 s') child.kill('SIGKILL');
    expect(code).toBe(0);
    expect(took).toBeLessThan(8000);
  }, 30_000);
});

describe('serve --workers', () => {
  it('stays ready while one worker dies and the other serves (readiness = the pod can serve)', async () => {
    const { child, grpcPort, httpPort } = await startChild(['--workers', '2', '--drain-delay', '0s']);
    try {
      await bothWorkersReady(httpPort);
      const metricsReady = async () =>
        /^portcullis_ready 2$/m.test(await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text(), () => ''));
      const [victim] = childPids(child.pid!);
      process.kill(victim!, 'SIGKILL');

      // Until the replacement is serving, sample readiness and checks: the survivor serves them all.
      const client = new CheckClient(grpcPort);
      const statuses: number[] = [];
      let answered = 0;
      let replaced = false;
      const deadline = Date.now() + 30_000;
      while (!replaced && Date.now() < deadline) {
        statuses.push((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status);
        // A connection the primary handed to the dying worker is retried by the client, as Envoy
        // does: the deadline covers reconnecting on a loaded machine, not a refused check.
        if ((await client.check({ path: '/health', deadlineMs: 20_000 })).http_response === 'ok_response') answered++;
        const pids = childPids(child.pid!);
        replaced = pids.length === 2 && !pids.includes(victim!) && (await metricsReady());
        await new Promise((r) => setTimeout(r, 10));
      }
      client.close();
      expect(replaced).toBe(true);
      expect(statuses.length).toBeGreaterThan(5);
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
      expect(answered).toBe(statuses.length);
    } finally {
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  }, 60_000);


  it('a connection opened as a worker is killed is served by a live worker, never left hanging', async () => {
    // node:cluster's own hand-off sent connections accepted in the moment a worker died to the dead
    // worker: the client's TCP connection stayed open with nobody reading it (grpc-js waited its
    // 20 s connect timeout; Envoy would send checks on it until they timed out).
    const { child, grpcPort, httpPort } = await startChild(['--workers', '2', '--drain-delay', '0s']);
    try {
      for (let round = 0; round < 3; round++) {
        await bothWorkersReady(httpPort);
        const [victim] = childPids(child.pid!);
        // Each client has its own connection (no shared subchannel pool); all connect around the kill.
        const clients = Array.from({ length: 24 }, () => new CheckClient(grpcPort, undefined, { 'grpc.use_local_subchannel_pool': 1, 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 200 }));
        const answers = clients.map((client, i) =>
          new Promise((r) => setTimeout(r, i % 4)).then(() => client.check({ path: '/health', deadlineMs: 8_000 })).then(
            (r) => r.http_response ?? 'none',
            (err: Error) => err.message,
          ),
        );
        process.kill(victim!, 'SIGKILL');
        const results = await Promise.all(answers);
        for (const client of clients) client.close();
        expect(results.filter((r) => r !== 'ok_response')).toEqual([]);
        // The replacement comes up before the next round.
        const until = Date.now() + 20_000;
        while (Date.now() < until && (childPids(child.pid!).includes(victim!) || childPids(child.pid!).length !== 2)) await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  }, 90_000);

  it('runs two workers behind one port, aggregates /metrics, and stops cleanly', async () => {
    const authzHttpPort = await freePort();
    const { child, grpcPort, httpPort, logs } = await startChild(['--workers', '2', '--drain-delay', '0s', '--authz-http-port', String(authzHttpPort)]);
    // /readyz is ready with one worker serving; wait for both before counting.
    await bothWorkersReady(httpPort);
    const client = new CheckClient(grpcPort);
    for (let i = 0; i < 20; i++) expect((await client.check({ path: '/health' })).http_response).toBe('ok_response');
    client.close();
    // The HTTP authorization listener is handed to the workers the same way (new connection each).
    for (let i = 0; i < 4; i++) {
      expect((await askShape(authzHttpPort, 'envoy', { path: '/health' })).status).toBe(200);
      expect((await askShape(authzHttpPort, 'envoy', { path: '/private' })).status).not.toBe(200);
    }
    const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    const total = [...metrics.matchAll(/^portcullis_checks_total\{[^}]*decision="allow"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
    expect(total).toBe(24);
    expect(metrics).toMatch(/portcullis_ready 2/);
    // Reload state is aggregated with min, not summed: 1 means every worker's last reload succeeded.
    expect(metrics).toMatch(/^portcullis_policy_last_reload_success 1$/m);
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    // The primary finished its own shutdown (its listeners' close did not wait for dead workers).
    expect(logs()).toMatch(/"msg":"shutdown complete"[^\n]*\n?$|shutdown complete/);
    expect(logs().match(/shutdown complete/g)?.length).toBe(3);
  }, 60_000);

  it('a connection beyond every worker’s HTTP connection cap is closed at once, not parked in the primary', async () => {
    const authzHttpPort = await freePort();
    const policy = POLICY.replace('server: { decisionLog: none }', `server: { decisionLog: none, authzHttp: { port: ${authzHttpPort}, maxConnections: 2, headersTimeout: 5s } }`);
    const { child, httpPort } = await startChild(['--workers', '2', '--drain-delay', '0s'], policy);
    const idle: net.Socket[] = [];
    try {
      await bothWorkersReady(httpPort);
      for (let i = 0; i < 4; i++) {
        idle.push(net.connect(authzHttpPort, '127.0.0.1').on('error', () => undefined));
        await new Promise((r) => setTimeout(r, 100));
      }
      const started = Date.now();
      const closedAfter = await new Promise<number>((resolve) => {
        const extra = net.connect(authzHttpPort, '127.0.0.1');
        extra.on('error', () => undefined);
        extra.resume();
        extra.once('close', () => resolve(Date.now() - started));
        setTimeout(() => {
          resolve(Infinity);
          extra.destroy();
        }, 4000);
      });
      // Before: held in the primary until its 10 s waiting limit.
      expect(closedAfter).toBeLessThan(2000);
    } finally {
      for (const socket of idle) socket.destroy();
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  }, 60_000);

  it('a worker applies the HTTP listener’s headers timeout to connections the primary hands it', async () => {
    const authzHttpPort = await freePort();
    const policy = POLICY.replace('server: { decisionLog: none }', `server: { decisionLog: none, authzHttp: { port: ${authzHttpPort}, headersTimeout: 500ms } }`);
    const { child, httpPort } = await startChild(['--workers', '2', '--drain-delay', '0s'], policy);
    try {
      await bothWorkersReady(httpPort);
      // A request head that never ends (slowloris): answered 408 and closed, not held for ever.
      const answer = await new Promise<string>((resolve) => {
        const socket = net.connect(authzHttpPort, '127.0.0.1', () => socket.write('GET /envoy/health HTTP/1.1\r\nhost: api.example.com\r\nx-slow: '));
        let text = '';
        socket.on('data', (d) => (text += d));
        socket.on('close', () => resolve(text));
        socket.on('error', () => resolve(text));
        setTimeout(() => {
          resolve(`still open after 5 s: ${text}`);
          socket.destroy();
        }, 5000);
      });
      expect(answer).toMatch(/^HTTP\/1\.1 408/);
    } finally {
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  }, 60_000);
});
