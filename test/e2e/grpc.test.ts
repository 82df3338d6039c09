// End to end: the real gRPC server in-process, called by a real grpc-js client built from proto/,
// over both header encodings Envoy uses (`headers` map and `header_map` with raw_value bytes).

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { CheckClient, headerOf, httpStatusNumber, type CheckResponse } from '../support/grpc-client.js';
import { startTestServer, type TestServer } from '../support/server.js';

const SECRET = 'whsec_0123456789abcdef0123456789';

const POLICY = `
realm: commerce
identity:
  - host:
      domains:
        shop.example.com: { tenant: acme, scopes: [storefront] }
        "*.shops.example.net": { tenant: globex, scopes: [storefront] }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: products, match: { path: /v1/products, methods: [GET] }, require: { allOf: [storefront] } }
  - { name: product, match: { path: "/v1/products/{id}" }, require: { allOf: [storefront] }, tenants: [acme] }
  - { name: admin, match: { pathPrefix: /v1/admin/ }, require: { anyOf: [admin] } }
  - name: payment-webhook
    match: { path: "/v1/webhooks/payments/{provider}", methods: [POST] }
    identity:
      - sharedSecret: { header: x-checkout-secret, secret: "\${CHECKOUT_SECRET}", tenant: payments, scopes: [webhooks] }
default: deny
`;

let running: TestServer;
let server: RunningServer;
let client: CheckClient;

beforeAll(async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-e2e-'));
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  running = await startTestServer(file, { CHECKOUT_SECRET: SECRET });
  server = running.server;
  client = running.client;
});

afterAll(async () => {
  await running?.close();
});

function denied(response: CheckResponse) {
  expect(response.http_response).toBe('denied_response');
  const d = response.denied_response!;
  return { status: httpStatusNumber(d.status?.code), body: JSON.parse(d.body ?? '{}'), headers: d.headers, grpc: response.status?.code };
}

function allowed(response: CheckResponse) {
  expect(response.http_response).toBe('ok_response');
  expect(response.status?.code ?? 0).toBe(0);
  return response.ok_response!;
}

describe.each([
  ['headers map', false],
  ['header_map raw_value', true],
])('Check over %s', (_label, raw) => {
  it('allows a public route without credentials and strips every owned identity header', async () => {
    const ok = allowed(await client.check({ raw, path: '/health', headers: { 'x-tenant-id': 'evil', 'x-auth-scopes': 'admin' } }));
    expect(ok.headers ?? []).toEqual([]);
    // x-checkout-secret: a credential header is stripped on every allow, whichever route it belongs to
    expect(ok.headers_to_remove).toEqual(['x-tenant-id', 'x-auth-subject', 'x-auth-scopes', 'x-auth-method', 'x-auth-key-id', 'x-auth-email', 'x-checkout-secret']);
  });

  it('denies a protected route without a credential: 401, JSON body, bare Bearer challenge, UNAUTHENTICATED', async () => {
    const d = denied(await client.check({ raw, path: '/v1/products', host: 'unknown.example.com', id: 'abc-123' }));
    expect(d.status).toBe(401);
    expect(d.grpc).toBe(16);
    expect(d.body).toEqual({ error: 'Unauthorized', code: 'UNAUTHORIZED', status: 401, reason: 'missing_credential', requestId: 'abc-123' });
    expect(headerOf(d.headers, 'www-authenticate')).toBe('Bearer realm="commerce"');
    expect(headerOf(d.headers, 'content-type')).toBe('application/json');
  });

  it('identifies a storefront by Host and injects identity headers with OVERWRITE_IF_EXISTS_OR_ADD', async () => {
    const response = await client.check({ raw, path: '/v1/products', host: 'shop.example.com:443', headers: { 'x-tenant-id': 'evil' } });
    const ok = allowed(response);
    expect(headerOf(ok.headers, 'x-tenant-id')).toBe('acme');
    expect(headerOf(ok.headers, 'x-auth-scopes')).toBe('storefront');
    expect(headerOf(ok.headers, 'x-auth-method')).toBe('host');
    expect(ok.headers!.every((h) => h.append_action === 'OVERWRITE_IF_EXISTS_OR_ADD')).toBe(true);
    expect(ok.headers_to_remove).toEqual(expect.arrayContaining(['x-auth-key-id', 'x-auth-email']));
    expect(ok.headers_to_remove).not.toContain('x-tenant-id');
    const meta = response.dynamic_metadata!.fields!;
    expect(meta.tenant!.stringValue).toBe('acme');
    expect(meta.method!.stringValue).toBe('host');
    expect(meta.route!.stringValue).toBe('products');
    expect(meta.decision_id!.stringValue).toBe('req-e2e');
  });

  it('matches wildcard hosts and enforces route tenant restrictions (403 tenant_not_allowed)', async () => {
    allowed(await client.check({ raw, path: '/v1/products', host: 'eu.shops.example.net' }));
    const d = denied(await client.check({ raw, path: '/v1/products/42', host: 'eu.shops.example.net' }));
    expect(d.status).toBe(403);
    expect(d.grpc).toBe(7);
    expect(d.body.reason).toBe('tenant_not_allowed');
  });

  it('refuses a storefront on an admin route with insufficient_scope and an RFC 6750 challenge', async () => {
    const d = denied(await client.check({ raw, path: '/v1/admin/products', host: 'shop.example.com' }));
    expect(d.status).toBe(403);
    expect(d.body).toMatchObject({ code: 'FORBIDDEN', reason: 'insufficient_scope' });
    expect(headerOf(d.headers, 'www-authenticate')).toBe('Bearer realm="commerce", error="insufficient_scope", scope="admin"');
  });

  it('accepts the webhook shared secret, strips it upstream, and rejects a wrong one', async () => {
    const ok = allowed(
      await client.check({ raw, method: 'POST', path: '/v1/webhooks/payments/stripe?org=acme', headers: { 'x-checkout-secret': SECRET } }),
    );
    expect(headerOf(ok.headers, 'x-auth-method')).toBe('shared-secret');
    expect(headerOf(ok.headers, 'x-tenant-id')).toBe('payments');
    expect(ok.headers_to_remove).toContain('x-checkout-secret');

    const d = denied(await client.check({ raw, method: 'POST', path: '/v1/webhooks/payments/stripe', headers: { 'x-checkout-secret': SECRET.slice(0, -1) + 'x' } }));
    expect(d.status).toBe(401);
    expect(d.body.reason).toBe('invalid_shared_secret');
    expect(headerOf(d.headers, 'www-authenticate')).toBe('Bearer realm="commerce", error="invalid_token"');
  });

  it('denies unmatched paths: 401 without a credential, 403 route_not_allowed with one', async () => {
    expect(denied(await client.check({ raw, path: '/v2/unknown', host: 'nobody.example.com' })).body.reason).toBe('missing_credential');
    const d = denied(await client.check({ raw, path: '/v2/unknown', host: 'shop.example.com' }));
    expect(d.status).toBe(403);
    expect(d.body.reason).toBe('route_not_allowed');
  });

  it('refuses non-canonical paths (400 invalid_path), so dot segments cannot reach around a rule', async () => {
    const d = denied(await client.check({ raw, path: '/health/../v1/admin/x', host: 'shop.example.com' }));
    expect(d).toMatchObject({ status: 400, grpc: 3, body: { reason: 'invalid_path', code: 'BAD_REQUEST' } });
    const e = denied(await client.check({ raw, path: '//v1//admin/x', host: 'shop.example.com' }));
    expect(e.body.reason).toBe('invalid_path');
  });

  it('survives a 64 KiB header value', async () => {
    const big = 'a'.repeat(64 * 1024);
    allowed(await client.check({ raw, path: '/health', headers: { 'x-large': big } }));
    expect(denied(await client.check({ raw, path: '/v1/products', headers: { 'x-large': big } })).status).toBe(401);
  });
});

describe('header_map specifics', () => {
  it('joins duplicate headers, so two shared-secret headers never match', async () => {
    const d = denied(
      await client.check({ raw: true, method: 'POST', path: '/v1/webhooks/payments/x', rawHeaders: [['x-checkout-secret', SECRET], ['x-checkout-secret', SECRET]] }),
    );
    expect(d.body.reason).toBe('invalid_shared_secret');
  });

  it('handles invalid UTF-8 in raw_value without crashing or matching', async () => {
    const bytes = Buffer.concat([Buffer.from(SECRET.slice(0, -2)), Buffer.from([0xff, 0xfe])]);
    const d = denied(await client.check({ raw: true, method: 'POST', path: '/v1/webhooks/payments/x', rawHeaders: [['x-checkout-secret', bytes]] }));
    expect(d.body.reason).toBe('invalid_shared_secret');
    allowed(await client.check({ raw: true, path: '/health', rawHeaders: [['x-odd', Buffer.from([0xc3, 0x28, 0xff])]] }));
  });
});

describe('bad input on the wire', () => {
  it('answers INVALID_ARGUMENT for bytes that are not a CheckRequest, and keeps serving', async () => {
    for (const garbage of [Buffer.from([0xff, 0xff, 0xff]), Buffer.from([0x0a, 0x7f, 0x01]), Buffer.from([0x0b, 0x00])]) {
      await expect(client.checkRaw(garbage)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    }
    allowed(await client.check({ path: '/health' }));
  });

  it('denies a CheckRequest with no attributes (403 invalid_request), never allows', async () => {
    const d = denied(await client.checkMessage({}));
    expect(d.status).toBe(403);
    expect(d.body.reason).toBe('invalid_request');
  });
});

describe('health and ops endpoints', () => {
  it('reports SERVING on grpc.health.v1 for the server and the Authorization service', async () => {
    expect((await client.healthCheck()).status).toBe('SERVING');
    expect((await client.healthCheck('envoy.service.auth.v3.Authorization')).status).toBe('SERVING');
    await expect(client.healthCheck('no.such.Service')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it('serves /healthz, /readyz and /metrics with checks by decision and reason', async () => {
    const base = `http://127.0.0.1:${server.httpPort}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/portcullis_checks_total\{decision="deny",reason="missing_credential",credential="none"\} \d+/);
    expect(metrics).toMatch(/portcullis_checks_total\{decision="allow",reason="ok",credential="host"\} \d+/);
    expect(metrics).toContain('portcullis_check_duration_seconds_bucket');
  });
});
