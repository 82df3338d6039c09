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
