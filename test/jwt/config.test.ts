// The policy syntax of issuers and jwt sources: defaults, and every rule with its message.

import { describe, expect, it } from 'vitest';
import { issuerSchema, jwtSourceSchema } from '../../src/jwt/config.js';
import { testRuntime } from '../support/runtime.js';
import { compileSource } from './helpers.js';

const SECRET = 's'.repeat(32);

function problems(input: Record<string, unknown>): string[] {
  const result = issuerSchema.safeParse(input);
  return result.success ? [] : result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('issuer schema', () => {
  it('fills defaults', () => {
    const jwks = issuerSchema.parse({ issuer: 'https://acme.auth0.com/', discovery: true, audiences: ['https://api'] });
    expect(jwks).toMatchObject({
      clockTolerance: 30_000,
      requiredClaims: [],
      scopes: [],
      waitForKeys: true,
      jwksRefreshInterval: 600_000,
      jwksCooldown: 10_000,
      jwksTimeout: 2_000,
      jwksRefetchWait: 100,
      claims: { subject: 'sub', email: 'email', scopes: ['scope', 'scp', 'permissions'] },
    });
    expect(jwks.algorithms).toBeUndefined(); // → every asymmetric algorithm at compile time
    expect(issuerSchema.parse({ secret: SECRET }).secretEncoding).toBe('utf8');
  });

  it('needs exactly one of secret, jwksUri, discovery', () => {
    const message = ': an issuer needs exactly one of secret, jwksUri or discovery: true';
    expect(problems({ issuer: 'x', audiences: ['a'] })).toEqual([message]);
    expect(problems({ issuer: 'https://x/', audiences: ['a'], secret: SECRET, discovery: true })).toEqual([message]);
    expect(problems({ issuer: 'https://x/', audiences: ['a'], jwksUri: 'https://x/jwks', discovery: true })).toEqual([message]);
  });

  it('requires issuer and audiences for JWKS issuers', () => {
    expect(problems({ jwksUri: 'https://x/jwks' })).toEqual([
      'issuer: is required for a JWKS issuer',
      'audiences: is required for a JWKS issuer (a token for another API of the same issuer must not pass)',
    ]);
    expect(problems({ issuer: 'acme', discovery: true, audiences: ['a'] })).toEqual(['issuer: must be an http(s) URL for discovery']);
    expect(problems({ issuer: 'x', jwksUri: 'file:///etc/jwks', audiences: ['a'] })).toEqual(['jwksUri: must be an absolute http(s) URL']);
  });

  it('never allows HS for a JWKS issuer nor asymmetric algorithms for a secret, never none', () => {
    expect(problems({ issuer: 'https://x/', jwksUri: 'https://x/jwks', audiences: ['a'], algorithms: ['RS256', 'HS256'] })).toEqual([
      'algorithms.1: HS256 is never accepted for a JWKS issuer (key confusion); use secret: for HS issuers',
    ]);
    expect(problems({ secret: SECRET, algorithms: ['RS256'] })).toEqual(['algorithms.0: RS256 needs a public key: a secret issuer accepts only HS256, HS384, HS512']);
    expect(problems({ secret: SECRET, algorithms: ['none'] })[0]).toMatch(/^algorithms.0: must be one of .*\("none" is never accepted\)$/);
  });

  it('checks secret length per algorithm without echoing the secret', () => {
    const short = 'short-secret-of-31-characters!!';
    expect(short).toHaveLength(31);
    expect(problems({ secret: short })).toEqual(['secret: is 31 bytes; HS256 needs at least 32']);
    expect(problems({ secret: 'x'.repeat(48), algorithms: ['HS384', 'HS512'] })).toEqual(['secret: is 48 bytes; HS512 needs at least 64']);
    expect(problems({ secret: Buffer.alloc(24).toString('base64'), secretEncoding: 'base64' })).toEqual(['secret: is 24 bytes; HS256 needs at least 32']);
    expect(problems({ secret: 'not base64!', secretEncoding: 'base64' })).toEqual(['secret: is not valid base64']);
  });

  it('validates roles mapping shapes', () => {
    const base = { secret: SECRET };
    expect(problems({ ...base, claims: { roles: { apps: { a: { admin: ['x'] } } } } })).toEqual(['claims.roles.appClaim: roles.apps needs appClaim (the claim naming the application)']);
    expect(problems({ ...base, claims: { roles: { claim: 'roles' } } })).toEqual(['claims.roles: roles needs exactly one of apps (with appClaim) or map']);
    expect(problems({ ...base, claims: { roles: { map: { a: ['x'] }, appClaim: 'app' } } })).toEqual(['claims.roles.appClaim: appClaim only applies to roles.apps']);
  });

  it('bounds the JWKS timings: refetch budget refill, wait for a refetch', () => {
    const base = { issuer: 'https://x/', jwksUri: 'https://x/jwks', audiences: ['a'] };
    expect(problems({ ...base, jwksCooldown: '500ms' })).toEqual(['jwksCooldown: must be at least 1s (it bounds the fetches unknown kids can cause)']);
    expect(problems({ ...base, jwksRefetchWait: '11s' })).toEqual(['jwksRefetchWait: must be at most 10s (Envoy gives a check about 200ms)']);
    expect(problems({ ...base, jwksRefetchWait: 0 })).toEqual([]);
    expect(problems({ secret: SECRET, jwksRefetchWait: '50ms' })).toEqual([]);
  });

  it('rejects unknown keys', () => {
    expect(problems({ secret: SECRET, audience: 'typo' })).toEqual([': Unrecognized key: "audience"']);
  });
});

describe('jwt source schema', () => {
  it('defaults to Authorization: Bearer, forwarding, 8 KiB tokens, 10k cache entries', () => {
    expect(jwtSourceSchema.parse({ issuers: ['a'] })).toEqual({
      issuers: ['a'],
      from: [{ header: 'authorization', scheme: 'Bearer' }],
      forward: true,
      maxTokenSize: 8192,
      cacheSize: 10_000,
    });
  });

  it('accepts header, scheme and cookie places, nothing else', () => {
    expect(jwtSourceSchema.parse({ issuers: ['a'], from: [{ header: 'X-Token' }, { cookie: 'sb-access-token' }] }).from).toEqual([{ header: 'x-token' }, { cookie: 'sb-access-token' }]);
    expect(jwtSourceSchema.safeParse({ issuers: ['a'], from: [{ query: 'token' }] }).success).toBe(false);
    expect(jwtSourceSchema.safeParse({ issuers: ['a'], from: [{ header: 'authorization', scheme: 'Bearer x' }] }).success).toBe(false);
  });
});

describe('jwt source compile', () => {
  const runtime = testRuntime();
  const compile = (jwt: Record<string, unknown>, issuers: Record<string, unknown>) => compileSource({ identity: [{ jwt }], issuers }, runtime);

  it('reports unknown issuer names at their path', () => {
    const { source, errors } = compile({ issuers: ['supabase', 'auth0'] }, { supabase: { issuer: 'https://s/auth/v1', secret: SECRET } });
    expect(source).toBeUndefined();
    expect(errors).toEqual(['identity.0.jwt.issuers.1: unknown issuer "auth0" (issuers defines supabase)']);
    expect(compile({ issuers: ['toString'] }, {}).errors).toEqual(['identity.0.jwt.issuers.0: unknown issuer "toString" (the policy has no issuers section)']);
  });

  it('refuses issuers a token could not be told apart by', () => {
    const same = compile({ issuers: ['a', 'b'] }, { a: { issuer: 'https://same/', secret: SECRET }, b: { issuer: 'https://same/', secret: 'b'.repeat(32) } });
    expect(same.errors).toEqual(['identity.0.jwt.issuers.1: issuers a and b have the same issuer https://same/: a token could not be told apart']);
    const bothWithoutIss = compile({ issuers: ['a', 'b'] }, { a: { secret: SECRET }, b: { secret: 'b'.repeat(32) } });
    expect(bothWithoutIss.errors).toEqual(['identity.0.jwt.issuers.1: issuers a and b both accept tokens without iss: a token could not be told apart']);
  });

  it('warns about keys over plain http except on loopback, and registers readiness unless waitForKeys is false', async () => {
    const remote = compile({ issuers: ['r'] }, { r: { issuer: 'https://r/', jwksUri: 'http://keys.example.test/jwks', audiences: ['a'], waitForKeys: false } });
    expect(remote.warnings).toEqual(['issuers.r.jwksUri: keys are fetched over plain http: anyone on the path can substitute them (use https)']);
    expect(remote.waits).toHaveLength(0);
    const local = compile({ issuers: ['l'] }, { l: { issuer: 'https://l/', jwksUri: 'http://127.0.0.1:1/jwks', audiences: ['a'] } });
    expect(local.warnings).toEqual([]);
    expect(local.waits).toHaveLength(1);
    await runtime.resources.closeAll();
  });
});
