// Seed 000 (Atrope) through examples/seed-000-atrope.yaml and examples/seed-000-atrope-dev.yaml:
// Auth0 RS256 tokens with namespaced tenant/permission claims, one permission per endpoint,
// strict tenant isolation, and a dev mode that exists only without issuers. The Auth0 tenant is a
// local discovery + JWKS server (the issuer URL is substituted in the policy text).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { PolicyError } from '../../src/errors.js';
import { sign, signingKey, type SigningKey } from '../jwt/helpers.js';
import type { RequestInit } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { allowed, body, check, cli, denialHeader, denied, readExample, startIdp, substitute, tempDir, upstream, type LocalIdp } from './helpers.js';

const AUTH0 = 'https://atrope.eu.auth0.com/';
const AUDIENCE = 'https://api.atrope.dev';
const TENANT = '6f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b';
const NS = 'https://atrope.dev/claims/';

describe('seed 000: examples/seed-000-atrope.yaml', () => {
  const runtime = testRuntime();
  let idp: LocalIdp;
  let key: SigningKey;
  let policy: CompiledPolicy;
  const now = () => Math.floor(runtime.clock.now() / 1000);

  const token = (claims: JWTPayload = {}, signer: SigningKey = key) =>
    sign(signer, {
      iss: `${idp.url}/`,
      aud: AUDIENCE,
      sub: 'auth0|user-1',
      [`${NS}tenant_id`]: TENANT,
      [`${NS}permissions`]: ['inventory:read'],
      iat: now(),
      exp: now() + 3600,
      ...claims,
    });
  const bearer = async (claims: JWTPayload = {}) => ({ authorization: `Bearer ${await token(claims)}` });
  const withPermissions = (...permissions: string[]) => bearer({ [`${NS}permissions`]: permissions });

  beforeAll(async () => {
    key = await signingKey('RS256', 'atrope-2026');
    idp = await startIdp([key.publicJwk]);
    policy = compileYaml(substitute(readExample('seed-000-atrope.yaml'), AUTH0, `${idp.url}/`), runtime);
    await policy.ready;
  });

  afterAll(async () => {
    await runtime.resources.closeAll();
    await idp.close();
  });

  it('allows a token with the endpoint permission and sends the tenant, subject, permissions and method upstream', async () => {
    const decision = allowed(await check(policy, { path: '/v1/balances/wh-1', headers: { ...(await bearer()), 'x-tenant-id': 'someone-else' } }));
    expect(upstream(decision)).toEqual({
      'x-tenant-id': TENANT,
      'x-auth-subject': 'auth0|user-1',
      'x-auth-scopes': 'inventory:read',
      'x-auth-method': 'jwt',
    });
    // The smuggled x-tenant-id is overwritten (set upstream), the other owned headers are removed,
    // and the Bearer token is forwarded.
    expect(decision.removeHeaders).toEqual(expect.arrayContaining(['x-auth-key-id', 'x-auth-email']));
    expect(decision.removeHeaders).not.toContain('authorization');
    expect(decision.route).toBe('balances');
  });

  // [method, path, the one permission it needs]
  const endpoints: [string, string, string][] = [
    ['GET', '/v1/balances', 'inventory:read'],
    ['GET', '/v1/ledger/entries', 'inventory:read'],
    ['GET', '/v1/lots/L-1', 'inventory:read'],
    ['GET', '/v1/serials/S-1', 'inventory:read'],
    ['POST', '/v1/adjustments', 'inventory:write'],
    ['POST', '/v1/transfers/', 'inventory:write'],
    ['GET', '/v1/transfers/T-1', 'inventory:read'],
    ['GET', '/v1/items', 'catalog:read'],
    ['HEAD', '/v1/uoms/each', 'catalog:read'],
    ['GET', '/v1/facilities/F-1', 'catalog:read'],
    ['POST', '/v1/items', 'catalog:write'],
    ['PATCH', '/v1/items/42', 'catalog:write'],
    ['GET', '/v1/purchase-orders/PO-1', 'procurement:read'],
    ['GET', '/v1/receipts', 'procurement:read'],
    ['POST', '/v1/purchase-orders', 'procurement:write'],
    ['POST', '/v1/receipts/R-1/lines', 'procurement:write'],
    ['GET', '/v1/sales-orders', 'sales:read'],
    ['PUT', '/v1/sales-orders/SO-1', 'sales:write'],
  ];

  it.each(endpoints)('%s %s needs %s (and nothing else grants it)', async (method, path, permission) => {
    allowed(await check(policy, { method, path, headers: await withPermissions(permission) }));
    const others = ['inventory:read', 'inventory:write', 'catalog:read', 'catalog:write', 'procurement:read', 'procurement:write', 'sales:read', 'sales:write'].filter((p) => p !== permission);
    const refused = await check(policy, { method, path, headers: await withPermissions(...others) });
    expect(refused).toMatchObject({ allowed: false, status: 403, code: 'FORBIDDEN', reason: 'insufficient_scope' });
    expect(denialHeader(refused, 'www-authenticate')).toBe(`Bearer realm="atrope", error="insufficient_scope", scope="${permission}"`);
  });

  it('reads permissions from the standard scope claim too', async () => {
    const decision = await check(policy, { method: 'POST', path: '/v1/transfers', headers: await bearer({ [`${NS}permissions`]: undefined, scope: 'openid inventory:write' }) });
    expect(upstream(decision)['x-auth-scopes']).toBe('openid inventory:write');
  });

  it('strict tenant isolation: a token without the tenant claim is refused with 403 missing_tenant', async () => {
    const decision = await check(policy, { path: '/v1/balances', headers: await bearer({ [`${NS}tenant_id`]: undefined }) });
    expect(decision).toMatchObject({ allowed: false, status: 403, reason: 'missing_tenant' });
    expect(body(decision)).toMatchObject({ error: 'Forbidden', code: 'FORBIDDEN', status: 403, reason: 'missing_tenant' });
  });

  it('the tenant claim is read under the namespace only: an un-namespaced tenant_id is not a tenant', async () => {
    const decision = await check(policy, { path: '/v1/balances', headers: await bearer({ [`${NS}tenant_id`]: undefined, tenant_id: TENANT }) });
    expect(decision).toMatchObject({ status: 403, reason: 'missing_tenant' });
  });

  it('401 without a token (bare challenge) and for every invalid token (error="invalid_token")', async () => {
    const none = await check(policy, { path: '/v1/items' });
    expect(none).toMatchObject({ allowed: false, status: 401, reason: 'missing_credential' });
    expect(denialHeader(none, 'www-authenticate')).toBe('Bearer realm="atrope"');
    expect(body(none)).toMatchObject({ error: 'Unauthorized', code: 'UNAUTHORIZED', status: 401 });

    const other = await signingKey('RS256', 'atrope-2026'); // same kid, another key: a forgery
    const cases: [Record<string, string>, string][] = [
      [await bearer({ exp: now() - 120 }), 'token_expired'],
      [await bearer({ aud: 'https://api.other.dev' }), 'invalid_audience'],
      [await bearer({ iss: 'https://evil.eu.auth0.com/' }), 'unknown_issuer'],
      [{ authorization: `Bearer ${await token({}, other)}` }, 'invalid_signature'],
      [
        { authorization: `Bearer ${await new SignJWT({ iss: `${idp.url}/`, aud: AUDIENCE, exp: now() + 60, [`${NS}tenant_id`]: TENANT }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode('x'.repeat(32)))}` },
        'unsupported_algorithm',
      ],
      [{ authorization: 'Bearer not-a-jwt' }, 'invalid_token'],
    ];
    for (const [headers, reason] of cases) {
      const decision = await check(policy, { path: '/v1/balances', headers });
      expect(decision, reason).toMatchObject({ allowed: false, status: 401, reason });
      expect(denialHeader(decision, 'www-authenticate')).toBe('Bearer realm="atrope", error="invalid_token"');
    }
  });

  it('/health is public; unknown paths are denied (401 without a token, 403 route_not_allowed with one)', async () => {
    const health = allowed(await check(policy, { path: '/health', headers: { 'x-tenant-id': 'smuggled' } }));
    expect(health.upstreamHeaders).toEqual([]);
    expect(health.removeHeaders).toContain('x-tenant-id');
    expect(await check(policy, { path: '/v2/anything' })).toMatchObject({ status: 401, reason: 'missing_credential' });
    expect(await check(policy, { path: '/v2/anything', headers: await bearer() })).toMatchObject({ status: 403, reason: 'route_not_allowed' });
  });
});

describe('seed 000: examples/seed-000-atrope-dev.yaml (mode: dev)', () => {
  const runtime = testRuntime();
  const DEV_TENANT = '00000000-0000-4000-8000-000000000001';
  let policy: CompiledPolicy;

  beforeAll(() => {
    policy = compileYaml(readExample('seed-000-atrope-dev.yaml'), runtime);
  });
  afterAll(() => runtime.resources.closeAll());

  it('accepts any request, with or without a token, as the dev tenant and user', async () => {
    const requests: RequestInit[] = [
      { path: '/v1/balances' },
      { method: 'POST', path: '/v1/sales-orders', headers: { authorization: 'Bearer whatever' } },
      { method: 'DELETE', path: '/v2/not-a-route', headers: { 'x-tenant-id': 'another-tenant', 'x-auth-method': 'jwt' } },
    ];
    for (const init of requests) {
      const decision = allowed(await check(policy, init));
      expect(upstream(decision)).toEqual({
        'x-tenant-id': DEV_TENANT,
        'x-auth-subject': 'dev-user',
        'x-auth-scopes': 'inventory:read inventory:write catalog:read catalog:write procurement:read procurement:write sales:read sales:write',
        'x-auth-method': 'dev',
      });
      expect(decision.principal).toMatchObject({ method: 'dev', tenant: DEV_TENANT });
    }
  });

  it('warns at every load that everything is allowed', () => {
    expect(policy.warnings.join('\n')).toContain('mode is dev: EVERY request is allowed');
  });

  it('is refused as soon as an issuer is configured (dev mode only without Auth0 settings)', async () => {
    const withIssuer = `${readExample('seed-000-atrope-dev.yaml')}
issuers:
  auth0: { issuer: https://atrope.eu.auth0.com/, discovery: true, audiences: [https://api.atrope.dev] }
`;
    let error: unknown;
    try {
      compileYaml(withIssuer, testRuntime());
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(PolicyError);
    expect((error as PolicyError).message).toContain('mode: dev is refused while JWT issuers are configured');

    const tmp = tempDir('pc-seed000-');
    try {
      const file = path.join(tmp.dir, 'dev-with-issuer.yaml');
      writeFileSync(file, withIssuer);
      const result = await cli(['validate', '--config', file]);
      expect(result.code).toBe(1);
      expect(result.err).toContain('mode: dev is refused while JWT issuers are configured');
    } finally {
      tmp.cleanup();
    }
  });
});
