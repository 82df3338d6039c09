// Shared-secret (HS256/384/512) issuers: Supabase (seed 003: user_metadata.company_id, cookie) and
// a self-hosted issuer whose tokens carry no iss, with roles per application (seed 004).

import { createHmac } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import type { CredentialSource } from '../../src/identity/source.js';
import { testRuntime } from '../support/runtime.js';
import { request } from '../support/request.js';
import { b64, bearer, identify, mustCompile, outcome } from './helpers.js';

const SUPABASE_ISS = 'https://xyzcompany.supabase.co/auth/v1';
const SUPABASE_SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';
const TRONEXUS_SECRET = 'tronexus-hs256-signing-secret-0123456789abcdef';
const APP = '43d8b05c-2eaf-4077-9ee1-3602ba8901de';

const hs = (secret: string, claims: JWTPayload, alg = 'HS256', header: Record<string, unknown> = {}) =>
  new SignJWT(claims).setProtectedHeader({ alg, typ: 'JWT', ...header }).sign(new TextEncoder().encode(secret));

describe('shared-secret issuers', () => {
  let runtime: ReturnType<typeof testRuntime>;
  let source: CredentialSource;
  const now = () => Math.floor(runtime.clock.now() / 1000);
  const supabaseClaims = (extra: JWTPayload = {}): JWTPayload => ({
    iss: SUPABASE_ISS,
    aud: 'authenticated',
    role: 'authenticated',
    sub: 'b1a7c1c4-user',
    email: 'ops@flotac.test',
    user_metadata: { company_id: 'company-7' },
    iat: now(),
    exp: now() + 3600,
    ...extra,
  });
  const tronexusClaims = (extra: JWTPayload = {}): JWTPayload => ({ sub: 'user-uuid', app_id: APP, roles: ['admin', 'user'], iat: now(), exp: now() + 900, ...extra });

  beforeEach(() => {
    runtime = testRuntime();
    source = mustCompile(
      {
        identity: [{ jwt: { issuers: ['supabase', 'tronexus'], from: [{ header: 'authorization', scheme: 'Bearer' }, { cookie: 'sb-access-token' }] } }],
        issuers: {
          supabase: { issuer: SUPABASE_ISS, secret: SUPABASE_SECRET, audiences: ['authenticated'], claims: { tenant: 'user_metadata.company_id' }, scopes: ['flotac:api'] },
          tronexus: {
            secret: TRONEXUS_SECRET,
            requiredClaims: ['sub', 'app_id'],
            claims: {
              tenant: 'app_id',
              roles: { claim: 'roles', appClaim: 'app_id', apps: { [APP]: { admin: ['users:read', 'users:write', 'roles:write'], user: ['users:read'] } } },
            },
          },
        },
      },
      runtime,
    );
  });

  it('verifies a Supabase token: tenant from user_metadata.company_id, email, static scopes', async () => {
    const result = await identify(source, bearer(await hs(SUPABASE_SECRET, supabaseClaims())));
    expect(result).toMatchObject({
      kind: 'principal',
      principal: { method: 'jwt', issuer: 'supabase', tenant: 'company-7', subject: 'b1a7c1c4-user', email: 'ops@flotac.test', scopes: ['flotac:api'] },
    });
  });

  it('takes the Supabase token from its cookie too', async () => {
    const token = await hs(SUPABASE_SECRET, supabaseClaims());
    const result = await identify(source, request({ headers: { cookie: `theme=dark; sb-access-token=${token}; other=1` } }));
    expect(result).toMatchObject({ kind: 'principal', principal: { tenant: 'company-7' } });
  });

  it('leaves the tenant undefined when company_id is missing (the route decides missing_tenant)', async () => {
    const result = await identify(source, bearer(await hs(SUPABASE_SECRET, supabaseClaims({ user_metadata: {} }))));
    expect(result).toMatchObject({ kind: 'principal' });
    expect(result.kind === 'principal' && result.principal.tenant).toBeUndefined();
  });

  it('maps seed 004 roles of the token application to scopes; a token without iss goes to the issuer without one', async () => {
    const admin = await identify(source, bearer(await hs(TRONEXUS_SECRET, tronexusClaims())));
    expect(admin).toMatchObject({ kind: 'principal', principal: { issuer: 'tronexus', tenant: APP, subject: 'user-uuid', scopes: ['users:read', 'users:write', 'roles:write'] } });
    const user = await identify(source, bearer(await hs(TRONEXUS_SECRET, tronexusClaims({ roles: ['user'] }))));
    expect(user).toMatchObject({ kind: 'principal', principal: { scopes: ['users:read'] } });
    const otherApp = await identify(source, bearer(await hs(TRONEXUS_SECRET, tronexusClaims({ app_id: 'another-app' }))));
    expect(otherApp).toMatchObject({ kind: 'principal', principal: { tenant: 'another-app', scopes: [] } });
  });

  it('requires the configured claims', async () => {
    const { app_id: _app, ...withoutApp } = tronexusClaims();
    expect(await outcome(source, bearer(await hs(TRONEXUS_SECRET, withoutApp)))).toBe('missing_claim');
  });

  it('refuses a wrong secret, a swapped issuer secret, a disallowed HS variant, alg none', async () => {
    expect(await outcome(source, bearer(await hs('an-entirely-different-secret-of-enough-length', supabaseClaims())))).toBe('invalid_signature');
    // Each issuer verifies with its own secret only.
    expect(await outcome(source, bearer(await hs(TRONEXUS_SECRET, supabaseClaims())))).toBe('invalid_signature');
    expect(await outcome(source, bearer(await hs(SUPABASE_SECRET, tronexusClaims())))).toBe('invalid_signature');
    expect(await outcome(source, bearer(await hs(SUPABASE_SECRET, supabaseClaims(), 'HS512')))).toBe('unsupported_algorithm');
    expect(await outcome(source, bearer(`${b64({ alg: 'none' })}.${b64(supabaseClaims())}.`))).toBe('unsupported_algorithm');
  });

  it('refuses an RS256 token that claims a secret issuer', async () => {
    const input = `${b64({ alg: 'RS256' })}.${b64(supabaseClaims())}`;
    const token = `${input}.${createHmac('sha256', SUPABASE_SECRET).update(input).digest('base64url')}`;
    expect(await outcome(source, bearer(token))).toBe('unsupported_algorithm');
  });

  it('refuses an unknown iss and a non-string iss without touching any key', async () => {
    expect(await outcome(source, bearer(await hs(SUPABASE_SECRET, supabaseClaims({ iss: 'https://other.supabase.co/auth/v1' }))))).toBe('unknown_issuer');
    expect(await outcome(source, bearer(await hs(SUPABASE_SECRET, supabaseClaims({ iss: 42 as unknown as string }))))).toBe('unknown_issuer');
  });

  it('accepts HS384 and HS512 only where allowed and the secret is long enough', async () => {
    const secret = 'x'.repeat(64);
    const hs512 = mustCompile(
      { identity: [{ jwt: { issuers: ['internal'] } }], issuers: { internal: { issuer: 'internal', secret, algorithms: ['HS384', 'HS512'] } } },
      runtime,
    );
    const claims = { iss: 'internal', exp: now() + 60 };
    expect(await outcome(hs512, bearer(await hs(secret, claims, 'HS512')))).toBe('principal');
    expect(await outcome(hs512, bearer(await hs(secret, claims, 'HS384')))).toBe('principal');
    expect(await outcome(hs512, bearer(await hs(secret, claims, 'HS256')))).toBe('unsupported_algorithm');
  });

  it('decodes base64 secrets', async () => {
    const raw = Buffer.from('0123456789abcdef0123456789abcdef0123456789');
    const based = mustCompile(
      { identity: [{ jwt: { issuers: ['b'] } }], issuers: { b: { issuer: 'b', secret: raw.toString('base64'), secretEncoding: 'base64' } } },
      runtime,
    );
    const token = await new SignJWT({ iss: 'b', exp: now() + 60 }).setProtectedHeader({ alg: 'HS256' }).sign(raw);
    expect(await outcome(based, bearer(token))).toBe('principal');
  });
});
