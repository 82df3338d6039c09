// denyBody: the policy shapes the JSON body of denials per status and per reason (fixed fields, a
// message per reason or status, {{placeholders}}), today's body staying the default. The JSON stays
// valid for any request id and message; headers are untouched; bodies are pre-built per route and
// reason, only the request id is spliced in per request. Through authorize() and the real gRPC server.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatPolicyIssue, PolicyError } from '../../src/errors.js';
import { authorize } from '../../src/pipeline/authorize.js';
import { denyDecision } from '../../src/pipeline/decision.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import type { Decision, DenyDecision } from '../../src/types.js';
import { httpStatusNumber } from '../support/grpc-client.js';
import { request, type RequestInit } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { startTestServer, type TestServer } from '../support/server.js';

const SECRET = 'deny-body-shared-secret-0123456789';
const BASE = `
realm: shop
identity:
  - sharedSecret: { header: x-internal, secret: "${SECRET}", tenant: acme, scopes: [storefront] }
routes:
  - { name: admin, match: { pathPrefix: /v1/admin/ }, require: { allOf: [admin] } }
  - { name: store, match: { pathPrefix: /v1/ }, require: { allOf: [storefront] } }
`;
/** Seed 002's @prood/types error format. */
const SEED_002 = `${BASE}
denyBody:
  template: { error: "{{message}}", code: "{{code}}", status: "{{status}}" }
  messages:
    insufficient_scope: Insufficient scope
`;

async function deny(policy: CompiledPolicy, init: RequestInit): Promise<DenyDecision> {
  const d: Decision = await authorize(policy, request(init));
  if (d.allowed) throw new Error('expected a denial');
  return d;
}

function problems(yaml: string): string[] {
  try {
    compileYaml(yaml, testRuntime());
  } catch (err) {
    if (err instanceof PolicyError) return err.issues.map(formatPolicyIssue);
    throw err;
  }
  return [];
}

/** Request ids a client may choose (x-request-id is client-controlled unless Envoy overrides it). */
const HOSTILE_IDS = ['plain-id', 'a"b', 'back\\slash', 'new\nline\r\t', '\u0000\u001f\u007f', '</script><script>', '\u2028\u2029', '\ud800 lone', 'ünï©ødé 🚪', '{{message}}', '"},"admin":true,"x":"'];

describe('deny body shaping', () => {
  it('keeps today\'s body when the policy says nothing', async () => {
    const policy = compileYaml(BASE);
    const d = await deny(policy, { path: '/v1/items', requestId: 'r-1' });
    expect(d.body).toBe('{"error":"Unauthorized","code":"UNAUTHORIZED","status":401,"reason":"missing_credential","requestId":"r-1"}');
  });

  it('writes seed 002\'s bodies: a message per reason, the status label otherwise, status as a number', async () => {
    const policy = compileYaml(SEED_002);
    const forbidden = await deny(policy, { path: '/v1/admin/products', headers: { 'x-internal': SECRET } });
    expect(forbidden.body).toBe('{"error":"Insufficient scope","code":"FORBIDDEN","status":403}');
    const unauthorized = await deny(policy, { path: '/v1/items' });
    expect(unauthorized.body).toBe('{"error":"Unauthorized","code":"UNAUTHORIZED","status":401}');
    const badSecret = await deny(policy, { path: '/v1/items', headers: { 'x-internal': 'wrong-secret-wrong-secret' } });
    expect(badSecret.body).toBe('{"error":"Unauthorized","code":"UNAUTHORIZED","status":401}');
  });

  it('per status and per reason templates, fixed fields of any JSON type, every placeholder', async () => {
    const policy = compileYaml(`${BASE}
denyBody:
  template: { detail: "{{message}}" }
  messages:
    401: Not authenticated
    missing_credential: Not authenticated (no credential)
    insufficient_scope: 'Needs "admin" — ask your owner'
  byStatus:
    403: { template: { error: { message: "{{message}}", type: forbidden, retryable: false, codes: ["{{code}}", "{{reason}}"], n: 1.5, none: null }, id: "req {{requestId}}!", status: "{{status}}" } }
  byReason:
    invalid_shared_secret: { template: { detail: "{{error}}: bad secret", reason: "{{reason}}", requestId: "{{requestId}}", statusText: "status {{status}}" } }
`);
    const missing = await deny(policy, { path: '/v1/items' });
    expect(JSON.parse(missing.body)).toEqual({ detail: 'Not authenticated (no credential)' });
    const scope = await deny(policy, { path: '/v1/admin/x', headers: { 'x-internal': SECRET }, requestId: 'r-9' });
    expect(JSON.parse(scope.body)).toEqual({
      error: { message: 'Needs "admin" — ask your owner', type: 'forbidden', retryable: false, codes: ['FORBIDDEN', 'insufficient_scope'], n: 1.5, none: null },
      id: 'req r-9!',
      status: 403,
    });
    const secret = await deny(policy, { path: '/v1/items', headers: { 'x-internal': 'wrong-secret-wrong-secret' }, requestId: 'r-7' });
    expect(JSON.parse(secret.body)).toEqual({ detail: 'Unauthorized: bad secret', reason: 'invalid_shared_secret', requestId: 'r-7', statusText: 'status 401' });
  });

  it('stays valid JSON for any request id, whole-value or inside a string, and never lets it add fields', async () => {
    const policy = compileYaml(`${BASE}
denyBody:
  template: { id: "{{requestId}}", note: "request {{requestId}} ({{requestId}})", error: "{{message}}" }
`);
    for (const id of HOSTILE_IDS) {
      const d = await deny(policy, { path: '/v1/items', requestId: id });
      const parsed = JSON.parse(d.body) as Record<string, unknown>;
      expect(parsed, JSON.stringify(id)).toEqual({ id, note: `request ${id} (${id})`, error: 'Unauthorized' });
      expect(Object.keys(parsed)).toEqual(['id', 'note', 'error']);
    }
  });

  it('carries a route rule\'s own denial (status, reason, message), escaped; bodies pre-built once per rule', () => {
    const policy = compileYaml(`${BASE}
denyBody:
  template: { detail: "{{message}}", reason: "{{reason}}", status: "{{status}}", id: "{{requestId}}" }
  messages: { 403: Forbidden here }
`);
    const plain = denyDecision(policy, 'a', 'store', { reason: 'tenant_not_allowed' });
    expect(JSON.parse(plain.body)).toEqual({ detail: 'Forbidden here', reason: 'tenant_not_allowed', status: 403, id: 'a' });
    const rule = Object.freeze({ status: 404 as const, reason: 'order_closed', message: 'Orders are "closed" on Sundays\n' });
    const ruled = denyDecision(policy, 'b', 'store', { reason: 'condition_failed', rule });
    expect(ruled.status).toBe(404);
    expect(JSON.parse(ruled.body)).toEqual({ detail: 'Orders are "closed" on Sundays\n', reason: 'order_closed', status: 404, id: 'b' });
    const silent = denyDecision(policy, 'c', 'store', { reason: 'condition_failed', rule: Object.freeze({ status: 403 as const, reason: 'closed' }) });
    expect(JSON.parse(silent.body)).toEqual({ detail: 'Forbidden here', reason: 'closed', status: 403, id: 'c' });
    // Pre-built: the same denial twice shares its parts (and encode cache) — only the id differs.
    const again = denyDecision(policy, 'd', 'store', { reason: 'tenant_not_allowed' });
    expect(again.encodeCache).toBeDefined();
    expect(again.encodeCache).toBe(plain.encodeCache);
    expect(policy.denyBody!.parts('condition_failed', rule)).toBe(policy.denyBody!.parts('condition_failed', rule));
  });

  it('leaves headers exactly as they are without denyBody', async () => {
    const shaped = compileYaml(SEED_002);
    const plain = compileYaml(BASE);
    for (const init of [{ path: '/v1/items' }, { path: '/v1/items', headers: { 'x-internal': 'wrong-secret-wrong-secret' } }, { path: '/v1/admin/x', headers: { 'x-internal': SECRET } }]) {
      const a = await deny(shaped, init);
      const b = await deny(plain, init);
      expect(a.headers).toEqual(b.headers);
      expect([a.status, a.code, a.reason]).toEqual([b.status, b.code, b.reason]);
      expect(a.headers.find((h) => h.name === 'content-type')?.value).toBe('application/json');
    }
    const retry = denyDecision(compileYaml(SEED_002), 'x', 'store', { reason: 'rate_limited', retryAfter: 12, headers: [{ name: 'ratelimit', value: 'limit=1, remaining=0, reset=12' }] });
    expect(retry.body).toBe('{"error":"Too Many Requests","code":"RATE_LIMITED","status":429}');
    expect(retry.headers.map((h) => `${h.name}: ${h.value}`)).toEqual(['content-type: application/json', 'retry-after: 12', 'ratelimit: limit=1, remaining=0, reset=12']);
  });

  it('refuses unknown placeholders, reasons and statuses at load, with their place', () => {
    expect(problems(`${BASE}\ndenyBody: { template: { a: "{{mesage}}" } }\n`)).toEqual([
      'policy.yaml:9:28: denyBody.template.a: unknown placeholder {{mesage}} (known: status, code, reason, requestId, message, error)',
    ]);
    expect(problems(`${BASE}\ndenyBody: { template: { a: b }, messages: { insuficient_scope: x, 500: y } }\n`)).toEqual([
      'policy.yaml:9:67: denyBody.messages.500: not a reason code or a deny status (400, 401, 403, 404, 429, 503)',
      'policy.yaml:9:64: denyBody.messages.insuficient_scope: not a reason code or a deny status (400, 401, 403, 404, 429, 503)',
    ]);
    expect(problems(`${BASE}\ndenyBody: { byReason: { nope: { template: { a: b } } }, byStatus: { 418: { template: { a: b } } } }\n`)).toEqual([
      'policy.yaml:9:69: denyBody.byStatus.418: not a deny status (400, 401, 403, 404, 429, 503)',
      'policy.yaml:9:31: denyBody.byReason.nope: not a reason code',
    ]);
  });
});

describe('deny body over gRPC', () => {
  let dir: string;
  let running: TestServer;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'pc-denybody-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, SEED_002);
    running = await startTestServer(file);
  });
  afterAll(async () => {
    await running?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends the shaped body and the usual status, challenge and content-type', async () => {
    const response = await running.client.check({ path: '/v1/admin/products', headers: { 'x-internal': SECRET }, id: 'g-1' });
    expect(response.http_response).toBe('denied_response');
    const d = response.denied_response!;
    expect(httpStatusNumber(d.status?.code)).toBe(403);
    expect(d.body).toBe('{"error":"Insufficient scope","code":"FORBIDDEN","status":403}');
    const headers = Object.fromEntries((d.headers ?? []).map((h) => [h.header.key, h.header.value]));
    expect(headers).toEqual({ 'content-type': 'application/json', 'www-authenticate': 'Bearer realm="shop", error="insufficient_scope", scope="admin"' });
    for (const id of HOSTILE_IDS.filter((i) => !/[\u0000-\u001f\u007f]/.test(i) && !i.includes('\ud800') && !/[^\u0020-\u007e]/.test(i))) {
      const r = await running.client.check({ path: '/v1/items', id });
      expect(JSON.parse(r.denied_response!.body!)).toEqual({ error: 'Unauthorized', code: 'UNAUTHORIZED', status: 401 });
    }
  });
});
