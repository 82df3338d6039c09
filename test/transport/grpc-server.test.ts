// The gRPC transport's protocol rules (src/transport/grpc/protocol.ts), seen from the wire: a raw
// node:http2 client for what well-behaved clients never send, and real grpc-js clients for what
// they do (compression, unknown methods, health Watch).

import { mkdtempSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.js';
import { startServer } from '../../src/server.js';
import type { Authorizer } from '../../src/pipeline/authorizer.js';
import type { Decision } from '../../src/types.js';
import { encodeGrpcMessage } from '../../src/transport/grpc/protocol.js';
import { GrpcTransport } from '../../src/transport/grpc/server.js';
import { CheckClient, checkRequestType, checkResponseType } from '../support/grpc-client.js';
import { startTestServer, type TestServer } from '../support/server.js';

const POLICY = `
realm: wire
routes:
  - { name: health, match: { path: /health }, public: true }
default: deny
`;
const CHECK = '/envoy.service.auth.v3.Authorization/Check';
const MAX_MESSAGE = 4 * 1024 * 1024;

let policyFile: string;
let running: TestServer;
let port: number;

beforeAll(async () => {
  policyFile = path.join(mkdtempSync(path.join(tmpdir(), 'portcullis-h2-')), 'policy.yaml');
  writeFileSync(policyFile, POLICY);
  running = await startTestServer(policyFile);
  port = running.server.grpcPort;
});

afterAll(async () => {
  await running?.close();
});

function checkRequestBytes(requestPath = '/health'): Buffer {
  const message = CheckClient.requestMessage({ path: requestPath });
  return Buffer.from(checkRequestType.encode(checkRequestType.fromObject(message)).finish());
}

function frame(message: Buffer, flag = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

interface RawAnswer {
  status: number;
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  data: Buffer;
  /** grpc-status from the trailers, or from the headers of a trailers-only answer. */
  grpcStatus?: string;
  grpcMessage?: string;
}

/** One request over a fresh HTTP/2 connection; `end: false` leaves the request body open. */
function rawCall(body: Buffer[], { path: callPath = CHECK, headers = {}, end = true, to = port }: { path?: string; headers?: Record<string, string>; end?: boolean; to?: number } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${to}`);
    session.on('error', reject);
    const stream = session.request({ ':method': 'POST', ':path': callPath, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    const chunks: Buffer[] = [];
    let responseHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on('response', (h) => (responseHeaders = h));
    stream.on('trailers', (t) => (trailers = t));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', reject);
    stream.on('close', () => {
      session.close();
      const grpcStatus = (trailers['grpc-status'] ?? responseHeaders['grpc-status']) as string | undefined;
      const grpcMessage = (trailers['grpc-message'] ?? responseHeaders['grpc-message']) as string | undefined;
      resolve({ status: Number(responseHeaders[':status']), headers: responseHeaders, trailers, data: Buffer.concat(chunks), grpcStatus, grpcMessage });
    });
    for (const chunk of body) stream.write(chunk);
    if (end) stream.end();
  });
}

function decodeResponseFrame(data: Buffer) {
  expect(data[0]).toBe(0);
  expect(data.readUInt32BE(1)).toBe(data.length - 5);
  return checkResponseType.toObject(checkResponseType.decode(data.subarray(5)), { defaults: false }) as { ok_response?: unknown; denied_response?: unknown };
}

describe('gRPC framing from a raw HTTP/2 client', () => {
  it('answers a well-formed Check: HTTP 200, one framed CheckResponse, grpc-status 0 in trailers', async () => {
    const answer = await rawCall([frame(checkRequestBytes())]);
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('application/grpc');
    expect(answer.headers['grpc-status']).toBeUndefined();
    expect(answer.trailers['grpc-status']).toBe('0');
    expect(decodeResponseFrame(answer.data).ok_response).toBeDefined();
  });

  it('accepts a message split across many DATA frames', async () => {
    const whole = frame(checkRequestBytes());
    const pieces = Array.from({ length: whole.length }, (_, i) => whole.subarray(i, i + 1));
    const answer = await rawCall(pieces);
    expect(answer.grpcStatus).toBe('0');
    expect(decodeResponseFrame(answer.data).ok_response).toBeDefined();
  });

  it('refuses a request that is not gRPC with HTTP 415', async () => {
    const answer = await rawCall([frame(checkRequestBytes())], { headers: { 'content-type': 'application/json' } });
    expect(answer.status).toBe(415);
    expect(answer.data.length).toBe(0);
  });

  it.each([
    ['no message at all', [] as Buffer[], '12', /no request message/],
    ['a truncated frame header', [Buffer.from([0, 0, 0])], '13', /Truncated/],
    ['a frame shorter than it declares', [frame(checkRequestBytes()).subarray(0, 20)], '13', /Truncated/],
    ['two messages', [frame(checkRequestBytes()), frame(checkRequestBytes())], '12', /second request message/],
    ['an invalid compressed flag', [frame(checkRequestBytes(), 7)], '13', /compressed flag/],
    ['a compressed flag without grpc-encoding', [frame(zlib.gzipSync(checkRequestBytes()), 1)], '13', /without grpc-encoding/],
  ])('answers a call with %s by a trailers-only gRPC error', async (_label, body, code, message) => {
    const answer = await rawCall(body);
    expect(answer.status).toBe(200);
    expect(answer.headers['grpc-status']).toBe(code); // in the only HEADERS frame: trailers-only
    expect(answer.data.length).toBe(0);
    expect(decodeURIComponent(answer.grpcMessage ?? '')).toMatch(message);
  });

  it('refuses a message larger than the limit from its frame header, before the body is sent, and resets the stream', async () => {
    const head = Buffer.alloc(5);
    head.writeUInt32BE(MAX_MESSAGE + 1, 1);
    // The body never comes and the request stays open: the answer can only come from the header,
    // and the call only closes because the server resets the stream (NO_ERROR) after answering.
    const answer = await rawCall([head, Buffer.alloc(1000)], { end: false });
    expect(answer.grpcStatus).toBe('8');
    expect(answer.grpcMessage).toBe(`Received message larger than max (${MAX_MESSAGE + 1} vs. ${MAX_MESSAGE})`);
  });

  it('refuses a gzip bomb by its inflated size (RESOURCE_EXHAUSTED), and corrupt gzip (INTERNAL)', async () => {
    const bomb = zlib.gzipSync(Buffer.alloc(MAX_MESSAGE + 1024));
    expect(bomb.length).toBeLessThan(64 * 1024);
    const big = await rawCall([frame(bomb, 1)], { headers: { 'grpc-encoding': 'gzip' } });
    expect(big.grpcStatus).toBe('8');
    expect(big.grpcMessage).toMatch(/decompresses to a size larger than/);
    const corrupt = await rawCall([frame(Buffer.from('not gzip at all'), 1)], { headers: { 'grpc-encoding': 'gzip' } });
    expect(corrupt.grpcStatus).toBe('13');
  });

  it('answers an encoding it does not support with UNIMPLEMENTED and the encodings it accepts', async () => {
    const answer = await rawCall([frame(Buffer.from('x'), 1)], { headers: { 'grpc-encoding': 'br' } });
    expect(answer.grpcStatus).toBe('12');
    expect(answer.headers['grpc-accept-encoding']).toBe('identity,deflate,gzip');
  });

  it('inflates gzip and deflate messages sent by hand', async () => {
    for (const [encoding, squeeze] of [['gzip', zlib.gzipSync], ['deflate', zlib.deflateSync]] as const) {
      const answer = await rawCall([frame(squeeze(checkRequestBytes()), 1)], { headers: { 'grpc-encoding': encoding } });
      expect(answer.grpcStatus, encoding).toBe('0');
      expect(decodeResponseFrame(answer.data).ok_response, encoding).toBeDefined();
    }
  });

  it('survives clients that reset streams mid-body and connections that send garbage, and keeps serving', async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    const resets = Array.from({ length: 100 }, (_, i) => {
      const stream = session.request({ ':method': 'POST', ':path': CHECK, 'content-type': 'application/grpc' });
      stream.on('error', () => undefined);
      const whole = frame(checkRequestBytes());
      stream.write(whole.subarray(0, i % whole.length));
      return new Promise<void>((resolve) => {
        stream.on('close', () => resolve());
        setImmediate(() => stream.close(http2.constants.NGHTTP2_CANCEL));
      });
    });
    await Promise.all(resets);
    session.close();

    await new Promise<void>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.end('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + 'x'.repeat(10_000)));
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
      socket.resume();
    });

    const answer = await rawCall([frame(checkRequestBytes())]);
    expect(answer.grpcStatus).toBe('0');
  });
});

describe('gRPC from grpc-js clients', () => {
  it.each([
    ['deflate', 1],
    ['gzip', 2],
  ])('accepts %s-compressed requests', async (_name, algorithm) => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_compression_algorithm': algorithm });
    const answer = await new Promise<Buffer>((resolve, reject) =>
      client.makeUnaryRequest(CHECK, (b: Buffer) => b, (b: Buffer) => b, checkRequestBytes(), (err, value) => (err ? reject(err) : resolve(value!))),
    );
    client.close();
    expect(checkResponseType.toObject(checkResponseType.decode(answer)).ok_response).toBeDefined();
  });

  it('answers an unknown method with UNIMPLEMENTED', async () => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      client.makeUnaryRequest('/envoy.service.auth.v3.Authorization/NoSuchMethod', (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), (e) => resolve(e!)),
    );
    client.close();
    expect(err.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(err.details).toContain('NoSuchMethod');
  });

  it('sends non-ASCII details percent-encoded, as grpc-js decodes them', async () => {
    expect(encodeGrpcMessage('plain text')).toBe('plain text');
    expect(encodeGrpcMessage('100% sure')).toBe('100%25 sure');
    expect(encodeGrpcMessage('ünknown\n')).toBe('%C3%BCnknown%0A');
    const err = await running.client.healthCheck('ünknown-service').catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
    expect((err as grpc.ServiceError).details).toBe('unknown service ünknown-service');
  });
});

describe('grpc.health.v1.Health/Watch', () => {
  it('streams SERVING, then NOT_SERVING on shutdown, and ends with status OK; shutdown does not wait for idle connections', async () => {
    const server = await startServer({ configFile: policyFile, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', watch: false, logger: silentLogger(), defaultMetrics: false, drainTimeoutMs: 5000 });
    await server.ready;
    const client = new CheckClient(server.grpcPort);
    await client.check({ path: '/health' }); // an idle connection that stays open
    const statuses: string[] = [];
    const call = client.health.Watch({ service: 'envoy.service.auth.v3.Authorization' });
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.on('data', (m: { status: string }) => statuses.push(m.status));
    call.on('error', () => undefined);
    await expect.poll(() => statuses).toEqual(['SERVING']);
    const started = Date.now();
    await server.shutdown();
    expect(Date.now() - started).toBeLessThan(4000);
    expect((await ended).code).toBe(grpc.status.OK);
    expect(statuses).toEqual(['SERVING', 'NOT_SERVING']);
    client.close();
  });

  it('gives up on a call that never finishes after the drain timeout', async () => {
    const server = await startServer({ configFile: policyFile, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', watch: false, logger: silentLogger(), defaultMetrics: false, drainTimeoutMs: 300 });
    await server.ready;
    const session = http2.connect(`http://127.0.0.1:${server.grpcPort}`);
    session.on('error', () => undefined);
    const stream = session.request({ ':method': 'POST', ':path': CHECK, 'content-type': 'application/grpc' });
    stream.on('error', () => undefined);
    stream.write(frame(checkRequestBytes()).subarray(0, 10)); // and never the rest
    const closed = new Promise<void>((resolve) => stream.on('close', () => resolve()));
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    await server.shutdown();
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(3000);
    await closed;
    session.destroy();
  });
});

describe('GrpcTransport limits and failures', () => {
  /** A transport of its own on the shared server's Authorizer, or on `authorizer`. */
  async function transport(options: { readTimeoutMs?: number; maxBufferedBytes?: number } = {}, authorizer: Authorizer = running.server.authorizer) {
    const t = new GrpcTransport(authorizer, silentLogger(), { bind: '127.0.0.1', port: 0, ...options });
    return { t, port: await t.start() };
  }

  /** A CheckRequest of about `size` bytes (one big header). */
  function bigRequest(size: number): Buffer {
    const message = CheckClient.requestMessage({ path: '/health', headers: { 'x-padding': 'p'.repeat(size) } });
    return frame(Buffer.from(checkRequestType.encode(checkRequestType.fromObject(message)).finish()));
  }

  it('answers a request still arriving after the read timeout with DEADLINE_EXCEEDED and resets it', async () => {
    const { t, port: to } = await transport({ readTimeoutMs: 150 });
    const answer = await rawCall([frame(checkRequestBytes()).subarray(0, 12)], { end: false, to });
    expect(answer.grpcStatus).toBe('4');
    expect(answer.grpcMessage).toMatch(/not received within 150 ms/);
    const healthy = await rawCall([frame(checkRequestBytes())], { to });
    expect(healthy.grpcStatus).toBe('0');
    await t.shutdown(1000);
  });

  it('bounds the bytes that partly received large requests hold together, and gives them back', async () => {
    // Two requests of ~150 KiB fit the budget together; a third one's first 100 KiB do not.
    const { t, port: to } = await transport({ maxBufferedBytes: 350 * 1024 });
    const big = bigRequest(150 * 1024);
    const almost = big.length - 10;
    const session = http2.connect(`http://127.0.0.1:${to}`);
    const open = (part: Buffer) => {
      const stream = session.request({ ':method': 'POST', ':path': CHECK, 'content-type': 'application/grpc', te: 'trailers' });
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      stream.on('response', (h) => (headers = h));
      stream.on('trailers', (h) => (trailers = h));
      stream.resume();
      const closed = new Promise<string | undefined>((resolve) => stream.on('close', () => resolve((trailers['grpc-status'] ?? headers['grpc-status']) as string | undefined)));
      stream.write(part);
      return { stream, closed };
    };
    const first = open(big.subarray(0, almost));
    const second = open(big.subarray(0, almost));
    // Both bodies held before the third opens (flow control interleaves them: not a fixed sleep).
    await expect.poll(() => t.governor.used, { timeout: 5000 }).toBeGreaterThanOrEqual(2 * almost);
    const third = open(big.subarray(0, 100 * 1024)); // ~400 KiB held: over the budget
    expect(await third.closed).toBe('8');
    first.stream.end(big.subarray(almost));
    second.stream.end(big.subarray(almost));
    expect(await first.closed).toBe('0');
    expect(await second.closed).toBe('0');
    // Both finished and were given back: a big request fits again.
    const again = open(big);
    again.stream.end();
    expect(await again.closed).toBe('0');
    session.close();
    await t.shutdown(1000);
  });

  it('drops the answer of a check whose stream was reset while its decision was pending, and keeps serving', async () => {
    const pending: ((d: Decision) => void)[] = [];
    const real = running.server.authorizer;
    const slow = {
      check: (request: Parameters<Authorizer['check']>[0], malformed?: boolean) => {
        const decision = real.check(request, malformed) as Decision;
        return new Promise<Decision>((resolve) => pending.push(() => resolve(decision)));
      },
    } as unknown as Authorizer;
    const { t, port: to } = await transport({}, slow);
    const session = http2.connect(`http://127.0.0.1:${to}`);
    session.on('error', () => undefined);
    const stream = session.request({ ':method': 'POST', ':path': CHECK, 'content-type': 'application/grpc', te: 'trailers' });
    stream.on('error', () => undefined);
    stream.end(frame(checkRequestBytes()));
    await expect.poll(() => pending.length).toBe(1);
    expect(t.pending).toBe(1);
    const reset = new Promise<void>((resolve) => stream.on('close', () => resolve()));
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await reset;
    await new Promise((r) => setTimeout(r, 20)); // let the server see the reset
    pending[0]!({} as Decision);
    await expect.poll(() => t.pending).toBe(0);
    const next = rawCall([frame(checkRequestBytes())], { to });
    await expect.poll(() => pending.length).toBe(2);
    pending[1]!({} as Decision);
    expect((await next).grpcStatus).toBe('0');
    session.close();
    await t.shutdown(1000);
  });

  it('answers 503 when the decision fails or cannot be encoded, and a Watch during shutdown ends at once', async () => {
    const broken = { check: () => Promise.reject(new Error('store exploded')) } as unknown as Authorizer;
    const { t, port: to } = await transport({}, broken);
    const answer = await rawCall([frame(checkRequestBytes())], { to });
    expect(answer.grpcStatus).toBe('0');
    const denied = decodeResponseFrame(answer.data).denied_response as { status?: { code?: number } };
    expect(denied.status?.code).toBe(503);
    await t.shutdown(1000);

    // A decision the encoder cannot write (a bug): still one answer, a 503 denial.
    const unwritable = await transport({}, { check: () => ({ allowed: true, requestId: 'x' }) } as unknown as Authorizer);
    const fallback = await rawCall([frame(checkRequestBytes())], { to: unwritable.port });
    expect(fallback.grpcStatus).toBe('0');
    expect((decodeResponseFrame(fallback.data).denied_response as { status?: { code?: number } }).status?.code).toBe(503);
    await unwritable.t.shutdown(1000);

    const { t: draining, port: drainingPort } = await transport();
    draining.health.closeWatchers(); // what shutdown does first
    const watch = await rawCall([frame(Buffer.alloc(0))], { path: '/grpc.health.v1.Health/Watch', to: drainingPort });
    expect(watch.grpcStatus).toBe('0');
    expect(watch.data.length).toBeGreaterThan(0); // the status, then the end
    await draining.shutdown(1000);
  });
});
