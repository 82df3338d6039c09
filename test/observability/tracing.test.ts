// OpenTelemetry tracing against a real OTLP/HTTP receiver (test/support/otlp.ts, decoding the
// OTLP JSON the exporter sends): one span per sampled check continuing the caller's W3C or B3
// context, with its attributes; a child span around a Redis rate-limit call; parent-based ratio
// sampling; the decision log's trace_id. Child spans of JWKS, key-store and lookup waits:
// tracing-children.test.ts.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { remoteParent, sampled } from '../../src/observability/tracing.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { CheckClient } from '../support/grpc-client.js';
import { OtlpReceiver } from '../support/otlp.js';

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

const policy = (tracing: string, prefix: string) => `
server:
  decisionLog: all
  tracing: ${tracing}
identity:
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [storefront] } } }
routes:
  - { name: shop, match: { pathPrefix: /shop/ } }
  - { name: limited, match: { pathPrefix: /limited/ } }
rateLimits:
  backend: { redis: { url: "redis://127.0.0.1:6379", keyPrefix: "${prefix}", timeout: 2s } }
  failure: closed
  policies:
    - { name: per-tenant, key: [tenant], window: 1m, limit: 1000, routes: [limited] }
`;

const receiver = new OtlpReceiver();
const logLines: Record<string, unknown>[] = [];
let traced: RunningServer;
let rare: RunningServer;
let client: CheckClient;
let rareClient: CheckClient;

async function serve(tracing: string): Promise<RunningServer> {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'portcullis-otel-')), 'policy.yaml');
  writeFileSync(file, policy(tracing, `portcullis:test:${hex(6)}:`));
  const logger = createLogger({ level: 'info', destination: { write: (line: string) => logLines.push(JSON.parse(line)) } });
  const server = await startServer({ configFile: file, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', watch: false, logger, logLevelFromPolicy: false, defaultMetrics: false, env: { OTEL_BSP_SCHEDULE_DELAY: '50' } });
  await server.ready;
  return server;
}

beforeAll(async () => {
  await receiver.start();
  traced = await serve(`{ enabled: true, endpoint: "${receiver.url}", tenant: true, serviceName: portcullis-test }`);
  rare = await serve(`{ enabled: true, endpoint: "${receiver.url}", sampleRatio: 0 }`);
  client = new CheckClient(traced.grpcPort);
  rareClient = new CheckClient(rare.grpcPort);
});

afterAll(async () => {
  client?.close();
  rareClient?.close();
  await traced?.shutdown();
  await rare?.shutdown();
  await receiver.close();
});

describe('tracing', () => {
  it('continues the caller W3C trace: one SERVER span per check, with its parent, tracestate and attributes', async () => {
    const traceId = hex(16);
    const parentId = hex(8);
    const response = await client.check({ path: '/shop/cart', host: 'shop.example.com', id: 'req-otel-1', headers: { traceparent: `00-${traceId}-${parentId}-01`, tracestate: 'vendor=abc' } });
    expect(response.http_response).toBe('ok_response');
    const span = await receiver.waitFor((s) => s.traceId === traceId, 'the check span');
    expect(span.parentSpanId).toBe(parentId);
    expect(span.traceState).toBe('vendor=abc');
    expect(span.name).toBe('envoy.service.auth.v3.Authorization/Check');
    expect(span.kind).toBe(2); // SPAN_KIND_SERVER
    expect(span.attributes).toMatchObject({
      'rpc.system': 'grpc',
      'rpc.service': 'envoy.service.auth.v3.Authorization',
      'rpc.method': 'Check',
      'rpc.grpc.status_code': 0,
      'http.request.method': 'GET',
      'url.path': '/shop/cart',
      'server.address': 'shop.example.com',
      'portcullis.request_id': 'req-otel-1',
      'portcullis.decision': 'allow',
      'portcullis.route': 'shop',
      'portcullis.credential': 'host',
      'portcullis.tenant': 'acme',
    });
    expect(span.resource['service.name']).toBe('portcullis-test');
    // The decision log names the trace and the span.
    const line = logLines.find((l) => l.requestId === 'req-otel-1');
    expect(line).toMatchObject({ trace_id: traceId, span_id: span.spanId });
  });

  it('a denial: reason and HTTP status on the span; the tenant only where opted in', async () => {
    const traceId = hex(16);
    await client.check({ path: '/nowhere', host: 'api.example.com', headers: { traceparent: `00-${traceId}-${hex(8)}-01` } });
    const span = await receiver.waitFor((s) => s.traceId === traceId, 'the denial span');
    expect(span.attributes).toMatchObject({ 'portcullis.decision': 'deny', 'portcullis.reason': 'missing_credential', 'http.response.status_code': 401, 'portcullis.credential': 'none' });
    expect(span.status?.code ?? 0).toBe(0); // a denial is not an error
    const rareTrace = hex(16);
    await rareClient.check({ path: '/shop/x', host: 'shop.example.com', headers: { traceparent: `00-${rareTrace}-${hex(8)}-01` } });
    const rareSpan = await receiver.waitFor((s) => s.traceId === rareTrace, 'the sampled-by-parent span');
    expect(rareSpan.attributes['portcullis.tenant']).toBeUndefined();
    expect(rareSpan.resource['service.name']).toBe('portcullis');
  });

  it('a child span around the Redis rate-limit call, parented to the check span', async () => {
    const traceId = hex(16);
    const response = await client.check({ path: '/limited/x', host: 'shop.example.com', headers: { traceparent: `00-${traceId}-${hex(8)}-01` } });
    expect(response.dynamic_metadata?.fields?.reason?.stringValue).toBeUndefined();
    expect(response.http_response).toBe('ok_response');
    const check = await receiver.waitFor((s) => s.traceId === traceId && s.kind === 2, 'the check span');
    const child = await receiver.waitFor((s) => s.traceId === traceId && s.name === 'portcullis.ratelimit', 'the Redis child span');
    expect(child.parentSpanId).toBe(check.spanId);
    expect(child.kind).toBe(3); // SPAN_KIND_CLIENT
  });

  it('parent-based ratio sampling: a caller not sampled is not traced (but logged with its trace id); ratio 0 traces only sampled callers', async () => {
    const notSampled = hex(16);
    await client.check({ path: '/shop/a', host: 'shop.example.com', id: 'req-otel-unsampled', headers: { traceparent: `00-${notSampled}-${hex(8)}-00` } });
    const rootless = 'req-otel-rootless';
    await rareClient.check({ path: '/shop/b', host: 'shop.example.com', id: rootless });
    // A sampled check afterwards on each server: once its span is here, earlier spans would be too.
    const marker1 = hex(16);
    const marker2 = hex(16);
    await client.check({ path: '/shop/c', host: 'shop.example.com', headers: { traceparent: `00-${marker1}-${hex(8)}-01` } });
    await rareClient.check({ path: '/shop/c', host: 'shop.example.com', headers: { traceparent: `00-${marker2}-${hex(8)}-01` } });
    await receiver.waitFor((s) => s.traceId === marker1, 'marker 1');
    await receiver.waitFor((s) => s.traceId === marker2, 'marker 2');
    expect(receiver.spans.some((s) => s.traceId === notSampled)).toBe(false);
    expect(receiver.spans.some((s) => s.attributes['portcullis.request_id'] === rootless)).toBe(false);
    expect(logLines.find((l) => l.requestId === 'req-otel-unsampled')).toMatchObject({ trace_id: notSampled });
    expect(logLines.find((l) => l.requestId === 'req-otel-unsampled')?.span_id).toBeUndefined();
  });

  it('continues a B3 context (single header and x-b3-* headers)', async () => {
    const single = hex(16);
    const singleParent = hex(8);
    await client.check({ path: '/shop/b3', host: 'shop.example.com', headers: { b3: `${single}-${singleParent}-1` } });
    expect((await receiver.waitFor((s) => s.traceId === single, 'b3 single')).parentSpanId).toBe(singleParent);
    const short = hex(8); // 64-bit B3 trace id
    const multiParent = hex(8);
    await client.check({ path: '/shop/b3', host: 'shop.example.com', headers: { 'x-b3-traceid': short, 'x-b3-spanid': multiParent, 'x-b3-sampled': '1' } });
    expect((await receiver.waitFor((s) => s.traceId === `0000000000000000${short}`, 'b3 multi')).parentSpanId).toBe(multiParent);
  });
});

describe('trace context parsing and sampling (no SDK)', () => {
  const headers = (h: Record<string, string>) => ({ get: (n: string) => h[n] });
  it('ignores malformed traceparent values', () => {
    const t = hex(16);
    const s = hex(8);
    expect(remoteParent(headers({ traceparent: `00-${t}-${s}-01` }))).toMatchObject({ traceId: t, spanId: s, sampled: true });
    for (const bad of [`00-${t}-${s}-0`, `00-${'0'.repeat(32)}-${s}-01`, `00-${t}-${'0'.repeat(16)}-01`, `ff-${t}-${s}-01`, `00-AB${t.slice(2)}-${s}-01`, `00-${t}-${s}-01x`, 'garbage']) {
      expect(remoteParent(headers({ traceparent: bad })), bad).toBeUndefined();
    }
  });

  it('samples by the parent flag when parent-based, by ratio otherwise', () => {
    const parent = { traceId: hex(16), spanId: hex(8), sampled: false };
    expect(sampled(parent, true, 1)).toBe(false);
    expect(sampled({ ...parent, sampled: true }, true, 0)).toBe(true);
    expect(sampled(parent, false, 1)).toBe(true);
    expect(sampled(undefined, true, 0)).toBe(false);
    expect(sampled(undefined, true, 1)).toBe(true);
  });
});
