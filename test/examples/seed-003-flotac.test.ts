// Seed 003 (Flotac) through examples/seed-003-flotac.yaml: Supabase HS256 JWTs with
// user_metadata.company_id, flotac_api_key_(live|test)_… keys sent as Bearer (imported by their
// SHA-256, or minted by Portcullis) with company and permissions, revocable and expiring; / and
// /health public; 403 without a company; 100 req/min per company with burst 200, then 429 with
// Retry-After. Keys live in a temporary copy of examples/keys/flotac.yaml, written by the CLI.
import { createHash } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { httpStatusNumber } from '../support/grpc-client.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { cookieHeader, supabaseSessionCookies } from '../support/supabase.js';
import { startTestServer, type TestServer } from '../support/server.js';
import {
  allowed,
  body,
  check,
  cli,
  copyKeyFile,
  createKey,
  denialHeader,
  readExample,
  substitute,
  tempDir,
  TEST_ENV,
  upstream,
} from './helpers.js';

const ISSUER = 'https://chwjbbvcqsxxgaytqlix.supabase.co/auth/v1';
const ACME = '3f6c2a8e-7b1d-4e55-9c0a-1d2e3f4a5b6c';
const GLOBEX = 'a1b2c3d4-0000-4000-8000-00000000beef';
const JWT_SCOPES = 'customers:read customers:write api:read api:write';
/** A key in Flotac's own format, as if issued before Portcullis: imported by its SHA-256 digest. */
const LEGACY_KEY = `flotac_api_key_live_${createHash('sha256').update('legacy flotac key').digest('hex')}`;

const tmp = tempDir('pc-seed003-');
afterAll(() => tmp.cleanup());
let keyFile: string;
let ciKey: { key: string; id: string };
let revoked: { key: string; id: string };
let shortLived: { key: string; id: string };
let legacyId: string;

beforeAll(async () => {
  keyFile = copyKeyFile('flotac.yaml', tmp.dir);
  const store = `file:${keyFile}`;
  const imported = await cli([
    'keys', 'import', '--store', store, '--tenant', ACME, '--name', 'erp-sync', '--scopes', 'customers:read,customers:write,api:read',
    '--expires-in', '365d', '--sha256', createHash('sha256').update(LEGACY_KEY).digest('hex'), '--prefix', 'flotac_api_key_live_', '--json',
  ]);
  expect(imported.code).toBe(0);
  legacyId = (JSON.parse(imported.out) as { id: string }).id;
  ciKey = await createKey(['--store', store, '--tenant', ACME, '--name', 'ci', '--scopes', 'customers:read', '--expires-in', '90d', '--prefix', 'flotac_api_key_test_', '--environment', 'test']);
  revoked = await createKey(['--store', store, '--tenant', ACME, '--name', 'old', '--scopes', 'customers:read', '--expires-in', '90d', '--prefix', 'flotac_api_key_live_']);
  expect((await cli(['keys', 'revoke', revoked.id, '--store', store])).code).toBe(0);
  shortLived = await createKey(['--store', store, '--tenant', GLOBEX, '--name', 'trial', '--scopes', 'customers:read', '--expires-in', '1d', '--prefix', 'flotac_api_key_test_']);
});

function compileExample(runtime: ReturnType<typeof testRuntime>): CompiledPolicy {
  return compileYaml(substitute(readExample('seed-003-flotac.yaml'), 'path: keys/flotac.yaml', `path: ${keyFile}`), runtime);
}

function jwt(runtime: ReturnType<typeof testRuntime>, claims: JWTPayload = {}, secret: string = TEST_ENV.SUPABASE_JWT_SECRET): Promise<string> {
  const now = Math.floor(runtime.clock.now() / 1000);
  return new SignJWT({
    iss: ISSUER,
    aud: 'authenticated',
    sub: '8d0c7f52-1f6b-4b8e-9a43-5c1f0e2d9a71',
    email: 'user@example.com',
    role: 'authenticated',
    user_metadata: { company_id: ACME, role: 'company_user' },
    iat: now,
    exp: now + 3600,
    ...claims,
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .sign(new TextEncoder().encode(secret));
}

describe('seed 003: examples/seed-003-flotac.yaml — authentication', () => {
  const runtime = testRuntime({ env: { ...TEST_ENV } });
  let policy: CompiledPolicy;
  const bearer = (value: string) => ({ authorization: `Bearer ${value}` });

  beforeAll(async () => {
    policy = compileExample(runtime);
    await policy.ready;
  });
  afterAll(() => runtime.resources.closeAll());

  it('/health and / are public; every other path needs a credential', async () => {
    for (const path of ['/health', '/']) {
      const decision = allowed(await check(policy, { path, headers: { 'x-tenant-id': ACME } }));
      expect(decision.upstreamHeaders).toEqual([]);
      expect(decision.removeHeaders).toContain('x-tenant-id');
    }
    const none = await check(policy, { path: '/api/v1/customers' });
    expect(none).toMatchObject({ allowed: false, status: 401, reason: 'missing_credential' });
    expect(body(none)).toMatchObject({ error: 'Unauthorized', code: 'UNAUTHORIZED', status: 401 });
  });

  it('a Supabase JWT is scoped to user_metadata.company_id', async () => {
    const decision = await check(policy, { path: '/api/v1/customers', headers: bearer(await jwt(runtime)) });
    expect(upstream(decision)).toEqual({
      'x-tenant-id': ACME,
      'x-auth-subject': '8d0c7f52-1f6b-4b8e-9a43-5c1f0e2d9a71',
      'x-auth-scopes': JWT_SCOPES,
      'x-auth-method': 'jwt',
      'x-auth-email': 'user@example.com',
    });
    allowed(await check(policy, { method: 'POST', path: '/api/v1/vehicles', headers: bearer(await jwt(runtime)) }));
  });

  it('"Store JWT in httpOnly cookies": the @supabase/ssr session cookie, whole or chunked, is verified like the Bearer token', async () => {
    const ref = 'chwjbbvcqsxxgaytqlix';
    const small = await supabaseSessionCookies(ref, await jwt(runtime));
    const chunked = await supabaseSessionCookies(ref, await jwt(runtime), { metadata: { company_id: ACME, avatar: 'x'.repeat(8_000) } });
    expect(chunked.length).toBeGreaterThan(1);
    for (const cookies of [small, chunked]) {
      const decision = await check(policy, { path: '/api/v1/customers', headers: { cookie: cookieHeader(cookies, ['theme=dark']) } });
      expect(upstream(decision)).toMatchObject({ 'x-tenant-id': ACME, 'x-auth-method': 'jwt' });
    }
    // The Bearer header comes first; a broken cookie is a 401, never a guess.
    const other = await jwt(runtime, { user_metadata: { company_id: GLOBEX } });
    expect(upstream(await check(policy, { path: '/api/v1/customers', headers: { cookie: cookieHeader(small), ...bearer(other) } }))['x-tenant-id']).toBe(GLOBEX);
    const broken = await check(policy, { path: '/api/v1/customers', headers: { cookie: cookieHeader([chunked[0]!, chunked[2] ?? chunked[1]!]) } });
    expect(broken).toMatchObject({ allowed: false, status: 401, reason: 'malformed_credential' });
    const forged = await supabaseSessionCookies(ref, await jwt(runtime, {}, 'another-projects-secret-0123456789-abcdef'));
    expect(await check(policy, { path: '/api/v1/customers', headers: { cookie: cookieHeader(forged) } })).toMatchObject({ status: 401, reason: 'invalid_signature' });
  });

  it('403 missing_tenant when the user has no company_id in user_metadata', async () => {
    const decision = await check(policy, { path: '/api/v1/customers', headers: bearer(await jwt(runtime, { user_metadata: { role: 'company_user' } })) });
    expect(decision).toMatchObject({ allowed: false, status: 403, reason: 'missing_tenant' });
    expect(body(decision)).toMatchObject({ error: 'Forbidden', code: 'FORBIDDEN', status: 403 });
  });

  it('401 for an expired, forged or foreign JWT', async () => {
    const now = Math.floor(runtime.clock.now() / 1000);
    const cases: [string, string][] = [
      [await jwt(runtime, { iat: now - 7200, exp: now - 3600 }), 'token_expired'],
      [await jwt(runtime, {}, 'another-projects-secret-0123456789-abcdef'), 'invalid_signature'],
      [await jwt(runtime, { aud: 'anon' }), 'invalid_audience'],
      [await jwt(runtime, { iss: 'https://otherproject.supabase.co/auth/v1' }), 'unknown_issuer'],
    ];
    for (const [token, reason] of cases) {
      const decision = await check(policy, { path: '/api/v1/customers', headers: bearer(token) });
      expect(decision, reason).toMatchObject({ allowed: false, status: 401, reason });
      expect(denialHeader(decision, 'www-authenticate')).toBe('Bearer realm="flotac", error="invalid_token"');
    }
  });

  it('an imported flotac_api_key_live_<64 hex> key sent as Bearer carries its company and permissions; it is stripped upstream', async () => {
    const decision = allowed(await check(policy, { method: 'PUT', path: '/api/v1/customers/c-9', headers: bearer(LEGACY_KEY) }));
    expect(upstream(decision)).toEqual({
      'x-tenant-id': ACME,
      'x-auth-subject': 'erp-sync',
      'x-auth-scopes': 'customers:read customers:write api:read',
      'x-auth-method': 'api-key',
      'x-auth-key-id': legacyId,
    });
    expect(decision.removeHeaders).toContain('authorization');
  });

  it('403 insufficient_scope when the key lacks the endpoint permission', async () => {
    allowed(await check(policy, { path: '/api/v1/customers', headers: bearer(ciKey.key) }));
    const write = await check(policy, { method: 'POST', path: '/api/v1/customers', headers: bearer(ciKey.key) });
    expect(write).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    expect(denialHeader(write, 'www-authenticate')).toBe('Bearer realm="flotac", error="insufficient_scope", scope="customers:write"');
    expect(await check(policy, { method: 'POST', path: '/api/v1/vehicles', headers: bearer(LEGACY_KEY) })).toMatchObject({ status: 403, reason: 'insufficient_scope' });
  });

  it('401 for a malformed, unknown or revoked key', async () => {
    const cases: [string, string][] = [
      [LEGACY_KEY.slice(0, -1), 'invalid_api_key'], // 63 hex digits: fails the declared format offline
      [LEGACY_KEY.toUpperCase().replace('FLOTAC_API_KEY_LIVE_', 'flotac_api_key_live_'), 'invalid_api_key'], // not lower-case hex
      [`flotac_api_key_test_${'0'.repeat(64)}`, 'invalid_api_key'], // right shape, unknown
      [`${ciKey.key.slice(0, -1)}${ciKey.key.endsWith('A') ? 'B' : 'A'}`, 'invalid_api_key'], // checksum
      [revoked.key, 'key_revoked'],
    ];
    for (const [key, reason] of cases) {
      const decision = await check(policy, { path: '/api/v1/customers', headers: bearer(key) });
      expect(decision, key).toMatchObject({ allowed: false, status: 401, reason });
      expect(denialHeader(decision, 'www-authenticate')).toBe('Bearer realm="flotac", error="invalid_token"');
    }
  });
});

describe('seed 003: examples/seed-003-flotac.yaml — rate limit and key expiry', () => {
  it('per company: a burst of 200 passes, the 201st is a 429 with Retry-After; JWTs and keys share the budget', async () => {
    const runtime = testRuntime({ env: { ...TEST_ENV } });
    try {
      const policy = compileExample(runtime);
      await policy.ready;
      const user = { authorization: `Bearer ${await jwt(runtime)}` };
      const key = { authorization: `Bearer ${LEGACY_KEY}` };
      for (let i = 0; i < 200; i++) {
        allowed(await check(policy, { path: '/api/v1/customers', headers: i % 2 === 0 ? user : key }));
      }
      for (const headers of [user, key]) {
        const refused = await check(policy, { path: '/api/v1/customers', headers });
        expect(refused).toMatchObject({ allowed: false, status: 429, code: 'RATE_LIMITED', reason: 'rate_limited' });
        expect(denialHeader(refused, 'retry-after')).toBe('1');
        expect(denialHeader(refused, 'ratelimit-policy')).toBe('"per-company";q=200;w=120');
        expect(body(refused)).toMatchObject({ code: 'RATE_LIMITED', status: 429 });
      }
      // Another company has its own budget; public routes are not counted.
      allowed(await check(policy, { path: '/api/v1/customers', headers: { authorization: `Bearer ${await jwt(runtime, { user_metadata: { company_id: GLOBEX } })}` } }));
      for (let i = 0; i < 50; i++) allowed(await check(policy, { path: '/health' }));
      // 100/min: one more request every 600 ms.
      runtime.clock.advance(600);
      allowed(await check(policy, { path: '/api/v1/customers', headers: key }));
      expect(await check(policy, { path: '/api/v1/customers', headers: user })).toMatchObject({ status: 429, reason: 'rate_limited' });
      runtime.clock.advance(60_000);
      for (let i = 0; i < 100; i++) allowed(await check(policy, { path: '/api/v1/customers', headers: user }));
      expect(await check(policy, { path: '/api/v1/customers', headers: user })).toMatchObject({ status: 429 });
    } finally {
      await runtime.resources.closeAll();
    }
  });

  it('a key past its expiry is refused with 401 key_expired', async () => {
    const runtime = testRuntime({ env: { ...TEST_ENV } });
    try {
      const policy = compileExample(runtime);
      await policy.ready;
      const headers = { authorization: `Bearer ${shortLived.key}` };
      expect(upstream(await check(policy, { path: '/api/v1/customers', headers }))['x-tenant-id']).toBe(GLOBEX);
      runtime.clock.advance(86_400_000 + 1_000);
      expect(await check(policy, { path: '/api/v1/customers', headers })).toMatchObject({ status: 401, reason: 'key_expired' });
    } finally {
      await runtime.resources.closeAll();
    }
  });
});

describe('seed 003: examples/seed-003-flotac.yaml — company binding and HTTPS only', () => {
  const runtime = testRuntime({ env: { ...TEST_ENV } });
  let policy: CompiledPolicy;
  const bearer = (value: string) => ({ authorization: `Bearer ${value}` });

  beforeAll(async () => {
    policy = compileExample(runtime);
    await policy.ready;
  });
  afterAll(() => runtime.resources.closeAll());

  it("a path naming another company is 403 company_mismatch (\"Attempting to access another company's data\"), for JWTs and keys alike", async () => {
    const user = bearer(await jwt(runtime));
    for (const headers of [user, bearer(LEGACY_KEY)]) {
      allowed(await check(policy, { path: `/api/v1/companies/${ACME}/vehicles`, headers }));
      allowed(await check(policy, { method: 'PATCH', path: `/api/v1/companies/${ACME}/vehicles/v-1`, headers: user }));
      for (const p of [`/api/v1/companies/${GLOBEX}/vehicles`, `/api/v1/companies/${GLOBEX}/vehicles/v-1`]) {
        const decision = await check(policy, { path: p, headers });
        expect(decision, p).toMatchObject({ allowed: false, status: 403, code: 'FORBIDDEN', reason: 'company_mismatch' });
        expect(body(decision)).toMatchObject({ reason: 'company_mismatch', message: "Attempting to access another company's data" });
      }
    }
    // Scopes still apply first: a read-only key cannot write even in its own company.
    expect(await check(policy, { method: 'POST', path: `/api/v1/companies/${ACME}/vehicles`, headers: bearer(ciKey.key) })).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    // No credential: 401 before any rule.
    expect(await check(policy, { path: `/api/v1/companies/${GLOBEX}/vehicles` })).toMatchObject({ status: 401, reason: 'missing_credential' });
    // Other depths under /api/v1/companies/ are no endpoint, for anyone.
    for (const p of ['/api/v1/companies/', `/api/v1/companies/${ACME}`, `/api/v1/companies/${ACME}/a/b/c`]) {
      expect(await check(policy, { path: p, headers: user }), p).toMatchObject({ status: 404, code: 'NOT_FOUND', reason: 'no_such_endpoint' });
    }
  });

  it('plain HTTP is refused on every API route (403 scheme_not_allowed); /health stays reachable', async () => {
    const user = bearer(await jwt(runtime));
    for (const p of ['/api/v1/customers', '/api/v1/vehicles', `/api/v1/companies/${ACME}/vehicles`]) {
      expect(await check(policy, { path: p, scheme: 'http', headers: user }), p).toMatchObject({ allowed: false, status: 403, reason: 'scheme_not_allowed' });
    }
    allowed(await check(policy, { path: '/health', scheme: 'http' }));
  });
});

describe('seed 003 over the real gRPC server', () => {
  const runtime = testRuntime({ env: { ...TEST_ENV } });
  let server: TestServer;

  beforeAll(async () => {
    const file = path.join(tmp.dir, 'seed-003.yaml');
    writeFileSync(file, substitute(readExample('seed-003-flotac.yaml'), 'path: keys/flotac.yaml', `path: ${keyFile}`));
    server = await startTestServer(file, { ...TEST_ENV });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('cross-company denial and https-only, with a signed JWT and a real key, both header encodings', async () => {
    const token = await jwt(runtime);
    for (const raw of [false, true]) {
      for (const credential of [token, LEGACY_KEY]) {
        const headers = { authorization: `Bearer ${credential}` };
        const own = await server.client.check({ path: `/api/v1/companies/${ACME}/vehicles`, headers, raw });
        expect(own.ok_response, `raw=${raw}`).toBeDefined();
        const other = await server.client.check({ path: `/api/v1/companies/${GLOBEX}/vehicles`, headers, raw });
        expect(httpStatusNumber(other.denied_response?.status?.code)).toBe(403);
        expect(other.status?.code).toBe(7);
        expect(JSON.parse(other.denied_response!.body!)).toMatchObject({ status: 403, reason: 'company_mismatch', message: "Attempting to access another company's data" });
        const http = await server.client.check({ path: '/api/v1/customers', headers, raw, scheme: 'http' });
        expect(httpStatusNumber(http.denied_response?.status?.code)).toBe(403);
        expect(JSON.parse(http.denied_response!.body!)).toMatchObject({ reason: 'scheme_not_allowed' });
      }
    }
  });
});
