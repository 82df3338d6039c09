// Seed 001 (KtrlPlane) through examples/seed-001-ktrlplane.yaml: Auth0 JWKS signature, expiry and
// audience; subject and email extracted; access:platform required; 401 for a missing or invalid
// token, 403 for a valid token without the scope. Auth0 is a local JWKS server (issuer URL
// substituted in the policy text).
import type { JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { sign, signingKey, type SigningKey } from '../jwt/helpers.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { allowed, body, check, denialHeader, readExample, startIdp, substitute, upstream, type LocalIdp } from './helpers.js';

const AUTH0 = 'https://ktrlplane.eu.auth0.com/';
const AUDIENCE = 'https://api.ktrlplane.konnektr.io';

describe('seed 001: examples/seed-001-ktrlplane.yaml', () => {
  const runtime = testRuntime();
  let idp: LocalIdp;
  let key: SigningKey;
  let policy: CompiledPolicy;
  const now = () => Math.floor(runtime.clock.now() / 1000);

  const token = (claims: JWTPayload = {}, signer: SigningKey = key) =>
    sign(signer, {
      iss: `${idp.url}/`,
      aud: [AUDIENCE, `${idp.url}/userinfo`],
      sub: 'google-oauth2|1029384756',
      email: 'ada@konnektr.io',
      scope: 'openid profile email access:platform',
      iat: now(),
      exp: now() + 3600,
      ...claims,
    });
  const bearer = async (claims: JWTPayload = {}, signer?: SigningKey) => ({ authorization: `Bearer ${await token(claims, signer)}` });

  beforeAll(async () => {
    key = await signingKey('RS256', 'ktrl-1');
    idp = await startIdp([key.publicJwk]);
    policy = compileYaml(substitute(readExample('seed-001-ktrlplane.yaml'), AUTH0, `${idp.url}/`), runtime);
    await policy.ready;
  });

  afterAll(async () => {
    await runtime.resources.closeAll();
    await idp.close();
  });

  it('a valid token with access:platform is allowed; subject and email go upstream, no tenant is needed', async () => {
    const decision = allowed(await check(policy, { path: '/api/v1/projects', headers: { ...(await bearer()), 'x-tenant-id': 'smuggled' } }));
    expect(upstream(decision)).toEqual({
      'x-auth-subject': 'google-oauth2|1029384756',
      'x-auth-scopes': 'openid profile email access:platform',
      'x-auth-method': 'jwt',
      'x-auth-email': 'ada@konnektr.io',
    });
    expect(decision.removeHeaders).toContain('x-tenant-id'); // no tenant: a smuggled one is removed
  });

  it('Auth0 RBAC permissions (array claim) grant the scope as well; the email is optional', async () => {
    const decision = await check(policy, { method: 'POST', path: '/api/v1/resources', headers: await bearer({ scope: undefined, email: undefined, permissions: ['access:platform'] }) });
    expect(upstream(decision)).toEqual({ 'x-auth-subject': 'google-oauth2|1029384756', 'x-auth-scopes': 'access:platform', 'x-auth-method': 'jwt' });
  });

  it('401 for a missing token', async () => {
    const decision = await check(policy, { path: '/api/v1/projects' });
    expect(decision).toMatchObject({ allowed: false, status: 401, reason: 'missing_credential' });
    expect(denialHeader(decision, 'www-authenticate')).toBe('Bearer realm="ktrlplane"');
  });

  it('401 invalid_token for a bad signature, an expired token, a wrong audience, a token without exp', async () => {
    const stranger = await signingKey('RS256', 'ktrl-1');
    const cases: [Record<string, string>, string][] = [
      [await bearer({}, stranger), 'invalid_signature'],
      [await bearer({ exp: now() - 3600 }), 'token_expired'],
      [await bearer({ aud: 'https://api.other.io' }), 'invalid_audience'],
      [await bearer({ exp: undefined }), 'missing_claim'],
      [{ authorization: `Bearer ${flipMiddle(await token())}` }, 'invalid_signature'], // one signature character changed
    ];
    for (const [headers, reason] of cases) {
      const decision = await check(policy, { path: '/api/v1/projects', headers });
      expect(decision, reason).toMatchObject({ allowed: false, status: 401, code: 'UNAUTHORIZED', reason });
      expect(denialHeader(decision, 'www-authenticate')).toBe('Bearer realm="ktrlplane", error="invalid_token"');
    }
  });

  it('403 insufficient_scope for a valid token without access:platform', async () => {
    const decision = await check(policy, { path: '/api/v1/billing', headers: await bearer({ scope: 'openid profile email' }) });
    expect(decision).toMatchObject({ allowed: false, status: 403, reason: 'insufficient_scope' });
    expect(denialHeader(decision, 'www-authenticate')).toBe('Bearer realm="ktrlplane", error="insufficient_scope", scope="access:platform"');
    expect(body(decision)).toMatchObject({ error: 'Forbidden', code: 'FORBIDDEN', status: 403 });
  });

  it('picks up a rotated Auth0 signing key (new kid) without a restart', async () => {
    const next = await signingKey('RS256', 'ktrl-2');
    idp.keys = [key.publicJwk, next.publicJwk];
    // Used at once after it is published: the unknown kid refetches the key set (no cooldown gap).
    const decision = await check(policy, { path: '/api/v1/projects', headers: await bearer({}, next) });
    expect(upstream(decision)['x-auth-subject']).toBe('google-oauth2|1029384756');
  });

  it('paths outside the API are not allowed (401 / 403 route_not_allowed)', async () => {
    expect(await check(policy, { path: '/admin' })).toMatchObject({ status: 401, reason: 'missing_credential' });
    expect(await check(policy, { path: '/admin', headers: await bearer() })).toMatchObject({ status: 403, reason: 'route_not_allowed' });
  });
});

/** The token with one character in the middle of its signature changed (never a no-op: the end of a base64url signature can hold padding bits). */
function flipMiddle(token: string): string {
  const at = token.lastIndexOf('.') + Math.floor((token.length - token.lastIndexOf('.')) / 2);
  return token.slice(0, at) + (token[at] === 'A' ? 'B' : 'A') + token.slice(at + 1);
}
