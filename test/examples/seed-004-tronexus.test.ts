// Seed 004 (Tronexus) through examples/seed-004-tronexus.yaml: HS256 access tokens without iss
// (sub, app_id, roles per app → scopes), ak_ API keys hashed with a mandatory expiry ≤ 365 days
// (bcrypt imports included), a 20/60 s sliding window per IP per endpoint with a 15-minute
// lockout after 10 violations, bans from a file, /health exempt and public.
// The key file and the ban file are temporary copies (paths substituted in the policy text); the
// keys are minted and imported with the CLI, the ban is added with the CLI.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { headerOf, httpStatusNumber } from '../support/grpc-client.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { startTestServer } from '../support/server.js';
import { allowed, check, cli, copyKeyFile, createKey, denialHeader, readExample, substitute, tempDir, TEST_ENV, upstream } from './helpers.js';

const MY_APP = '43d8b05c-2eaf-4077-9ee1-3602ba8901de';
const OTHER_APP = '9b2f7c1e-5a44-4c1b-8d7e-2f0c6a9e3b10';
const BANNED_IP = '192.0.2.66';
/** A Tronexus-issued key (ak_ + 43 base64url characters), known to us only by its bcrypt hash. */
const TRONEXUS_KEY = 'ak_Q2hhbmdlTWVJbXBvcnRlZEtleUZyb21Ucm9uZXh1c0E';
const TRONEXUS_KEY_ID = '550e8400-e29b-41d4-a716-446655440000';

const tmp = tempDir('pc-seed004-');
afterAll(() => tmp.cleanup());
let policyFile: string;
let policyText: string;
let adminKey: { key: string; id: string };
let serviceKey: { key: string; id: string };

beforeAll(async () => {
  const keyFile = copyKeyFile('tronexus.yaml', tmp.dir);
  const bansFile = path.join(tmp.dir, 'bans.json');
  policyText = substitute(readExample('seed-004-tronexus.yaml'), 'path: keys/tronexus.yaml', `path: ${keyFile}`);
  policyText = substitute(policyText, '/var/lib/portcullis/tronexus-bans.json', bansFile);
  // The example's 150ms bcrypt budget is a latency bound for production; on a loaded 2-core test
  // machine one cost-10 compare can take longer, and this suite checks verification, not speed.
  policyText = substitute(policyText, 'bcryptTimeout: 150ms ', 'bcryptTimeout: 5s    ');
  policyFile = path.join(tmp.dir, 'seed-004-tronexus.yaml');
  writeFileSync(policyFile, policyText);
  const env = { ...TEST_ENV };

  // Keys through the policy (--config), so the example's maxExpiry and defaultPrefix apply.
  adminKey = await createKey(['--config', policyFile, '--tenant', MY_APP, '--name', 'admin-service', '--scopes', 'admin', '--expires-in', '365d'], env);
  serviceKey = await createKey(['--config', policyFile, '--tenant', MY_APP, '--name', 'worker', '--expires-in', '30d'], env);
  const imported = await cli(
    [
      'keys', 'import', '--config', policyFile, '--tenant', MY_APP, '--name', 'my-service', '--scopes', 'admin', '--id', TRONEXUS_KEY_ID,
      '--expires-at', new Date(Date.now() + 200 * 86_400_000).toISOString(), '--bcrypt', bcrypt.hashSync(TRONEXUS_KEY, 4),
      '--prefix', 'ak_', '--display-prefix', TRONEXUS_KEY.slice(0, 12),
    ],
    env,
  );
  expect(imported.err).toBe('');
  expect(imported.code).toBe(0);
  expect((await cli(['bans', 'add', `ip:${BANNED_IP}`, '--reason', 'repeat offender', '--config', policyFile], env)).code).toBe(0);
});

function compileExample(runtime: ReturnType<typeof testRuntime>): CompiledPolicy {
  return compileYaml(policyText, runtime);
}

function accessToken(runtime: ReturnType<typeof testRuntime>, claims: JWTPayload = {}): Promise<string> {
  const now = Math.floor(runtime.clock.now() / 1000);
  return new SignJWT({ sub: 'user-uuid-1', app_id: MY_APP, roles: ['admin', 'user'], iat: now, exp: now + 900, ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode(TEST_ENV.TRONEXUS_JWT_SECRET));
}

/**
 * Checks as the example Envoy (use_remote_address: true) sends them behind one load balancer at
 * 10.0.0.2: the peer is the load balancer, which Envoy has appended after the client's address.
 */
const from = (ip: string, headers: Record<string, string> = {}) => ({ sourceAddress: '10.0.0.2', headers: { 'x-forwarded-for': `${ip}, 10.0.0.2`, ...headers } });

describe('seed 004: examples/seed-004-tronexus.yaml — API keys at creation', () => {
  it('expiry is mandatory and at most 365 days (the policy keyStore.maxExpiry)', async () => {
    const tooLong = await cli(['keys', 'create', '--config', policyFile, '--tenant', MY_APP, '--name', 'x', '--expires-in', '366d'], { ...TEST_ENV });
    expect(tooLong.code).toBe(2);
    expect(tooLong.err).toContain('at most 365 days');
    const none = await cli(['keys', 'create', '--config', policyFile, '--tenant', MY_APP, '--name', 'x'], { ...TEST_ENV });
    expect(none.code).toBe(2);
    expect(none.err).toContain('--expires-in is required');
    expect(adminKey.key.startsWith('ak_')).toBe(true); // the example's defaultPrefix
  });
});

describe('seed 004: examples/seed-004-tronexus.yaml — authentication', () => {
  const runtime = testRuntime({ env: { ...TEST_ENV } });
  let policy: CompiledPolicy;
  const bearer = (value: string) => ({ authorization: `Bearer ${value}` });
  let ipCounter = 0;
  /** A fresh client IP per request group, so the per-IP window never interferes here. */
  const client = (headers: Record<string, string> = {}) => from(`198.51.100.${++ipCounter}`, headers);

  beforeAll(async () => {
    policy = compileExample(runtime);
    await policy.ready;
  });
  afterAll(() => runtime.resources.closeAll());

  it('/health is public', async () => {
    const decision = allowed(await check(policy, { path: '/health', ...client() }));
    expect(decision.upstreamHeaders).toEqual([]);
  });

  it('an access token: the app is the tenant, the roles of that app become scopes', async () => {
    const decision = await check(policy, { path: '/auth/me', ...client(bearer(await accessToken(runtime))) });
    expect(upstream(decision)).toEqual({ 'x-tenant-id': MY_APP, 'x-auth-subject': 'user-uuid-1', 'x-auth-scopes': 'profile roles:read app:admin', 'x-auth-method': 'jwt' });
    const user = await check(policy, { path: `/apps/${MY_APP}/roles`, ...client(bearer(await accessToken(runtime, { roles: ['user'] }))) });
    expect(upstream(user)['x-auth-scopes']).toBe('profile roles:read');
  });

  it('each app has its own roles: the same role name means nothing in another app, unknown apps get no scopes', async () => {
    const member = await check(policy, { path: `/apps/${OTHER_APP}/roles`, ...client(bearer(await accessToken(runtime, { app_id: OTHER_APP, roles: ['member'] }))) });
    expect(member).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    const adminElsewhere = await check(policy, { path: '/auth/me', ...client(bearer(await accessToken(runtime, { app_id: OTHER_APP, roles: ['admin'] }))) });
    expect(adminElsewhere).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    const owner = await check(policy, { path: '/auth/me', ...client(bearer(await accessToken(runtime, { app_id: OTHER_APP, roles: ['owner'] }))) });
    expect(upstream(owner)).toMatchObject({ 'x-tenant-id': OTHER_APP, 'x-auth-scopes': 'profile roles:read app:admin' });
    const unknownApp = await check(policy, { path: '/auth/me', ...client(bearer(await accessToken(runtime, { app_id: 'app-unknown' }))) });
    expect(unknownApp).toMatchObject({ status: 403, reason: 'insufficient_scope' });
  });

  it("an access token reads the roles of its own app only (request.params.id == auth.claims.app_id)", async () => {
    const owner = bearer(await accessToken(runtime, { app_id: OTHER_APP, roles: ['owner'] }));
    allowed(await check(policy, { path: `/apps/${OTHER_APP}/roles`, ...client(owner) }));
    const foreign = await check(policy, { path: `/apps/${MY_APP}/roles`, ...client(owner) });
    expect(foreign).toMatchObject({ allowed: false, status: 403, reason: 'app_mismatch' });
    expect(JSON.parse((foreign as { body: string }).body)).toEqual({ detail: 'an access token only reads the roles of its own app' });
  });

  it('401 for missing, expired, foreign or incomplete access tokens', async () => {
    const now = Math.floor(runtime.clock.now() / 1000);
    expect(await check(policy, { path: '/auth/me', ...client() })).toMatchObject({ status: 401, reason: 'missing_credential' });
    const cases: [string, string][] = [
      [await accessToken(runtime, { iat: now - 1000, exp: now - 100 }), 'token_expired'],
      [await accessToken(runtime, { app_id: undefined }), 'missing_claim'],
      [await accessToken(runtime, { iss: 'https://auth-api.example.org' }), 'unknown_issuer'],
      [await new SignJWT({ sub: 'u', app_id: MY_APP, exp: now + 60 }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode('x'.repeat(40))), 'invalid_signature'],
    ];
    for (const [token, reason] of cases) {
      expect(await check(policy, { path: '/auth/me', ...client(bearer(token)) }), reason).toMatchObject({ allowed: false, status: 401, reason });
    }
  });

  it('denials have FastAPI\'s body, {"detail": "…"}, with the usual status and headers', async () => {
    const now = Math.floor(runtime.clock.now() / 1000);
    const detail = async (init: Parameters<typeof check>[1]) => {
      const d = await check(policy, init);
      expect(denialHeader(d, 'content-type')).toBe('application/json');
      return [d.allowed ? 200 : d.status, d.allowed ? '' : d.body];
    };
    expect(await detail({ path: '/auth/me', ...client() })).toEqual([401, '{"detail":"Not authenticated"}']);
    expect(await detail({ path: '/auth/me', ...client(bearer(await accessToken(runtime, { iat: now - 1000, exp: now - 100 }))) })).toEqual([401, '{"detail":"Token has expired"}']);
    expect(await detail({ path: '/auth/me', ...client(bearer('a.b.c')) })).toEqual([401, '{"detail":"Could not validate credentials"}']);
    expect(await detail({ path: '/apps', ...client(bearer(serviceKey.key)) })).toEqual([403, '{"detail":"Not enough permissions"}']);
    expect(await detail({ path: '/oauth/google', ...client() })).toEqual([400, '{"detail":"app_id query parameter is required"}']);
    const foreign = await accessToken(runtime, { app_id: OTHER_APP, roles: ['owner'] });
    expect(await detail({ path: `/apps/${MY_APP}/roles`, ...client(bearer(foreign)) })).toEqual([403, '{"detail":"an access token only reads the roles of its own app"}']);
    const missing = await check(policy, { path: '/auth/me', ...client() });
    expect(denialHeader(missing, 'www-authenticate')).toBe('Bearer realm="tronexus"');
  });

  it('admin API key endpoints: an ak_ key with the admin scope passes and is stripped; tokens and other keys do not', async () => {
    const decision = allowed(await check(policy, { method: 'POST', path: '/apikeys', ...client(bearer(adminKey.key)) }));
    expect(upstream(decision)).toEqual({
      'x-tenant-id': MY_APP,
      'x-auth-subject': 'admin-service',
      'x-auth-scopes': 'admin',
      'x-auth-method': 'api-key',
      'x-auth-key-id': adminKey.id,
    });
    expect(decision.removeHeaders).toContain('authorization');
    allowed(await check(policy, { method: 'DELETE', path: `/apikeys/${serviceKey.id}`, ...client(bearer(adminKey.key)) }));
    allowed(await check(policy, { method: 'POST', path: `/apps/${MY_APP}/users/user-uuid-2/roles`, ...client(bearer(adminKey.key)) }));

    expect(await check(policy, { path: '/apps', ...client(bearer(serviceKey.key)) })).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    // An access token, even with admin role, is not an admin API key.
    expect(await check(policy, { path: '/apps', ...client(bearer(await accessToken(runtime))) })).toMatchObject({ status: 403, reason: 'credential_not_allowed' });
    // And an API key is not an access token.
    expect(await check(policy, { path: '/auth/me', ...client(bearer(adminKey.key)) })).toMatchObject({ status: 403, reason: 'credential_not_allowed' });
  });

  it('an imported Tronexus key (bcrypt hash) is verified and keeps its old id', async () => {
    const decision = await check(policy, { path: '/apps', ...client(bearer(TRONEXUS_KEY)) });
    expect(upstream(decision)).toMatchObject({ 'x-auth-key-id': TRONEXUS_KEY_ID, 'x-auth-subject': 'my-service', 'x-tenant-id': MY_APP });
    const wrong = await check(policy, { path: '/apps', ...client(bearer(`${TRONEXUS_KEY.slice(0, -1)}B`)) });
    expect(wrong).toMatchObject({ status: 401, reason: 'invalid_api_key' });
  });

  it('the unauthenticated Tronexus endpoints pass through (Tronexus checks refresh tokens and keys itself)', async () => {
    for (const [method, p] of [['GET', '/oauth/google/callback'], ['POST', '/auth/refresh'], ['POST', '/apikeys/verify']]) {
      allowed(await check(policy, { method, path: p, ...client() }));
    }
    allowed(await check(policy, { path: '/oauth/google', query: 'app_id=43d8b05c-2eaf-4077-9ee1-3602ba8901de', ...client() }));
  });

  it('GET /oauth/google requires the app_id query parameter (a UUID): 400 otherwise', async () => {
    const missing = await check(policy, { path: '/oauth/google', ...client() });
    expect(missing).toMatchObject({ allowed: false, status: 400, code: 'BAD_REQUEST', reason: 'missing_query_parameter' });
    expect(await check(policy, { path: '/oauth/google', query: 'redirect=x', ...client() })).toMatchObject({ status: 400, reason: 'missing_query_parameter' });
    expect(await check(policy, { path: '/oauth/google', query: 'app_id=my-app', ...client() })).toMatchObject({ status: 400, reason: 'invalid_query_parameter' });
  });
});

describe('seed 004: examples/seed-004-tronexus.yaml — per-IP sliding window, lockout, bans', () => {
  it('20 per 60 s per IP per endpoint; the 21st is a 429; 10 violations lock the IP out of the endpoint for 15 min', async () => {
    const runtime = testRuntime({ env: { ...TEST_ENV } });
    try {
      const policy = compileExample(runtime);
      await policy.ready;
      const ip = '203.0.113.50';
      const refresh = { method: 'POST', path: '/auth/refresh', ...from(ip) };
      for (let i = 0; i < 20; i++) allowed(await check(policy, refresh));
      const limited = await check(policy, refresh);
      expect(limited).toMatchObject({ allowed: false, status: 429, code: 'RATE_LIMITED', reason: 'rate_limited', body: '{"detail":"Rate limit exceeded"}' });
      expect(denialHeader(limited, 'retry-after')).toBe('60');

      // Per endpoint: the same IP still reaches another endpoint; per IP: another IP is unaffected.
      allowed(await check(policy, { method: 'POST', path: '/apikeys/verify', ...from(ip) }));
      allowed(await check(policy, { method: 'POST', path: '/auth/refresh', ...from('203.0.113.51') }));
      // Authenticated routes count too.
      const token = await accessToken(runtime);
      for (let i = 0; i < 20; i++) allowed(await check(policy, { path: '/auth/me', ...from(ip, { authorization: `Bearer ${token}` }) }));
      expect(await check(policy, { path: '/auth/me', ...from(ip, { authorization: `Bearer ${token}` }) })).toMatchObject({ status: 429, reason: 'rate_limited' });

      // Violations 2..9 are plain refusals, the 10th locks the IP out of /auth/refresh for 15 minutes.
      runtime.clock.advance(1_000);
      for (let i = 2; i <= 9; i++) expect(await check(policy, refresh), `violation ${i}`).toMatchObject({ status: 429, reason: 'rate_limited' });
      const locked = await check(policy, refresh);
      expect(locked).toMatchObject({ status: 429, reason: 'locked_out', body: '{"detail":"Too many requests: temporarily locked out"}' });
      expect(denialHeader(locked, 'retry-after')).toBe('900');

      // The window empties after 60 s, the lockout does not.
      runtime.clock.advance(120_000);
      const still = await check(policy, refresh);
      expect(still).toMatchObject({ status: 429, reason: 'locked_out' });
      expect(denialHeader(still, 'retry-after')).toBe('780');
      // /health is exempt from every limit.
      for (let i = 0; i < 50; i++) allowed(await check(policy, { path: '/health', ...from(ip) }));

      runtime.clock.advance(780_000);
      allowed(await check(policy, refresh));
    } finally {
      await runtime.resources.closeAll();
    }
  });

  it('"Permanent bans for repeat offenders": the 3rd lockout within 24h bans the IP permanently, listed by bans list', async () => {
    const runtime = testRuntime({ env: { ...TEST_ENV } });
    try {
      const policy = compileExample(runtime);
      await policy.ready;
      const ip = '203.0.113.150';
      const refresh = { method: 'POST', path: '/auth/refresh', ...from(ip) };
      const lockOut = async () => {
        for (let i = 0; i < 20; i++) allowed(await check(policy, refresh));
        for (let i = 1; i <= 9; i++) expect(await check(policy, refresh)).toMatchObject({ reason: 'rate_limited' });
        expect(await check(policy, refresh)).toMatchObject({ status: 429, reason: 'locked_out' });
        runtime.clock.advance(15 * 60_000 + 1_000);
      };
      await lockOut();
      await lockOut();
      allowed(await check(policy, { path: '/health', ...from(ip) }));
      await lockOut();
      // Banned everywhere at once, /health included (the ban file is written in the background).
      const banned = await check(policy, { path: '/health', ...from(ip) });
      expect(banned).toMatchObject({ status: 429, reason: 'banned', body: '{"detail":"Banned"}' });
      const deadline = Date.now() + 5000;
      let listed = '';
      while (!listed.includes(`ip:${ip}`) && Date.now() < deadline) {
        listed = (await cli(['bans', 'list', '--config', policyFile], { ...TEST_ENV })).out;
        await new Promise((r) => setTimeout(r, 25));
      }
      expect(listed).toMatch(new RegExp(`^ip:${ip.replaceAll('.', '\\.')}\tpermanent\tsince \\S+ by portcullis\t3 lockouts within 24h \\(rate-limit policy per-ip-endpoint\\)\t3 offences`, 'm'));
      expect((await cli(['bans', 'remove', `ip:${ip}`, '--config', policyFile], { ...TEST_ENV })).code).toBe(0);
    } finally {
      await runtime.resources.closeAll();
    }
  });

  it('"Adjust thresholds via .env variables": limits, windows and lockouts come from the environment', async () => {
    const env = { ...TEST_ENV, RATE_LIMIT_REQUESTS: '5', RATE_LIMIT_WINDOW: '10s', RATE_LIMIT_LOCKOUT_AFTER: '2', RATE_LIMIT_LOCKOUT_DURATION: '1m' };
    const runtime = testRuntime({ env });
    try {
      const policy = compileExample(runtime);
      await policy.ready;
      const refresh = { method: 'POST', path: '/auth/refresh', ...from('198.51.100.150') };
      for (let i = 0; i < 5; i++) allowed(await check(policy, refresh));
      const limited = await check(policy, refresh);
      expect(limited).toMatchObject({ status: 429, reason: 'rate_limited' });
      expect(denialHeader(limited, 'retry-after')).toBe('10');
      const locked = await check(policy, refresh);
      expect(locked).toMatchObject({ status: 429, reason: 'locked_out' });
      expect(denialHeader(locked, 'retry-after')).toBe('60');
    } finally {
      await runtime.resources.closeAll();
    }
    // A value that is not a number names the variable and the field, never the value.
    const bad = await cli(['validate', '--config', policyFile], { ...TEST_ENV, RATE_LIMIT_REQUESTS: 'twenty-s3cret' });
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('RATE_LIMIT_REQUESTS');
    expect(bad.err).toContain('limit');
    expect(bad.err).not.toContain('twenty-s3cret');
  });

  it('a banned IP (portcullis bans add --config) gets 429 banned everywhere, /health included', async () => {
    const runtime = testRuntime({ env: { ...TEST_ENV } });
    try {
      const policy = compileExample(runtime);
      await policy.ready;
      const token = await accessToken(runtime);
      for (const init of [
        { path: '/health', ...from(BANNED_IP) },
        { method: 'POST', path: '/auth/refresh', ...from(BANNED_IP) },
        { path: '/auth/me', ...from(BANNED_IP, { authorization: `Bearer ${token}` }) },
        // Bans come before identification: no credential, a bad token, an unmatched path.
        { path: '/auth/me', ...from(BANNED_IP) },
        { path: '/auth/me', ...from(BANNED_IP, { authorization: 'Bearer a.b.c' }) },
        { path: '/no/such/route', ...from(BANNED_IP) },
      ]) {
        const decision = await check(policy, init);
        expect(decision, init.path).toMatchObject({ allowed: false, status: 429, reason: 'banned' });
        expect(denialHeader(decision, 'retry-after')).toBeUndefined();
      }
      allowed(await check(policy, { path: '/auth/me', ...from('192.0.2.67', { authorization: `Bearer ${token}` }) }));
    } finally {
      await runtime.resources.closeAll();
    }
  });

  it('failed authentication attempts count against the per-IP limit (credential guessing is slowed down)', async () => {
    const runtime = testRuntime({ env: { ...TEST_ENV } });
    try {
      const policy = compileExample(runtime);
      await policy.ready;
      const guesser = '198.51.100.99';
      for (let i = 0; i < 20; i++) {
        const d = await check(policy, { path: '/auth/me', ...from(guesser, { authorization: `Bearer guess.${i}.x` }) });
        expect(d).toMatchObject({ allowed: false, status: 401 });
      }
      const token = await accessToken(runtime);
      // The 21st request in the window is refused before its (valid) token is even looked at.
      expect(await check(policy, { path: '/auth/me', ...from(guesser, { authorization: `Bearer ${token}` }) })).toMatchObject({ status: 429, reason: 'rate_limited' });
      allowed(await check(policy, { path: '/auth/me', ...from('198.51.100.100', { authorization: `Bearer ${token}` }) }));
    } finally {
      await runtime.resources.closeAll();
    }
  });

  it('a key past its expiry is refused with 401 key_expired', async () => {
    const runtime = testRuntime({ env: { ...TEST_ENV } });
    try {
      const policy = compileExample(runtime);
      await policy.ready;
      allowed(await check(policy, { path: '/apps', ...from('198.51.100.200', { authorization: `Bearer ${adminKey.key}` }) }));
      runtime.clock.advance(366 * 86_400_000);
      expect(await check(policy, { path: '/apps', ...from('198.51.100.200', { authorization: `Bearer ${adminKey.key}` }) })).toMatchObject({
        status: 401,
        reason: 'key_expired',
      });
    } finally {
      await runtime.resources.closeAll();
    }
  });
});

describe('seed 004 over the real gRPC server', () => {
  it('GET /oauth/google needs app_id; an access token reads its own app\'s roles only (both header encodings)', async () => {
    const runtime = testRuntime({ env: { ...TEST_ENV } });
    const server = await startTestServer(policyFile, { ...TEST_ENV });
    try {
      let ip = 0;
      for (const raw of [false, true]) {
        const headers = (extra: Record<string, string> = {}) => ({ 'x-forwarded-for': `192.0.2.${++ip}`, ...extra });
        const ok = await server.client.check({ path: `/oauth/google?app_id=${MY_APP}`, headers: headers(), raw });
        expect(ok.status?.code ?? 0, `raw=${raw}`).toBe(0);
        const missing = await server.client.check({ path: '/oauth/google', headers: headers(), raw });
        expect(httpStatusNumber(missing.denied_response?.status?.code)).toBe(400);
        expect(missing.denied_response!.body).toBe('{"detail":"app_id query parameter is required"}');
        expect(missing.status?.message).toBe('missing_query_parameter');
        const token = await accessToken(runtime, { app_id: OTHER_APP, roles: ['owner'] });
        const own = await server.client.check({ path: `/apps/${OTHER_APP}/roles`, headers: headers({ authorization: `Bearer ${token}` }), raw });
        expect(headerOf(own.ok_response?.headers, 'x-tenant-id')).toBe(OTHER_APP);
        const foreign = await server.client.check({ path: `/apps/${MY_APP}/roles`, headers: headers({ authorization: `Bearer ${token}` }), raw });
        expect(httpStatusNumber(foreign.denied_response?.status?.code)).toBe(403);
        expect(foreign.denied_response!.body).toBe('{"detail":"an access token only reads the roles of its own app"}');
        expect(foreign.status?.message).toBe('app_mismatch');
      }
    } finally {
      await server.close();
    }
  });
});
