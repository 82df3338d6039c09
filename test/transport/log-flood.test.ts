// Issue 14 §5: a flood of undecodable requests is counted in a metric and logged as at most one
// line per interval (with the count), never one line per request.
import http2 from 'node:http2';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { Authorizer } from '../../src/pipeline/authorizer.js';
import { GrpcTransport } from '../../src/transport/grpc/server.js';

const lines: { msg: string; suppressed?: number }[] = [];
const destination = new Writable({
  write(chunk, _enc, cb) {
    for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line) as { msg: string });
    cb();
  },
});
const metrics = new Metrics({ defaultMetrics: false });
const unused = { check: () => Promise.reject(new Error('not reached')) } as unknown as Authorizer;
let transport: GrpcTransport;
let port: number;

beforeAll(async () => {
  transport = new GrpcTransport(unused, createLogger({ level: 'info', destination }), { bind: '127.0.0.1', port: 0, metrics });
  port = await transport.start();
});
afterAll(() => transport.shutdown(1000));

/** A gRPC frame whose message is not protobuf (field 1 with wire type 7). */
const GARBAGE = Buffer.from([0, 0, 0, 0, 3, 0x0f, 0xff, 0xff]);

function call(session: http2.ClientHttp2Session): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': '/envoy.service.auth.v3.Authorization/Check', 'content-type': 'application/grpc', te: 'trailers' });
    let status: string | undefined;
    stream.on('response', (h) => (status ??= h['grpc-status'] as string | undefined));
    stream.on('trailers', (t) => (status ??= t['grpc-status'] as string | undefined));
    stream.on('error', reject);
    stream.on('close', () => resolve(status));
    stream.resume();
    stream.end(GARBAGE);
  });
}

describe('undecodable requests', () => {
  it('are answered INVALID_ARGUMENT, all counted, and logged once per interval', async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    const statuses: (string | undefined)[] = [];
    for (let batch = 0; batch < 10; batch++) statuses.push(...(await Promise.all(Array.from({ length: 50 }, () => call(session)))));
    session.close();
    expect(statuses.every((s) => s === '3')).toBe(true);
    await new Promise((r) => setImmediate(r));
    const logged = lines.filter((l) => l.msg.includes('undecodable'));
    expect(logged.length).toBe(1);
    const text = await metrics.registry.getSingleMetricAsString('portcullis_grpc_undecodable_requests_total');
    expect(text).toMatch(/portcullis_grpc_undecodable_requests_total 500$/m);
  });
});
