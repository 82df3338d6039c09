// Issue 13 §4 and issue 14 §2: whatever a client sends to the gRPC port, the process stays under
// the chart's memory limit (measured as RSS of a child process with the chart's V8 settings), a
// client over its share is refused rather than the process, and a well-behaved client's checks
// keep being answered meanwhile. Loopback only; every attack is bounded in count and time.

import http2 from 'node:http2';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { CheckClient, checkRequestType } from '../support/grpc-client.js';
import { CHART_MEMORY_LIMIT_MB, startChildServer, type ChildServer } from '../support/child-server.js';

const CHECK = '/envoy.service.auth.v3.Authorization/Check';
/** Old builds (PORTCULLIS_TEST_CLI) know no server.grpc section. */
const LIMITS = process.env.PORTCULLIS_TEST_CLI ? '' : `  grpc: { prefaceTimeout: 1s, idleTimeout: 2s${process.env.TEST_BUDGET_MB ? `, memoryBudgetMb: ${process.env.TEST_BUDGET_MB}` : ''} }\n`;
const POLICY = `server:\n  decisionLog: none\n${LIMITS}routes:\n  - { name: health, match: { path: /health }, public: true }\n`;
/** The overload test refuses from 128 checks in flight, so refusals happen at whatever speed this machine runs h2load. */
const OVERLOAD_POLICY = process.env.PORTCULLIS_TEST_CLI ? POLICY : POLICY.replace('idleTimeout: 2s }', 'idleTimeout: 2s, maxInFlight: 128 }');
/** What RSS must stay under: well below the chart's 256 Mi limit. */
const RSS_BOUND_MB = 200;
/** Report lines (figures for the lead), printed at the end. */
const report: string[] = [];

let server: ChildServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});
afterAll(() => console.log(`memory-bounds figures:\n${report.join('\n')}`));

function checkMessage(extraHeaderBytes = 0): Buffer {
  const headers: Record<string, string> = extraHeaderBytes > 0 ? { 'x-padding': 'p'.repeat(extraHeaderBytes) } : {};
  return Buffer.from(checkRequestType.encode(checkRequestType.fromObject(CheckClient.requestMessage({ path: '/health', headers }))).finish());
}

function frame(message: Buffer, flag = 0, declared = message.length): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(declared, 1);
  return Buffer.concat([head, message]);
}

/** A well-behaved client: sequential checks on one connection until stopped. */
function steadyClient(port: number) {
  const client = new CheckClient(port);
  const latencies: number[] = [];
  const failures: string[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const started = performance.now();
      try {
        const response = await client.check({ path: '/health' });
        if ((response.status?.code ?? 0) !== 0 || response.http_response !== 'ok_response') failures.push(`status ${response.status?.code} ${response.http_response}`);
        else latencies.push(performance.now() - started);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  })();
  return {
    latencies,
    failures,
    async stop() {
      running = false;
      await done;
      client.close();
    },
  };
}

function p(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Open `n` HTTP/2 connections (errors ignored: the server may close them). */
async function connect(port: number, n: number): Promise<http2.ClientHttp2Session[]> {
  const sessions: http2.ClientHttp2Session[] = [];
  for (let i = 0; i < n; i++) {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    s.on('error', () => undefined);
    sessions.push(s);
  }
  await Promise.all(sessions.map((s) => new Promise<void>((resolve) => (s.connecting ? s.once('connect', () => resolve()).once('close', () => resolve()) : resolve()))));
  return sessions;
}

/** Open a Check stream on `session` and write `body` without ending it (or ending it). */
function openStream(session: http2.ClientHttp2Session, body: Buffer, end: boolean, headers: Record<string, string> = {}): http2.ClientHttp2Stream | undefined {
  if (session.closed || session.destroyed) return undefined;
  try {
    const stream = session.request({ ':method': 'POST', ':path': CHECK, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    stream.on('error', () => undefined);
    stream.resume();
    if (end) stream.end(body);
    else stream.write(body);
    return stream;
  } catch {
    return undefined;
  }
}

/** Run an attack while a well-behaved client checks; assert bounded RSS and answered checks. */
async function underAttack(name: string, attack: (s: ChildServer) => Promise<() => void>, holdMs: number, extra?: (s: ChildServer) => Promise<void>) {
  server = await startChildServer(POLICY);
  const s = server;
  const before = s.rssMb();
  const steady = steadyClient(s.grpcPort);
  await sleep(200);
  s.resetPeak();
  const stopAttack = await attack(s);
  await sleep(holdMs);
  const answeredDuring = steady.latencies.length;
  await extra?.(s);
  stopAttack();
  await sleep(300);
  await steady.stop();
  const peak = s.peakRssMb();
  const sorted = [...steady.latencies].sort((a, b) => a - b);
  report.push(`${name}: alive ${s.alive()}; RSS ${before.toFixed(0)} MB at start, peak ${peak.toFixed(0)} MB; well-behaved client ${steady.latencies.length} checks answered, ${steady.failures.length} failed, p50 ${p(sorted, 0.5).toFixed(1)} ms, p99 ${p(sorted, 0.99).toFixed(1)} ms`);
  expect(s.alive(), s.logs()).toBe(true);
  expect(peak).toBeLessThan(RSS_BOUND_MB);
  expect(steady.failures).toEqual([]);
  expect(answeredDuring).toBeGreaterThan(0);
  return { peak, steady: sorted };
}

describe('gRPC port memory bounds (child process, chart V8 settings)', { timeout: 45_000 }, () => {
  it('4 connections × 1000 unfinished ~60 KiB messages', async () => {
    const body = frame(checkMessage(60 * 1024));
    const unfinished = body.subarray(0, body.length - 10);
    await underAttack(
      '4 × 1000 unfinished 60 KiB',
      async (s) => {
        const sessions = await connect(s.grpcPort, 4);
        for (const session of sessions) for (let i = 0; i < 1000; i++) openStream(session, unfinished, false);
        return () => sessions.forEach((x) => x.destroy());
      },
      3000,
    );
  });

  it('80 × 3 MiB unfinished messages', async () => {
    const big = frame(Buffer.alloc(3 * 1024 * 1024 - 1, 0x61), 0, 3 * 1024 * 1024);
    await underAttack(
      '80 × 3 MiB unfinished',
      async (s) => {
        const sessions = await connect(s.grpcPort, 80);
        for (const session of sessions) openStream(session, big, false);
        return () => sessions.forEach((x) => x.destroy());
      },
      3000,
    );
  });

  it('200 concurrent ~4 KiB gzip messages that each inflate to ~4 MiB', async () => {
    const bomb = frame(zlib.gzipSync(checkMessage(4 * 1024 * 1024 - 4096), { level: 9 }), 1);
    expect(bomb.length).toBeLessThan(8 * 1024);
    await underAttack(
      '200 concurrent gzip bombs (4 KiB → 4 MiB)',
      async (s) => {
        const sessions = await connect(s.grpcPort, 8);
        let running = true;
        // 25 per connection, each re-sent when answered: 200 in flight for the whole hold.
        const keep = (session: http2.ClientHttp2Session) => {
          if (!running) return;
          const stream = openStream(session, bomb, true, { 'grpc-encoding': 'gzip' });
          stream?.once('close', () => setImmediate(() => keep(session)));
        };
        for (const session of sessions) for (let i = 0; i < 25; i++) keep(session);
        return () => {
          running = false;
          sessions.forEach((x) => x.destroy());
        };
      },
      3000,
    );
  });

  it('3000 idle sessions: capped, the idle ones closed, the active client kept', async () => {
    const sessions: http2.ClientHttp2Session[] = [];
    const closedByServer = () => sessions.filter((x) => x.closed || x.destroyed).length;
    await underAttack(
      '3000 idle sessions',
      async (s) => {
        for (let i = 0; i < 30; i++) {
          sessions.push(...(await connect(s.grpcPort, 100)));
        }
        return () => sessions.forEach((x) => x.destroy());
      },
      500,
      async () => {
        // The connection cap closed the longest-idle ones at once; the idle timeout (2 s) the rest.
        await expect.poll(closedByServer, { timeout: 15_000, interval: 100 }).toBe(3000);
      },
    );
  });

  it('3000 connections that never send the HTTP/2 preface are closed', async () => {
    let closed = 0;
    const sockets: net.Socket[] = [];
    await underAttack(
      '3000 connections without preface',
      async (s) => {
        for (let i = 0; i < 3000; i++) {
          const socket = net.connect(s.grpcPort, '127.0.0.1');
          socket.on('error', () => undefined);
          socket.resume(); // a paused socket would never see the server's FIN
          socket.once('close', () => closed++);
          sockets.push(socket);
          if (i % 100 === 99) await sleep(50); // within the listen backlog
        }
        return () => sockets.forEach((x) => x.destroy());
      },
      500,
      async () => {
        await expect.poll(() => closed, { timeout: 15_000, interval: 100 }).toBe(3000);
      },
    );
  });

  it('overload (h2load 128 connections × 1000 streams): no crash, bounded RSS, refusals counted, the steady client answered', async () => {
    server = await startChildServer(OVERLOAD_POLICY);
    const s = server;
    // Unloaded latency of the well-behaved client first.
    const quiet = steadyClient(s.grpcPort);
    await sleep(1500);
    await quiet.stop();
    const unloaded = [...quiet.latencies].sort((a, b) => a - b);

    const dir = mkdtempSync(path.join(tmpdir(), 'pc-overload-'));
    const dataFile = path.join(dir, 'check.bin');
    writeFileSync(dataFile, frame(checkMessage()));
    s.resetPeak();
    const steady = steadyClient(s.grpcPort);
    const h2load = spawn('h2load', ['-c', '128', '-m', process.env.OVERLOAD_STREAMS ?? '1000', '-t', '1', '-D', '6', '-d', dataFile, '-H', 'content-type: application/grpc', '-H', 'te: trailers', `http://127.0.0.1:${s.grpcPort}${CHECK}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    h2load.stdout.on('data', (d) => (out += d));
    const exited = new Promise<void>((resolve) => h2load.once('exit', () => resolve()));
    const killer = setTimeout(() => h2load.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(killer);
    await steady.stop();
    const loaded = [...steady.latencies].sort((a, b) => a - b);
    const peak = s.peakRssMb();
    const refused = await s.metric('portcullis_grpc_refused_total{reason="overloaded"}');
    const requests = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded/.exec(out);
    report.push(
      `overload 128 × 1000 (6 s): RSS peak ${peak.toFixed(0)} MB; h2load ${requests?.[3] ?? '?'} done; ${refused} refused overloaded; ` +
        `well-behaved unloaded p50 ${p(unloaded, 0.5).toFixed(1)} / p99 ${p(unloaded, 0.99).toFixed(1)} ms, loaded p50 ${p(loaded, 0.5).toFixed(1)} / p99 ${p(loaded, 0.99).toFixed(1)} ms (${loaded.length} checks, ${steady.failures.length} failed)`,
    );
    expect(s.alive(), s.logs()).toBe(true);
    expect(peak).toBeLessThan(RSS_BOUND_MB);
    expect(refused).toBeGreaterThan(0);
    expect(steady.failures).toEqual([]);
    expect(loaded.length).toBeGreaterThan(10);
    // Loose on purpose (a shared 2-core machine, h2load on the same cores; before the fix the process
    // died or the client waited seconds): the figures are reported, not asserted tightly.
    expect(p(loaded, 0.99)).toBeLessThan(Math.max(1500, 10 * p(unloaded, 0.99)));
  });
});
