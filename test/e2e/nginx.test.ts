// The quickstart policy (examples/portcullis.yaml) walked through a real nginx running
// examples/nginx/nginx.conf, in front of an upstream that echoes the headers it received:
// nobody here wrote the proxy, so this is what a platform team gets.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { httpStatusNumber } from '../support/grpc-client.js';
import { nginxBinary, startEchoUpstream, startNginx, type RunningNginx } from '../support/nginx.js';
import { startTestServer, type TestServer } from '../support/server.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const QUICKSTART = path.join(ROOT, 'examples/portcullis.yaml');
const DEMO_KEY = /#\s+(pc_demo_\w+)/.exec(readFileSync(path.join(ROOT, 'examples/keys/quickstart.yaml'), 'utf8'))![1]!;
const binary = nginxBinary();

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

function get(port: number, target: string, headers: Record<string, string | string[]> = {}, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: target, method, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    for (const [name, value] of Object.entries(headers)) req.setHeader(name, value);
    req.end();
  });
}

/** What the upstream received (the echo server's body). */
function upstream(answer: Answer): { headers: Record<string, string>; url: string } {
  expect(answer.status, answer.body).toBe(200);
  return JSON.parse(answer.body) as { headers: Record<string, string>; url: string };
}

const OWNED = ['x-tenant-id', 'x-auth-subject', 'x-auth-scopes', 'x-auth-method', 'x-auth-key-id', 'x-auth-email'];
const SMUGGLED = Object.fromEntries(OWNED.map((h) => [h, 'evil']));

describe.skipIf(binary === undefined)('quickstart policy behind a real nginx (examples/nginx/nginx.conf)', () => {
  let app: Awaited<ReturnType<typeof startEchoUpstream>>;
  let portcullis: TestServer;
  let nginx: RunningNginx;

  beforeAll(async () => {
    app = await startEchoUpstream();
    portcullis = await startTestServer(QUICKSTART, {}, { authzHttpPort: 0 });
    nginx = await startNginx(binary!, portcullis.server.authzHttpPort!, app.port);
  });

  afterAll(async () => {
    agent.destroy();
    await nginx?.stop();
    await portcullis?.close();
    await app?.close();
  });

  it('public route: reaches the app, and no smuggled identity header does', async () => {
    const seen = upstream(await get(nginx.port, '/health', SMUGGLED));
    for (const h of OWNED) expect(seen.headers[h], h).toBeUndefined();
    expect(seen.url).toBe('/health');
  });

  it('no credential: 401 with the JSON body and WWW-Authenticate', async () => {
    const r = await get(nginx.port, '/v1/products?page=2');
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Bearer realm="example-api"');
    expect(r.headers['content-type']).toBe('application/json');
    expect(JSON.parse(r.body)).toMatchObject({ error: 'Unauthorized', code: 'UNAUTHORIZED', status: 401, reason: 'missing_credential' });
  });

  it('wrong key: 401 invalid_api_key with error="invalid_token"', async () => {
    const wrong = DEMO_KEY.slice(0, -1) + (DEMO_KEY.endsWith('a') ? 'b' : 'a');
    const r = await get(nginx.port, '/v1/products', { 'x-api-key': wrong });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Bearer realm="example-api", error="invalid_token"');
    expect(JSON.parse(r.body)).toMatchObject({ status: 401, reason: 'invalid_api_key' });
  });

  it('API key: allowed, identity headers upstream, the key removed, smuggled values replaced', async () => {
    const seen = upstream(await get(nginx.port, '/v1/admin/users', { 'x-api-key': DEMO_KEY, ...SMUGGLED }));
    expect(seen.headers['x-tenant-id']).toBe('acme');
    expect(seen.headers['x-auth-method']).toBe('api-key');
    expect(seen.headers['x-auth-key-id']).toBe('a056254a-a0b9-4576-af88-e53266fcf7e1');
    expect(seen.headers['x-auth-scopes']).toBe('catalog:read admin');
    expect(seen.headers['x-auth-email']).toBeUndefined();
    expect(seen.headers['x-api-key']).toBeUndefined();

    const bearer = upstream(await get(nginx.port, '/v1/admin/users', { authorization: `Bearer ${DEMO_KEY}`, 'x-tenant-id': 'evil' }));
    expect(bearer.headers['x-tenant-id']).toBe('acme');
    expect(bearer.headers.authorization).toBeUndefined();
  });

  it('an underscore variant of an owned header never reaches the app', async () => {
    const seen = upstream(await get(nginx.port, '/health', { x_tenant_id: 'evil', 'x-auth_method': 'evil' }));
    expect(JSON.stringify(seen.headers)).not.toContain('evil');
  });

  it('authenticated but not allowed: 403 with the real reason', async () => {
    const r = await get(nginx.port, '/v1/admin/users', { host: 'shop.example.com' });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toMatchObject({ status: 403, reason: 'credential_not_allowed' });
  });

  it('judges the host the app is sent, also for an absolute-form request whose Host header differs', async () => {
    // nginx sends the app $host: the request line's host when there is one. Portcullis must judge
    // that one, not the Host header (the example once sent it $http_host).
    const asShop = upstream(await get(nginx.port, 'http://shop.example.com/v1/products', { host: 'www.example.com' }));
    expect(asShop.headers.host).toBe('shop.example.com');
    expect(asShop.headers['x-tenant-id']).toBe('acme');
    const notShop = await get(nginx.port, 'http://www.example.com/v1/products', { host: 'shop.example.com' });
    expect(notShop.status).toBe(401);
    // A port nginx ignores when it picks the server is ignored by Portcullis too ($host has none).
    expect(upstream(await get(nginx.port, '/v1/products', { host: 'shop.example.com:8443' })).headers['x-tenant-id']).toBe('acme');
  });

  it('a non-canonical path is judged by the same rules as over gRPC', async () => {
    for (const target of ['/v1/admin%2Fusers', '/v1/products/..%2Fadmin/users', '/v1/products/%2e%2e/admin/users']) {
      const viaNginx = await get(nginx.port, target, { 'x-api-key': DEMO_KEY });
      const viaGrpc = await portcullis.client.check({ path: target, headers: { 'x-api-key': DEMO_KEY } });
      expect(viaGrpc.http_response, target).toBe('denied_response');
      expect(viaNginx.status, target).toBe(httpStatusNumber(viaGrpc.denied_response!.status!.code));
      expect(JSON.parse(viaNginx.body).reason, target).toBe(JSON.parse(viaGrpc.denied_response!.body!).reason);
    }
  });

  it('429 with Retry-After and the JSON body once the tenant limit is spent', async () => {
    let last: Answer | undefined;
    for (let i = 0; i < 400; i++) {
      last = await get(nginx.port, '/v1/products', { 'x-api-key': DEMO_KEY });
      if (last.status !== 200) break;
    }
    expect(last!.status).toBe(429);
    expect(Number(last!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(last!.headers['content-type']).toBe('application/json');
    expect(JSON.parse(last!.body)).toMatchObject({ error: 'Too Many Requests', code: 'RATE_LIMITED', status: 429, reason: 'rate_limited' });
  });
});

describe.skipIf(binary === undefined)('nginx when the key store is down', () => {
  let app: Awaited<ReturnType<typeof startEchoUpstream>>;
  let server: RunningServer;
  let nginx: RunningNginx;
  let dir: string;

  beforeAll(async () => {
    // The quickstart policy with its keys in a PostgreSQL nobody listens on.
    dir = mkdtempSync(path.join(tmpdir(), 'portcullis-nginx-store-'));
    const policy = readFileSync(QUICKSTART, 'utf8').replace(
      /keyStore:\n(  .*\n)+/,
      'keyStore:\n  type: postgres\n  postgres: { url: "postgres://postgres@127.0.0.1:1/test", connectTimeout: 200ms }\n  maxExpiry: 3650d\n',
    );
    expect(policy).toContain('127.0.0.1:1/test');
    writeFileSync(path.join(dir, 'policy.yaml'), policy);
    app = await startEchoUpstream();
    server = await startServer({
      configFile: path.join(dir, 'policy.yaml'),
      grpcPort: 0,
      httpPort: 0,
      authzHttpPort: 0,
      bind: '127.0.0.1',
      watch: false,
      logger: silentLogger(),
      env: {},
      defaultMetrics: false,
    });
    server.ready.catch(() => undefined);
    nginx = await startNginx(binary!, server.authzHttpPort!, app.port);
  });

  afterAll(async () => {
    await nginx?.stop();
    await server?.shutdown();
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('503 with Retry-After and the JSON body (fail closed), public routes still served', async () => {
    const r = await get(nginx.port, '/v1/products', { 'x-api-key': DEMO_KEY });
    expect(r.status).toBe(503);
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'Service Unavailable', code: 'UNAVAILABLE', status: 503, reason: 'store_unavailable' });
    expect(upstream(await get(nginx.port, '/health')).url).toBe('/health');
  });
});
