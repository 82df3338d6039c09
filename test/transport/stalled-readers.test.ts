// Review of issue 13 §4 / 14 §2: a client that sends complete checks but never reads the answers
// (HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE: the server can send the response
// headers but not its DATA). Such a stream stays open, and an open admitted check counts as in
// flight: without a bound on how long an answer may wait for the client's window, a handful of
// connections held every admission slot forever and every other client's checks got 503
// `overloaded` (Envoy denies them all). Loopback only, bounded in count and time.
import http2 from 'node:http2';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CheckClient, checkRequestType } from '../support/grpc-client.js';
import { startTestServer, type TestServer } from '../support/server.js';

const CHECK = '/envoy.service.auth.v3.Authorization/Check';
const POLICY = `server:\n  decisionLog: none\n  grpc: { maxInFlight: 16, maxConnections: 8, readTimeout: 500ms }\nroutes:\n  - { name: health, match: { path: /health }, public: true }\n`;

let server: TestServer | undefined;
const sessions: http2.ClientHttp2Session[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) s.destroy();
  await server?.close();
  server = undefined;
});

function framed(): Buffer {
  const message = Buffer.from(checkRequestType.encode(checkRequestType.fromObject(CheckClient.requestMessage({ path: '/health' }))).finish());
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** A connection that announces a zero stream window and sends `streams` complete checks it never reads. */
async function stalledReader(port: number, streams: number, method = CHECK, body = framed()): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 0 } });
  sessions.push(session);
  session.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    session.once('remoteSettings', () => resolve());
    session.once('error', reject);
  });
  for (let i = 0; i < streams; i++) {
    const stream = session.request({ ':method': 'POST', ':path': method, 'content-type': 'application/grpc', te: 'trailers' });
    stream.on('error', () => undefined);
    stream.end(body);
    // never read: no WINDOW_UPDATE is ever sent for this stream
  }
  return session;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A well-behaved client on fresh connections, checks one after another, for a bounded time: 20 allowed in a row? */
async function wellBehaved(port: number): Promise<{ allowedInARow: number; outcomes: string[] }> {
  const outcomes: string[] = [];
  const until = Date.now() + 8_000;
  let allowedInARow = 0;
  while (Date.now() < until && allowedInARow < 20) {
    const client = new CheckClient(port);
    for (let i = 0; i < 5; i++) {
      const outcome = await client.check({ path: '/health' }).then(
        (r) => (r.http_response === 'ok_response' ? 'ok' : `status ${r.status?.code}`),
        (err: Error) => `error ${err.message.slice(0, 40)}`,
      );
      outcomes.push(outcome);
      allowedInARow = outcome === 'ok' ? allowedInARow + 1 : 0;
    }
    client.close();
    if (allowedInARow < 20) await sleep(200);
  }
  return { allowedInARow, outcomes };
}

async function start(): Promise<number> {
  const dir = mkdtempSync(path.join(tmpdir(), 'pc-stall-'));
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  server = await startTestServer(file);
  return server.server.grpcPort;
}

/** A connection with one check whose request never completes (a slowloris): busy, never idle. */
async function slowSender(port: number): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  sessions.push(session);
  session.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    session.once('remoteSettings', () => resolve());
    session.once('error', reject);
  });
  const stream = session.request({ ':method': 'POST', ':path': CHECK, 'content-type': 'application/grpc', te: 'trailers' });
  stream.on('error', () => undefined);
  stream.write(framed().subarray(0, 3)); // and never the rest
  return session;
}

describe('a connection cap full of busy connections', () => {
  it('a newcomer gets in: the least recently active connection is closed for it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-stall-'));
    const file = path.join(dir, 'policy.yaml');
    // A read timeout long enough that the slow senders stay busy for the whole test.
    writeFileSync(file, POLICY.replace('readTimeout: 500ms', 'readTimeout: 30s'));
    server = await startTestServer(file);
    const port = server.server.grpcPort;
    const slow: http2.ClientHttp2Session[] = [];
    for (let i = 0; i < 8; i++) slow.push(await slowSender(port));
    await sleep(100);
    // Before: every connection busy, so every newcomer was dropped — Envoy could not connect.
    const { allowedInARow, outcomes } = await wellBehaved(port);
    expect(allowedInARow, `outcomes: ${outcomes.slice(-10).join(' | ')}`).toBeGreaterThanOrEqual(20);
    expect(slow.filter((s) => s.closed || s.destroyed).length).toBeGreaterThan(0);
  }, 30_000);
});

describe('clients that never read their answers', () => {
  it('stalled health Check answers cannot hold the connection cap either', async () => {
    const port = await start();
    const empty = Buffer.alloc(5); // an empty HealthCheckRequest, framed
    const stalled: http2.ClientHttp2Session[] = [];
    for (let i = 0; i < 8; i++) stalled.push(await stalledReader(port, 4, '/grpc.health.v1.Health/Check', empty));
    const closedStalled = stalled.map((s) => new Promise<void>((resolve) => s.once('close', () => resolve())));
    const { allowedInARow, outcomes } = await wellBehaved(port);
    expect(allowedInARow, `outcomes: ${outcomes.slice(-10).join(' | ')}`).toBeGreaterThanOrEqual(20);
    await Promise.all(closedStalled);
  }, 30_000);

  it('cannot hold the admission slots: a well-behaved client keeps being allowed', async () => {
    const port = await start();
    // 8 connections (the cap) × 20 streams: every connection busy, more than twice maxInFlight
    // (16) of answers stuck. Before the fix this held for ever: newcomers were dropped at the
    // connection cap (no idle connection to close) and checks refused 503 `overloaded`.
    const stalled: http2.ClientHttp2Session[] = [];
    for (let i = 0; i < 8; i++) stalled.push(await stalledReader(port, 20));
    const closedStalled = stalled.map((s) => new Promise<void>((resolve) => s.once('close', () => resolve())));
    await sleep(200);

    const { allowedInARow, outcomes } = await wellBehaved(port);
    expect(allowedInARow, `outcomes: ${outcomes.slice(-10).join(' | ')}`).toBeGreaterThanOrEqual(20);
    // The connections that never took their answers were closed by the server.
    await Promise.all(closedStalled);
  }, 30_000);
});

// Issue 13 §4 follow-up: with only the read deadline, an answer the client does not take held its
// check in flight for readTimeout (10–20 s), so re-opening ~100 stalled streams a second kept
// in-flight near maxInFlight. The answer has its own, short deadline (answerTimeout, 2 s by
// default): the stream is then reset (no longer in flight), and a connection that keeps doing it
// is closed. readTimeout is 30 s here, so only the answer deadline can free anything in these tests.
describe('the answer deadline (server.grpc.answerTimeout)', () => {
  const ANSWER_POLICY = `server:\n  decisionLog: none\n  grpc: { maxInFlight: 16, maxConnections: 128, readTimeout: 30s }\nroutes:\n  - { name: health, match: { path: /health }, public: true }\n`;

  async function startAnswerServer(): Promise<number> {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-answer-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, ANSWER_POLICY);
    server = await startTestServer(file);
    return server.server.grpcPort;
  }

  /** `promise` settled within `ms`? (a bounded wait that fails instead of hanging) */
  const within = (promise: Promise<unknown>, ms: number) => Promise.race([promise.then(() => true), sleep(ms).then(() => false)]);

  async function gauge(name: string): Promise<number> {
    const metric = server!.server.runtime.metrics.registry.getSingleMetric(name);
    return ((await metric?.get())?.values[0]?.value as number | undefined) ?? 0;
  }

  it('an answer not taken is reset after about answerTimeout, not readTimeout, and the connection that keeps doing it is closed', async () => {
    const port = await startAnswerServer();
    const session = await stalledReader(port, 0);
    const streams: Promise<number>[] = [];
    for (let i = 0; i < 20; i++) {
      const stream = session.request({ ':method': 'POST', ':path': CHECK, 'content-type': 'application/grpc', te: 'trailers' });
      stream.on('error', () => undefined);
      streams.push(new Promise((resolve) => stream.once('close', () => resolve(stream.rstCode ?? -1))));
      stream.end(framed());
    }
    const sessionClosed = new Promise<void>((resolve) => session.once('close', () => resolve()));
    // The default answerTimeout is 2 s (reset within 2–3 s); readTimeout 30 s would be 30–60 s.
    expect(await within(Promise.all(streams), 8_000), 'stalled streams reset').toBe(true);
    expect(await within(sessionClosed, 2_000), 'stalling connection closed').toBe(true);
    // Nothing stays in flight (the gauge is sampled every second).
    let inFlight = -1;
    for (let i = 0; i < 20 && inFlight !== 0; i++) {
      await sleep(200);
      inFlight = await gauge('portcullis_grpc_in_flight');
    }
    expect(inFlight).toBe(0);
    const closedStalled = server!.server.runtime.metrics.registry.getSingleMetric('portcullis_grpc_connections_closed_total');
    const values = (await closedStalled!.get()).values.filter((v) => v.labels.reason === 'stalled');
    expect(values.reduce((sum, v) => sum + v.value, 0)).toBe(1);
  }, 30_000);

  it('answerTimeout applies on reload', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-answer-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, ANSWER_POLICY.replace('readTimeout: 30s', 'readTimeout: 30s, answerTimeout: 60s'));
    server = await startTestServer(file);
    const session = await stalledReader(server.server.grpcPort, 4);
    const sessionClosed = new Promise<void>((resolve) => session.once('close', () => resolve()));
    expect(await within(sessionClosed, 500)).toBe(false);
    writeFileSync(file, ANSWER_POLICY.replace('readTimeout: 30s', 'readTimeout: 30s, answerTimeout: 200ms'));
    expect(await server.server.policies.reload()).toBe(true);
    // Answers written before the reload are judged by the new deadline from the next sweeps.
    expect(await within(sessionClosed, 5_000)).toBe(true);
  }, 30_000);

  it('a stalling client that keeps opening connections cannot hold admission: a well-behaved client keeps being answered', async () => {
    const port = await startAnswerServer();
    // 5 stalled checks a second, each on a new connection (each new connection is admitted one
    // check, up to 2 × maxInFlight = 32 in all). Held for readTimeout, 32 are stuck after ~6.4 s
    // and every other check is refused 503 `overloaded`; held for answerTimeout, at most ~15.
    let churning = true;
    const churn = (async () => {
      for (let i = 0; churning && i < 70; i++) {
        await stalledReader(port, 1);
        await sleep(200);
      }
    })();
    try {
      await sleep(7_000);
      const client = new CheckClient(port);
      const outcomes: string[] = [];
      const until = Date.now() + 5_000;
      while (Date.now() < until) {
        outcomes.push(
          await client.check({ path: '/health' }).then(
            (r) => (r.http_response === 'ok_response' ? 'ok' : `status ${r.status?.code} ${r.denied_response?.body?.slice(0, 60) ?? ''}`),
            (err: Error) => `error ${err.message.slice(0, 40)}`,
          ),
        );
        await sleep(50);
      }
      client.close();
      expect(outcomes.length).toBeGreaterThanOrEqual(10);
      expect(outcomes.filter((o) => o !== 'ok'), `outcomes: ${outcomes.slice(-10).join(' | ')}`).toEqual([]);
    } finally {
      churning = false;
      await churn;
    }
  }, 30_000);
});
