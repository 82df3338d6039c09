// Unknown kids against a real key server that rotates (issue 13 §6, issue 14 §5):
//   - a key the issuer publishes and signs with at once is accepted, whenever the last fetch was
//   - a spray of unknown kids costs a bounded number of fetches (refetch budget, kids proven unknown)
//   - a check waits for a refetch at most jwksRefetchWait; a slow or unreachable issuer is 503
//     jwks_unavailable, not 401 unknown_key, and the fetch goes on to fill the cache.

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { jwksResourceKey, type JwksManager } from '../../src/jwt/jwks.js';
import { REASONS } from '../../src/reasons.js';
import type { Runtime } from '../../src/runtime.js';
import { isPromise } from '../../src/types.js';
import { testRuntime } from '../support/runtime.js';
import { bearer, compileReady, identify, nowSeconds, outcome, sign, signingKey, startKeyServer, type KeyServer, type SigningKey } from './helpers.js';

const AUDIENCE = 'https://api.example.test';
const COOLDOWN_MS = 10_000;

function policy(server: KeyServer, issuer: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    identity: [{ jwt: { issuers: ['idp'] } }],
    issuers: { idp: { issuer: server.url, jwksUri: `${server.url}/jwks.json`, audiences: [AUDIENCE], ...issuer } },
  };
}

function manager(runtime: Runtime, server: KeyServer, timeoutMs = 2_000): JwksManager {
  const key = jwksResourceKey({
    issuerName: 'idp',
    issuer: server.url,
    jwksUri: `${server.url}/jwks.json`,
    discovery: false,
    refreshIntervalMs: 600_000,
    cooldownMs: COOLDOWN_MS,
    timeoutMs,
  });
  const found = runtime.resources.peek<JwksManager>(key);
  if (!found) throw new Error(`no resource ${key}`);
  return found;
}

async function fetchCount(runtime: Runtime, result: string): Promise<number> {
  const metric = await runtime.metrics.registry.getSingleMetric('portcullis_jwks_fetches_total')?.get();
  return metric?.values.find((v) => v.labels.issuer === 'idp' && v.labels.result === result)?.value ?? 0;
}

async function unknownKids(runtime: Runtime, result: string): Promise<number> {
  const metric = await runtime.metrics.registry.getSingleMetric('portcullis_jwks_unknown_kids_total')?.get();
  return metric?.values.find((v) => v.labels.issuer === 'idp' && v.labels.result === result)?.value ?? 0;
}

describe('unknown kids and key rotation', () => {
  let runtime: ReturnType<typeof testRuntime>;
  let server: KeyServer;
  let k1: SigningKey;
  let k2: SigningKey;
  const claims = (extra: Record<string, unknown> = {}) => ({ iss: server.url, aud: AUDIENCE, sub: 'svc', exp: nowSeconds(runtime) + 3600, ...extra });
  const randomKid = () => sign(k1, claims({ jti: Math.random().toString(36) }), { kid: `random-${Math.random().toString(36).slice(2)}` });

  beforeEach(async () => {
    runtime = testRuntime();
    [k1, k2] = await Promise.all([signingKey('RS256', 'k1'), signingKey('ES256', 'k2')]);
    server = await startKeyServer([k1.publicJwk]);
  });

  afterEach(async () => {
    server.gate = undefined;
    await runtime.resources.closeAll();
    await server.close();
  });

  it('accepts a key published and used at once, right after the start-up fetch', async () => {
    const source = await compileReady(policy(server), runtime);
    server.keys = [k1.publicJwk, k2.publicJwk];
    expect(await outcome(source, bearer(await sign(k2, claims())))).toBe('principal');
    expect(server.jwksRequests()).toBe(2);
  });

  it('accepts a key published and used at once, right after a periodic refresh', async () => {
    const source = await compileReady(policy(server), runtime);
    expect(await manager(runtime, server).refresh()).toBe(true); // what the refresh timer does
    server.keys = [k1.publicJwk, k2.publicJwk];
    expect(await outcome(source, bearer(await sign(k2, claims())))).toBe('principal');
    expect(server.jwksRequests()).toBe(3);
  });

  it('a fetch already under way when the key appeared does not hide it: one more fetch follows', async () => {
    const source = await compileReady(policy(server, { jwksRefetchWait: '5s' }), runtime);
    let release!: () => void;
    server.gate = new Promise((resolve) => (release = resolve));
    const periodic = manager(runtime, server).refresh();
    await vi.waitFor(() => expect(server.jwksRequests()).toBe(2)); // that fetch holds the old set
    server.keys = [k1.publicJwk, k2.publicJwk];
    const pending = identify(source, bearer(await sign(k2, claims())));
    release();
    expect(await periodic).toBe(true);
    const result = await pending;
    expect(result.kind).toBe('principal');
    expect(server.jwksRequests()).toBe(3);
  });

  it('bounds the fetches a spray of unknown kids causes; the budget refills over jwksCooldown', async () => {
    const source = await compileReady(policy(server), runtime);
    for (let i = 0; i < 50; i++) expect(await outcome(source, bearer(await randomKid()))).toBe('unknown_key');
    expect(server.jwksRequests()).toBe(1 + 3); // start-up + the burst of the refetch budget
    // Spent: answered at once, without a fetch.
    expect(isPromise(source.identify(bearer(await randomKid())))).toBe(false);

    expect(await unknownKids(runtime, 'refetch')).toBe(3);
    expect(await unknownKids(runtime, 'budget_spent')).toBe(48);

    runtime.clock.advance(COOLDOWN_MS);
    for (let i = 0; i < 10; i++) expect(await outcome(source, bearer(await randomKid()))).toBe('unknown_key');
    expect(server.jwksRequests()).toBe(5);

    // Under such a spray a genuine new key waits for the next refill at the latest.
    server.keys = [k1.publicJwk, k2.publicJwk];
    const token = await sign(k2, claims());
    expect(await outcome(source, bearer(token))).toBe('unknown_key');
    runtime.clock.advance(COOLDOWN_MS);
    expect(await outcome(source, bearer(token))).toBe('principal');
  });

  it('remembers a kid a refetch proved unknown, so repeating it spends no budget', async () => {
    const source = await compileReady(policy(server), runtime);
    const stale = await sign(k1, claims(), { kid: 'retired-long-ago' });
    for (let i = 0; i < 20; i++) expect(await outcome(source, bearer(stale))).toBe('unknown_key');
    expect(server.jwksRequests()).toBe(2);
    expect(isPromise(source.identify(bearer(stale)))).toBe(false);
    expect(await unknownKids(runtime, 'remembered')).toBe(20);

    // The budget is intact for a genuine rotation.
    server.keys = [k1.publicJwk, k2.publicJwk];
    expect(await outcome(source, bearer(await sign(k2, claims())))).toBe('principal');
    expect(server.jwksRequests()).toBe(3);

    // After the cooldown the stale kid may be asked about again (once).
    runtime.clock.advance(COOLDOWN_MS);
    for (let i = 0; i < 5; i++) expect(await outcome(source, bearer(stale))).toBe('unknown_key');
    expect(server.jwksRequests()).toBe(4);
  });

  it('merges concurrent refetches: one, plus one follow-up shared by the kids that arrived while it ran; a cached key never waits', async () => {
    const source = await compileReady(policy(server, { jwksRefetchWait: '5s' }), runtime);
    let release!: () => void;
    server.gate = new Promise((resolve) => (release = resolve));
    const spray = await Promise.all(Array.from({ length: 20 }, () => randomKid()));
    const pending = spray.map((token) => identify(source, bearer(token)));
    // While that fetch is held open, a token whose key is cached verifies (else this would hang).
    expect(await outcome(source, bearer(await sign(k1, claims({ jti: 'during' }))))).toBe('principal');
    release();
    const results = await Promise.all(pending);
    expect(results.map((r) => (r.kind === 'deny' ? r.denial.reason : r.kind))).toEqual(Array(20).fill('unknown_key'));
    // The first kid started a fetch; the 19 others arrived after it started, so only a fetch that
    // started later may prove them unknown: one more, shared by all of them.
    expect(server.jwksRequests()).toBe(3);
    // All twenty are now proven unknown: answered at once.
    for (const token of spray) expect(source.identify(bearer(token))).toMatchObject({ kind: 'deny', denial: { reason: 'unknown_key' } });
    expect(server.jwksRequests()).toBe(3);
  });
});

describe('a slow or unreachable issuer (bounded wait, 503 jwks_unavailable)', () => {
  let runtime: ReturnType<typeof testRuntime>;
  let server: KeyServer;
  let k1: SigningKey;
  let k2: SigningKey;
  const claims = () => ({ iss: server.url, aud: AUDIENCE, sub: 'svc', exp: nowSeconds(runtime) + 3600 });

  beforeEach(async () => {
    runtime = testRuntime();
    [k1, k2] = await Promise.all([signingKey('RS256', 'k1'), signingKey('ES256', 'k2')]);
    server = await startKeyServer([k1.publicJwk]);
  });

  afterEach(async () => {
    server.gate = undefined;
    await runtime.resources.closeAll();
    await server.close();
  });

  it('a slow key server: the check answers 503 after jwksRefetchWait, the fetch goes on and fills the cache', async () => {
    const source = await compileReady(policy(server, { jwksTimeout: '10s' }), runtime);
    let release!: () => void;
    server.gate = new Promise((resolve) => (release = resolve));
    server.keys = [k1.publicJwk, k2.publicJwk];
    const token = await sign(k2, claims());

    // The key server has not answered (it cannot: the gate is closed), yet the check is decided.
    const result = await identify(source, bearer(token));
    expect(result).toMatchObject({ kind: 'deny', denial: { reason: 'jwks_unavailable' } });
    expect(REASONS.jwks_unavailable.status).toBe(503);
    expect(await fetchCount(runtime, 'success')).toBe(1);
    // A cached key is not affected (the fetch is still held open).
    expect(await outcome(source, bearer(await sign(k1, claims())))).toBe('principal');

    release();
    await vi.waitFor(async () => expect(await fetchCount(runtime, 'success')).toBe(2));
    expect(await outcome(source, bearer(token))).toBe('principal');
    expect(server.jwksRequests()).toBe(2);
  });

  it('jwksRefetchWait: 0 never waits: the fetch starts in the background', async () => {
    const source = await compileReady(policy(server, { jwksRefetchWait: 0 }), runtime);
    server.keys = [k1.publicJwk, k2.publicJwk];
    const token = await sign(k2, claims());
    expect(await outcome(source, bearer(token))).toBe('jwks_unavailable');
    await vi.waitFor(async () => expect(await fetchCount(runtime, 'success')).toBe(2));
    expect(await outcome(source, bearer(token))).toBe('principal');
    expect(server.jwksRequests()).toBe(2);
  });

  it('a key server answering errors: cached keys work, an unknown kid is 503, not 401', async () => {
    const source = await compileReady(policy(server), runtime);
    server.mode = 503;
    expect(await outcome(source, bearer(await sign(k1, claims())))).toBe('principal');
    expect(await outcome(source, bearer(await sign(k2, claims())))).toBe('jwks_unavailable');
    expect(await fetchCount(runtime, 'http_error')).toBe(1);
    // While the issuer is known to be failing, further unknown kids are 503 too, budget or not.
    for (let i = 0; i < 10; i++) expect(await outcome(source, bearer(await sign(k1, claims(), { kid: `other-${i}` })))).toBe('jwks_unavailable');
    // Bounded by the refetch budget (the backoff retries of the failing set run besides).
    expect(server.jwksRequests()).toBeLessThan(1 + 10);

    server.mode = 'ok';
    server.keys = [k1.publicJwk, k2.publicJwk];
    runtime.clock.advance(COOLDOWN_MS);
    expect(await outcome(source, bearer(await sign(k2, claims())))).toBe('principal');
  });

  it('a key server that is down (connection refused): an unknown kid is 503 jwks_unavailable', async () => {
    const source = await compileReady(policy(server), runtime);
    await server.close();
    expect(await outcome(source, bearer(await sign(k1, claims())))).toBe('principal');
    expect(await outcome(source, bearer(await sign(k2, claims())))).toBe('jwks_unavailable');
    expect(await fetchCount(runtime, 'network_error')).toBeGreaterThanOrEqual(1);
  });
});
