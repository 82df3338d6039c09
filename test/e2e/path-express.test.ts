// Path, host and header confusion end to end (issue 13 §1, §2, §6): a real Express 4 upstream
// (case-insensitive, non-strict routing: what the review attacked) behind a small proxy written
// here that asks the real Portcullis gRPC server (real grpc-js client) about every request and
// forwards to Express only when allowed, applying headers and headers_to_remove as Envoy does.
// No variant of a protected path may reach a protected Express handler without the credential.

import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpStatusNumber } from '../support/grpc-client.js';
import { startTestServer, type TestServer } from '../support/server.js';

const SECRET = 'admin-secret-long-enough-1234';
const KEY_HEADER = 'x-checkout-secret';
const KEY = 'checkout-secret-long-enough-99';

function policy(paths: string): string {
  return `
${paths}
identity:
  - sharedSecret: { header: x-admin-secret, secret: "${SECRET}", tenant: ops, scopes: [admin, customers:read] }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: catalog, match: { pathPrefix: /v1/products }, public: true }
  - { name: docs, match: { pathPrefix: /docs }, public: true }
  - { name: admin, match: { pathPrefix: /v1/admin }, require: { anyOf: [admin] } }
  - { name: customer, match: { path: "/api/v1/customers/{id}" }, require: { anyOf: [customers:read] } }
  - { name: api-public, match: { pathPrefix: /api/v1 }, public: true }
  - { name: settings, match: { path: /v1/settings }, require: { anyOf: [admin] } }
  - { name: shop, match: { host: shop.example.com, pathPrefix: / }, public: true }
  - name: webhook
    match: { path: /hooks/pay }
    identity: [{ sharedSecret: { header: ${KEY_HEADER}, secret: "${KEY}", tenant: pay } }]
  - { name: everything, match: { pathPrefix: / }, require: { anyOf: [admin] } }
`;
}

/** Express handlers; `protectedHits` counts what reached a protected one, whoever asked. */
interface Upstream {
  server: http.Server;
  port: number;
  protectedHits: string[];
}

async function startExpress(): Promise<Upstream> {
  const app = express(); // case-insensitive, non-strict routing (Express defaults)
  const protectedHits: string[] = [];
  const reply = (name: string, isProtected: boolean) => (req: express.Request, res: express.Response) => {
    if (isProtected && req.get('x-auth-method') === undefined) protectedHits.push(`${name} ${req.originalUrl}`);
    res.json({ handler: name, headers: req.headers });
  };
  app.get('/health', reply('health', false));
  app.get('/v1/products*', reply('catalog', false));
  app.get('/docs*', reply('docs', false));
  app.all('/v1/admin*', reply('admin', true));
  app.get('/api/v1/customers/:id', reply('customer', true));
  app.get('/v1/settings', reply('settings', true));
  app.post('/hooks/pay', reply('webhook', true));
  app.all('*', reply('everything', true));
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, protectedHits };
}

/** The proxy: Envoy's part, reduced to what matters here. Alternates the two header encodings. */
async function startProxy(portcullis: TestServer, upstreamPort: number): Promise<{ server: http.Server; port: number }> {
  let n = 0;
  const server = http.createServer((req, res) => {
    void (async () => {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
      delete headers.host;
      const response = await portcullis.client.check({
        method: req.method,
        path: q >= 0 ? url.slice(0, q) : url,
        host: req.headers.host,
        headers,
        raw: n++ % 2 === 1,
      });
      if (response.http_response !== 'ok_response') {
        const d = response.denied_response!;
        res.writeHead(httpStatusNumber(d.status?.code), { 'content-type': 'application/json' });
        res.end(d.body);
        return;
      }
      const ok = response.ok_response!;
      const forwarded: Record<string, string> = { ...headers, host: req.headers.host ?? '' };
      for (const name of ok.headers_to_remove ?? []) delete forwarded[name];
      for (const h of ok.headers ?? []) forwarded[h.header.key] = h.header.value ?? h.header.raw_value?.toString('latin1') ?? '';
      const upstream = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: url, headers: forwarded }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      upstream.on('error', () => res.writeHead(502).end());
      req.pipe(upstream);
    })().catch(() => res.writeHead(500).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

interface Answer {
  status: number;
  body: { handler?: string; reason?: string; headers?: Record<string, string> };
}

function send(port: number, rawPath: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: rawPath, headers: { host: 'api.example.com', ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : {} }));
    });
    req.on('error', reject);
    req.end();
  });
}

// Every variant the review and the unit table try, sendable over HTTP/1.1.
const VARIANTS = [
  '/v1/products/..;/admin/users',
  '/v1/products/..;x=1/admin/users',
  '/v1/admin;jsessionid=x/users',
  '/api/v1/customers;jsessionid=x/123',
  '/v1/settings;a=b',
  '/v1/admin/users/../../../health',
  '/v1/products/../admin/users',
  '/docs/../v1/admin',
  '/health/../v1/settings',
  '/v1/products/%2e%2e/admin/users',
  '/api/v1/customers%2F123',
  '/api/v1/customers%5C123',
  '/api/v1/customers\\123',
  '//v1/admin',
  '/v1//admin',
  '/v1/%61dmin/users',
  '/v1/products%252F..%252Fadmin',
  '/V1/ADMIN/users',
  '/v1/Admin',
  '/API/V1/CUSTOMERS/123',
  '/api/v1/CUSTOMERS/123',
  '/v1/SETTINGS',
  '/v1/settings/',
  '/DOCS/x',
  '/Health',
  '/V1/Products',
  '/v1/adm%C4%B1n',
];

for (const mode of ['refuse', 'strictest'] as const) {
  describe(`Express upstream behind Portcullis (paths.nonCanonical: ${mode})`, () => {
    let portcullis: TestServer;
    let upstream: Upstream;
    let proxy: { server: http.Server; port: number };

    beforeAll(async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-express-'));
      const file = path.join(dir, 'policy.yaml');
      writeFileSync(file, policy(mode === 'strictest' ? 'paths: { nonCanonical: strictest }' : ''));
      portcullis = await startTestServer(file);
      upstream = await startExpress();
      proxy = await startProxy(portcullis, upstream.port);
    });

    afterAll(async () => {
      await new Promise((r) => proxy?.server.close(r));
      await new Promise((r) => upstream?.server.close(r));
      await portcullis?.close();
    });

    it('no variant reaches a protected Express handler without the credential', async () => {
      const outcomes: string[] = [];
      for (const variant of VARIANTS) {
        const answer = await send(proxy.port, variant);
        outcomes.push(`${variant} → ${answer.status} ${answer.body.handler ?? answer.body.reason}`);
        expect(answer.status === 400 || answer.status === 401, `${variant}: ${answer.status} ${answer.body.handler}`).toBe(true);
      }
      expect(upstream.protectedHits, outcomes.join('\n')).toEqual([]);
    });

    it('a refused path is a denied_response 400 with gRPC status INVALID_ARGUMENT, in both header encodings', async () => {
      for (const raw of [false, true]) {
        const response = await portcullis.client.check({ path: mode === 'refuse' ? '/v1/products/..;/admin' : '/v1/adm%C4%B1n', raw });
        expect(response.http_response).toBe('denied_response');
        expect(response.status?.code).toBe(3);
        expect(httpStatusNumber(response.denied_response!.status?.code)).toBe(400);
        expect(JSON.parse(response.denied_response!.body!)).toMatchObject({ code: 'BAD_REQUEST', status: 400, reason: 'invalid_path' });
      }
    });

    it('canonical requests keep working, protected ones with the credential', async () => {
      expect((await send(proxy.port, '/health')).body.handler).toBe('health');
      expect((await send(proxy.port, '/v1/products/42')).body.handler).toBe('catalog');
      expect((await send(proxy.port, '/docs/intro')).body.handler).toBe('docs');
      expect((await send(proxy.port, '/v1/admin/users', { 'x-admin-secret': SECRET })).body.handler).toBe('admin');
      expect((await send(proxy.port, '/V1/ADMIN/users', { 'x-admin-secret': SECRET })).body.handler).toBe('admin');
      expect((await send(proxy.port, '/api/v1/customers/AbC', { 'x-admin-secret': SECRET })).body.handler).toBe('customer');
      expect(upstream.protectedHits).toEqual([]);
    });

    it('hosts: a port or a trailing dot never matches a rule written for the bare name', async () => {
      expect((await send(proxy.port, '/anything', { host: 'shop.example.com' })).body.handler).toBe('everything');
      expect((await send(proxy.port, '/anything', { host: 'shop.example.com:443' })).body.handler).toBe('everything');
      expect(await send(proxy.port, '/anything', { host: 'shop.example.com:1234' })).toMatchObject({ status: 401 });
      expect(await send(proxy.port, '/anything', { host: 'shop.example.com.' })).toMatchObject({ status: 400, body: { reason: 'invalid_host' } });
      expect(await send(proxy.port, '/anything', { host: 'shop.example.com.:443' })).toMatchObject({ status: 400, body: { reason: 'invalid_host' } });
      expect(upstream.protectedHits).toEqual(['everything /anything', 'everything /anything']); // the public shop host, as served
      upstream.protectedHits.length = 0;
    });

    it('underscore variants of owned headers and credentials never reach the upstream, public routes included', async () => {
      for (let i = 0; i < 2; i++) {
        const a = await send(proxy.port, '/health', { x_tenant_id: 'victim', 'x-auth_subject': 'admin', x_auth_scopes: 'admin', 'x-admin-secret': SECRET, [KEY_HEADER]: KEY });
        expect(a.body.handler).toBe('health');
        const h = a.body.headers!;
        for (const name of ['x_tenant_id', 'x-auth_subject', 'x_auth_scopes', 'x-admin-secret', KEY_HEADER]) expect(h[name], name).toBeUndefined();
        const b = await send(proxy.port, '/v1/admin/x', { x_tenant_id: 'victim', 'x-admin-secret': SECRET });
        expect(b.body.handler).toBe('admin');
        expect(b.body.headers!.x_tenant_id).toBeUndefined();
        expect(b.body.headers!['x-tenant-id']).toBe('ops');
        expect(b.body.headers!['x-admin-secret']).toBeUndefined();
      }
    });
  });
}
