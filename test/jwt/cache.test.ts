// The verified-token cache: synchronous hits, never past exp or maxTokenAge, bounded, counted.

import { createHmac } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import { isPromise } from '../../src/types.js';
import { testRuntime } from '../support/runtime.js';
import { bearer, identify, mustCompile } from './helpers.js';

const SECRET = 'cache-test-secret-0123456789abcdef0123456789';
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** An HS256 token made with node:crypto: thousands of them in a few milliseconds. */
const hs256 = (claims: JWTPayload) => {
  const signed = `${b64({ alg: 'HS256' })}.${b64(claims)}`;
  return `${signed}.${createHmac('sha256', SECRET).update(signed).digest('base64url')}`;
};

describe('verified-token cache', () => {
  let runtime: ReturnType<typeof testRuntime>;
  const now = () => Math.floor(runtime.clock.now() / 1000);
  const token = (claims: JWTPayload = {}) =>
    new SignJWT({ iss: 'local', sub: 'u', iat: now(), exp: now() + 300, ...claims }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET));
  const compile = (source: Record<string, unknown> = {}, issuer: Record<string, unknown> = {}) =>
    mustCompile({ identity: [{ jwt: { issuers: ['local'], ...source } }], issuers: { local: { issuer: 'local', secret: SECRET, clockTolerance: '5s', ...issuer } } }, runtime);
  const counts = async () => {
    const metric = await runtime.metrics.registry.getSingleMetric('portcullis_jwt_cache_total')?.get();
    const value = (result: string) => metric?.values.find((v) => v.labels.result === result)?.value ?? 0;
    return { hit: value('hit'), miss: value('miss') };
  };

  beforeEach(() => {
    runtime = testRuntime();
    runtime.clock.set(Date.UTC(2026, 0, 1)); // whole seconds, so the boundaries below are exact
  });

  it('answers a repeated token synchronously with the same principal, and counts hits and misses', async () => {
    const source = compile();
    const t = await token();
    const first = source.identify(bearer(t));
    expect(isPromise(first)).toBe(true);
    const verified = await first;
    const again = source.identify(bearer(t));
    expect(isPromise(again)).toBe(false);
    expect(again).toBe(verified); // the very same frozen result: a hit allocates nothing
    expect(await counts()).toEqual({ hit: 1, miss: 1 });
  });

  it('never allows an expired token from the cache', async () => {
    const source = compile();
    const t = await token({ exp: now() + 60 });
    expect((await identify(source, bearer(t))).kind).toBe('principal');
    runtime.clock.advance(64_000); // exp + 4 s: inside the 5 s tolerance
    expect(source.identify(bearer(t))).toMatchObject({ kind: 'principal' });
    runtime.clock.advance(1_000);
    expect(source.identify(bearer(t))).toMatchObject({ kind: 'deny', denial: { reason: 'token_expired', credentialPresented: true } });
    // The entry is gone: the next attempt is a cache miss, verifies in full and is refused again.
    const misses = (await counts()).miss;
    expect(await identify(source, bearer(t))).toMatchObject({ kind: 'deny', denial: { reason: 'token_expired' } });
    expect((await counts()).miss).toBe(misses + 1);
  });

  it('applies maxTokenAge on hits', async () => {
    const source = compile({}, { maxTokenAge: '2m' });
    const t = await token({ exp: now() + 3600 });
    expect((await identify(source, bearer(t))).kind).toBe('principal');
    runtime.clock.advance(125_000);
    expect(source.identify(bearer(t))).toMatchObject({ kind: 'principal' });
    runtime.clock.advance(1_000);
    expect(source.identify(bearer(t))).toMatchObject({ kind: 'deny', denial: { reason: 'token_too_old' } });
    expect(await identify(source, bearer(await token({ iat: undefined })))).toMatchObject({ kind: 'deny', denial: { reason: 'missing_claim' } });
  });

  it('is bounded (LRU) and can be turned off', async () => {
    const source = compile({ cacheSize: 2 });
    const [a, b, c] = await Promise.all([token({ jti: 'a' }), token({ jti: 'b' }), token({ jti: 'c' })]);
    for (const t of [a, b, c]) await identify(source, bearer(t));
    const before = await counts();
    await identify(source, bearer(c));
    await identify(source, bearer(b));
    expect(await counts()).toEqual({ hit: before.hit + 2, miss: before.miss });
    await identify(source, bearer(a)); // evicted
    expect(await counts()).toEqual({ hit: before.hit + 2, miss: before.miss + 1 });

    // Without a cache every presentation is verified anew: a fresh result each time.
    const uncached = compile({ cacheSize: 0 });
    const once = await identify(uncached, bearer(a));
    const twice = await identify(uncached, bearer(a));
    expect(twice).toMatchObject({ kind: 'principal' });
    expect(twice).not.toBe(once);
  });

  it('rebuilds tokens it no longer keeps as objects from the cache table, equal to the verified ones', async () => {
    const source = compile({}, { claims: { tenant: 'tenant_id' } });
    // Unusual claims first: non-ASCII, too long for a table slot (kept on the heap), several scopes,
    // no scopes at all, an email. Then more tokens than the table keeps objects for (4096).
    const odd = await Promise.all([
      token({ sub: 'zoë ✓', tenant_id: 'ünï', scope: 'a b' }),
      token({ sub: 's'.repeat(250) }),
      token({ sub: 'many', permissions: ['x', 'y:read', 'z'] }),
      token({ sub: 'none', email: 'none@example.com', nbf: now() - 10 }),
    ]);
    const all = [...odd, ...Array.from({ length: 4200 }, (_, n) => hs256({ iss: 'local', sub: `user-${n}`, iat: now(), exp: now() + 300 }))];
    const first = [];
    for (const t of all) first.push(await identify(source, bearer(t)));
    const misses = (await counts()).miss;
    for (let i = 0; i < 50; i++) {
      const again = source.identify(bearer(all[i]!));
      expect(isPromise(again)).toBe(false);
      expect(again).toEqual(first[i]);
      expect(again).toMatchObject({ kind: 'principal' });
      // Rebuilt from its slot, except the one too long for a slot, which stayed on the heap.
      if (i === 1) expect(again).toBe(first[i]);
      else expect(again).not.toBe(first[i]);
    }
    expect(first.slice(0, 4).map((r) => (r.kind === 'principal' ? r.principal : r))).toEqual([
      expect.objectContaining({ tenant: 'ünï', subject: 'zoë ✓', scopes: ['a', 'b'] }),
      expect.objectContaining({ subject: 's'.repeat(250), scopes: [] }),
      expect.objectContaining({ subject: 'many', scopes: ['x', 'y:read', 'z'] }),
      expect.objectContaining({ subject: 'none', email: 'none@example.com', scopes: [] }),
    ]);
    expect((await counts()).miss).toBe(misses);
    // Time rules apply to rebuilt entries as to any other.
    runtime.clock.advance(306_000);
    expect(source.identify(bearer(all[4]!))).toMatchObject({ kind: 'deny', denial: { reason: 'token_expired' } });
  });

  it('does not cache refusals or leak a principal across tokens', async () => {
    const source = compile();
    const forged = `${(await token()).slice(0, -4)}AAAA`;
    expect(await identify(source, bearer(forged))).toMatchObject({ kind: 'deny', denial: { reason: 'invalid_signature' } });
    const misses = (await counts()).miss;
    expect(await identify(source, bearer(forged))).toMatchObject({ kind: 'deny', denial: { reason: 'invalid_signature' } });
    expect((await counts()).miss).toBe(misses + 1); // refusals are never cached
    const [alice, bob] = await Promise.all([token({ sub: 'alice' }), token({ sub: 'bob' })]);
    await identify(source, bearer(alice));
    expect(await identify(source, bearer(bob))).toMatchObject({ principal: { subject: 'bob' } });
    expect(source.identify(bearer(alice))).toMatchObject({ principal: { subject: 'alice' } });
  });
});
