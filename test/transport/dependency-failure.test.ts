// dependencyFailure: deny | error, over the real gRPC server, decoded by a real grpc-js client:
// a dependency failure (here Redis, unreachable, failing closed) is a 503 denied_response by
// default and an error_response (CheckResponse field 5, Envoy 1.37+) with `error`; every other
// decision is unchanged. Also the transport's portcullis_grpc_errors_total{code}.

import { mkdtempSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { freePort } from '../support/child-server.js';
import { CheckClient, headerOf, httpStatusNumber, type CheckResponse } from '../support/grpc-client.js';

const policy = (mode: string | undefined, redisPort: number) => `
${mode ? `dependencyFailure: ${mode}` : ''}
routes:
  - { name: open, match: { pathPrefix: /open/ }, public: true }
  - { name: limited, match: { pathPrefix: /limited/ }, public: true }
rateLimits:
  backend: { redis: { url: "redis://127.0.0.1:${redisPort}", timeout: 50ms } }
  failure: closed
  policies:
    - { name: per-ip, key: [ip], window: 1m, limit: 100, routes: [limited] }
`;

interface Running {
  server: RunningServer;
  client: CheckClient;
}
const running: Record<string, Running> = {};

async function start(name: string, mode: string | undefined): Promise<Running> {
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-depfail-'));
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, policy(mode, await freePort())); // nothing listens on that port
  const server = await startServer({ configFile: file, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', watch: false, logger: silentLogger(), defaultMetrics: false });
  return (running[name] = { server, client: new CheckClient(server.grpcPort) });
}

beforeAll(async () => {
  await start('default', undefined);
  await start('deny', 'deny');
  await start('error', 'error');
});

afterAll(async () => {
  for (const r of Object.values(running)) {
    r.client.close();
    await r.server.shutdown();
  }
});

function reason(response: CheckResponse): string | undefined {
  return response.dynamic_metadata?.fields?.reason?.stringValue;
}

describe('dependencyFailure', () => {
  for (const name of ['default', 'deny']) {
    it(`${name}: a dependency failure is a 503 denied_response`, async () => {
      const response = await running[name]!.client.check({ path: '/limited/x' });
      expect(response.status?.code).toBe(14);
      expect(response.http_response).toBe('denied_response');
      expect(httpStatusNumber(response.denied_response?.status?.code)).toBe(503);
      expect(reason(response)).toBe('ratelimit_unavailable');
    });
  }

  it('error: a dependency failure is an error_response with the headers and body, without an HTTP status (status_on_error decides)', async () => {
    const response = await running.error!.client.check({ path: '/limited/x', id: 'req-dep-1' });
    expect(response.status?.code).toBe(14);
    expect(response.http_response).toBe('error_response');
    expect(response.denied_response).toBeUndefined();
    expect(response.error_response?.status).toBeUndefined();
    expect(headerOf(response.error_response?.headers, 'retry-after')).toBe('1');
    expect(headerOf(response.error_response?.headers, 'content-type')).toBe('application/json');
    expect(JSON.parse(response.error_response!.body!)).toMatchObject({ code: 'UNAVAILABLE', status: 503, reason: 'ratelimit_unavailable', requestId: 'req-dep-1' });
    expect(reason(response)).toBe('ratelimit_unavailable');
    // Twice: the second answer comes from the encode cache.
    const again = await running.error!.client.check({ path: '/limited/x', id: 'req-dep-2' });
    expect(again.http_response).toBe('error_response');
    expect(JSON.parse(again.error_response!.body!).requestId).toBe('req-dep-2');
  });

  it('error: allows and ordinary denials are unchanged', async () => {
    const allowed = await running.error!.client.check({ path: '/open/x' });
    expect(allowed.http_response).toBe('ok_response');
    const denied = await running.error!.client.check({ path: '/nowhere' });
    expect(denied.http_response).toBe('denied_response');
    expect(httpStatusNumber(denied.denied_response?.status?.code)).toBe(401);
  });
});

describe('portcullis_grpc_errors_total', () => {
  async function errors(server: RunningServer): Promise<Record<string, number>> {
    const metric = await server.runtime.metrics.registry.getSingleMetric('portcullis_grpc_errors_total')?.get();
    return Object.fromEntries((metric?.values ?? []).map((v) => [String(v.labels.code), v.value]));
  }

  function call(port: number, callPath: string, body: Buffer): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on('error', reject);
      const stream = session.request({ ':method': 'POST', ':path': callPath, 'content-type': 'application/grpc', te: 'trailers' });
      let status: string | undefined;
      stream.on('response', (h) => (status ??= h['grpc-status'] as string | undefined));
      stream.on('trailers', (t) => (status ??= t['grpc-status'] as string | undefined));
      stream.on('data', () => undefined);
      stream.on('error', reject);
      stream.on('close', () => {
        session.close();
        resolve(status);
      });
      stream.end(body);
    });
  }

  it('counts every non-OK gRPC status the server sends, by code name', async () => {
    const { server } = running.default!;
    const before = await errors(server);
    const garbage = Buffer.from([0, 0, 0, 0, 3, 0xff, 0xff, 0xff]); // a frame whose message is not a CheckRequest
    expect(await call(server.grpcPort, '/envoy.service.auth.v3.Authorization/Check', garbage)).toBe('3');
    expect(await call(server.grpcPort, '/envoy.service.auth.v3.Authorization/Nope', Buffer.alloc(0))).toBe('12');
    expect(await call(server.grpcPort, '/envoy.service.auth.v3.Authorization/Check', Buffer.alloc(0))).toBe('12');
    const after = await errors(server);
    const delta = (code: string) => (after[code] ?? 0) - (before[code] ?? 0);
    expect(delta('INVALID_ARGUMENT')).toBe(1);
    expect(delta('UNIMPLEMENTED')).toBe(2);
    // Denials are answers (grpc-status 0), not errors.
    await running.default!.client.check({ path: '/nowhere' });
    expect(await errors(server)).toEqual(after);
  });
});
