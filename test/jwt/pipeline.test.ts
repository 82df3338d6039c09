// JWT through the whole pipeline: YAML policy → parsePolicy → compilePolicy → authorize, for the
// JWT parts of seeds 000/001 (Auth0 via discovery), 003 (Supabase, secret from the environment)
// and 004 (HS256 without iss, roles per app).

import { SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { isPromise, type Decision } from '../../src/types.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { sign, signingKey, startKeyServer, type KeyServer, type SigningKey } from './helpers.js';

const SUPABASE_SECRET = 'supabase-jwt-secret-for-the-pipeline-test-0123456789';
const TRONEXUS_SECRET = 'tronexus-access-token-secret-0123456789abcdef';
const APP = 'app-7f3c';

describe('JWT through compilePolicy + authorize', () => {
  const runtime = testRuntime({ env: { SUPABASE_JWT_SECRET: SUPABASE_SECRET, TRONEXUS_JWT_SECRET: TRONEXUS_SECRET } });
  runtime.clock.set(Date.UTC(2026, 0, 1));
  let auth0: KeyServer;
  let key: SigningKey;
  let policy: CompiledPolicy;
  const now = () => Math.floor(runtime.clock.now() / 1000);

  const check = async (path: string, headers: Record<string, string>, method = 'GET'): Promise<Decision> => {
    const decision = authorize(policy, request({ path, method, headers }));
    return isPromise(decision) ? await decision : decision;
  };
  const header = (decision: Decision, name: string) =>
    decision.allowed ? decision.upstreamHeaders.find((h) => h.name === name)?.value : decision.headers.find((h) => h.name === name)?.value;
  const auth0Token = (claims: JWTPayload = {}) =>
    sign(key, {
      iss: `${auth0.url}/`,
      aud: 'https://inventory.atrope.test',
      sub: 'auth0|user-1',
      'https://atrope.dev/claims/tenant_id': 'tenant-acme',
      'https://atrope.dev/claims/permissions': ['inventory:read'],
      iat: now(),
      exp: now() + 3600,
      ...claims,
    });
  const hs = (secret: string, claims: JWTPayload) => new SignJWT({ iat: now(), exp: now() + 900, ...claims }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));

  beforeAll(async () => {
    key = await signingKey('RS256', 'auth0-key');
    auth0 = await startKeyServer([key.publicJwk]);
    auth0.discoveredIssuer = `${auth0.url}/`;
    policy = compileYaml(
      `
realm: atrope
identity:
  - jwt: { issuers: [auth0, supabase, tronexus] }
issuers:
  auth0:
    issuer: ${auth0.url}/
    discovery: true
    audiences: [https://inventory.atrope.test]
    algorithms: [RS256]
    claims:
      tenant: https://atrope.dev/claims/tenant_id
      scopes: [https://atrope.dev/claims/permissions, scope]
  supabase:
    issuer: https://flotac.supabase.co/auth/v1
    secret: \${SUPABASE_JWT_SECRET}
    audiences: [authenticated]
    claims: { tenant: user_metadata.company_id }
    scopes: [flotac:api]
  tronexus:
    secret: \${TRONEXUS_JWT_SECRET}
    maxTokenAge: 1h
    claims:
      tenant: app_id
      roles: { claim: roles, appClaim: app_id, apps: { ${APP}: { admin: [users:read, users:write], user: [users:read] } } }
routes:
  - { match: { path: /health }, public: true }
  - { match: { path: "/v1/items/{id}", methods: [GET] }, require: { allOf: ["inventory:read"] } }
  - { match: { path: "/v1/items/{id}", methods: [PUT] }, require: { allOf: ["inventory:write"] } }
  - { match: { path: /v1/loads }, require: { allOf: ["flotac:api"] } }
  - { match: { pathPrefix: /v1/users/ }, require: { allOf: ["users:write"] } }
`,
      runtime,
    );
    await policy.ready;
  });

  afterAll(async () => {
    await runtime.resources.closeAll();
    await auth0.close();
  });

  it('allows an Auth0 token with the permission and sets the identity headers', async () => {
    const decision = await check('/v1/items/42', { authorization: `Bearer ${await auth0Token()}`, 'x-tenant-id': 'smuggled' });
    expect(decision.allowed).toBe(true);
    expect(header(decision, 'x-tenant-id')).toBe('tenant-acme');
    expect(header(decision, 'x-auth-subject')).toBe('auth0|user-1');
    expect(header(decision, 'x-auth-scopes')).toBe('inventory:read');
    expect(header(decision, 'x-auth-method')).toBe('jwt');
    expect(decision.allowed && decision.removeHeaders).not.toContain('authorization'); // bearer JWTs are forwarded
  });

  it('401 without a token, 403 without the permission, 401 token_expired with an invalid_token challenge', async () => {
    const none = await check('/v1/items/42', {});
    expect(none).toMatchObject({ allowed: false, status: 401, reason: 'missing_credential' });
    const write = await check('/v1/items/42', { authorization: `Bearer ${await auth0Token()}` }, 'PUT');
    expect(write).toMatchObject({ allowed: false, status: 403, reason: 'insufficient_scope' });
    const expired = await check('/v1/items/42', { authorization: `Bearer ${await auth0Token({ exp: now() - 60 })}` });
    expect(expired).toMatchObject({ allowed: false, status: 401, reason: 'token_expired' });
    expect(header(expired, 'www-authenticate')).toBe('Bearer realm="atrope", error="invalid_token"');
    expect(expired.allowed === false && JSON.parse(expired.body)).toMatchObject({ code: 'UNAUTHORIZED', reason: 'token_expired' });
  });

  it('seed 003: a Supabase token needs its company (403 missing_tenant without it)', async () => {
    const claims = { iss: 'https://flotac.supabase.co/auth/v1', aud: 'authenticated', sub: 'u-3' };
    const ok = await check('/v1/loads', { authorization: `Bearer ${await hs(SUPABASE_SECRET, { ...claims, user_metadata: { company_id: 'co-9' } })}` });
    expect(ok.allowed).toBe(true);
    expect(header(ok, 'x-tenant-id')).toBe('co-9');
    const noCompany = await check('/v1/loads', { authorization: `Bearer ${await hs(SUPABASE_SECRET, { ...claims, user_metadata: {} })}` });
    expect(noCompany).toMatchObject({ allowed: false, status: 403, reason: 'missing_tenant' });
  });

  it('seed 004: roles of the token app become scopes; too old a token is refused', async () => {
    const admin = await check('/v1/users/u-1', { authorization: `Bearer ${await hs(TRONEXUS_SECRET, { sub: 'u-1', app_id: APP, roles: ['admin'] })}` }, 'POST');
    expect(admin.allowed).toBe(true);
    expect(header(admin, 'x-auth-scopes')).toBe('users:read users:write');
    const user = await check('/v1/users/u-1', { authorization: `Bearer ${await hs(TRONEXUS_SECRET, { sub: 'u-2', app_id: APP, roles: ['user'] })}` }, 'POST');
    expect(user).toMatchObject({ allowed: false, status: 403, reason: 'insufficient_scope' });
    const old = await hs(TRONEXUS_SECRET, { sub: 'u-1', app_id: APP, roles: ['admin'], iat: now() - 7200, exp: now() + 60 });
    expect(await check('/v1/users/u-1', { authorization: `Bearer ${old}` }, 'POST')).toMatchObject({ allowed: false, status: 401, reason: 'token_too_old' });
  });

  it('hostile tokens come back as 401 with their reason', async () => {
    const forged = `${(await auth0Token()).split('.').slice(0, 2).join('.')}.`;
    expect(await check('/v1/items/1', { authorization: `Bearer ${forged}` })).toMatchObject({ status: 401, reason: 'invalid_signature' });
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${(await auth0Token()).split('.')[1]}.`;
    expect(await check('/v1/items/1', { authorization: `Bearer ${none}` })).toMatchObject({ status: 401, reason: 'unsupported_algorithm' });
    expect(await check('/v1/items/1', { authorization: 'Bearer a, Bearer b' })).toMatchObject({ status: 401, reason: 'malformed_credential' });
  });

  it('a repeated token is decided synchronously (no promise on the hot path)', async () => {
    const token = await auth0Token({ jti: 'hot' });
    await check('/v1/items/1', { authorization: `Bearer ${token}` });
    const decision = authorize(policy, request({ path: '/v1/items/1', headers: { authorization: `Bearer ${token}` } }));
    expect(isPromise(decision)).toBe(false);
    expect(decision).toMatchObject({ allowed: true });
  });

  it('fails closed with 503 jwks_unavailable when an issuer never delivered keys', async () => {
    const down = testRuntime();
    const dead = compileYaml(
      `
identity: [{ jwt: { issuers: [idp] } }]
issuers:
  idp: { issuer: https://idp.example.test/, jwksUri: "http://127.0.0.1:9/jwks.json", audiences: [api], waitForKeys: false, jwksTimeout: 500ms }
default: authenticated
requireTenant: false
`,
      down,
    );
    try {
      const token = await sign(key, { iss: 'https://idp.example.test/', aud: 'api', exp: Math.floor(down.clock.now() / 1000) + 60 });
      const run = authorize(dead, request({ headers: { authorization: `Bearer ${token}` } }));
      const decision = isPromise(run) ? await run : run;
      expect(decision).toMatchObject({ allowed: false, status: 503, reason: 'jwks_unavailable' });
      expect(header(decision, 'retry-after')).toBeDefined();
    } finally {
      await down.resources.closeAll();
    }
  });
});
