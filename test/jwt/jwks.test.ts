// JWKS handling against a local key server that counts requests: caching, rotation, failures
// (fail closed only when no key is cached), redirects, reloads. Unknown kids, the refetch budget
// and the bounded wait are in jwks-refetch.test.ts.

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { REASONS } from '../../src/reasons.js';
import { jwksResourceKey, type JwksManager } from '../../src/jwt/jwks.js';
import type { Runtime } from '../../src/runtime.js';
import { testRuntime } from '../support/runtime.js';
import {
  bearer,
  compileReady,
  compileSource,
  identify,
  nowSeconds,
  outcome,
  sign,
  signingKey,
  startKeyServer,
  startServer,
  type KeyServer,
  type SigningKey,
} from './helpers.js';

const AUDIENCE = 'https://api.example.test';

function policy(server: KeyServer, issuer: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    identity: [{ jwt: { issuers: ['idp'] } }],
    issuers: { idp: { issuer: server.url, jwksUri: `${server.url}/jwks.json`, audiences: [AUDIENCE], ...issuer } },
  };
}

function manager(runtime: Runtime, server: KeyServer): JwksManager {
  const key = jwksResourceKey({
    issuerName: 'idp',
    issuer: server.url,
    jwksUri: `${server.url}/jwks.json`,
    discovery: false,
    refreshIntervalMs: 600_000,
    cooldownMs: 10_000,
    timeoutMs: 2_000,
  });
  const found = runtime.resources.peek<JwksManager>(key);
  if (!found) throw new Error(`no resource ${key}`);
  return found;
}

async function fetchCount(runtime: Runtime, result: string): Promise<number> {
  const metric = await runtime.metrics.registry.getSingleMetric('portcullis_jwks_fetches_total')?.get();
  return metric?.values.find((v) => v.labels.issuer === 'idp' && v.labels.result === result)?.value ?? 0;
}

describe('JWKS key sets', () => {
  let runtime: ReturnType<typeof testRuntime>;
  let server: KeyServer;
  let k1: SigningKey;
  let k2: SigningKey;
  const claims = (extra: Record<string, unknown> = {}) => ({ iss: server.url, aud: AUDIENCE, sub: 'svc', exp: nowSeconds(runtime) + 3600, ...extra });

  beforeEach(async () => {
    runtime = testRuntime();
    [k1, k2] = await Promise.all([signingKey('RS256', 'k1'), signingKey('ES256', 'k2')]);
    server = await startKeyServer([k1.publicJwk]);
  });

  afterEach(async () => {
    await runtime.resources.closeAll();
    await server.close();
  });

  it('fetches once at start and verifies every later token from the cached set', async () => {
    const source = await compileReady(policy(server), runtime);
    for (let i = 0; i < 25; i++) expect(await outcome(source, bearer(await sign(k1, claims({ jti: `t${i}` }))))).toBe('principal');
    expect(server.jwksRequests()).toBe(1);
    expect(await fetchCount(runtime, 'success')).toBe(1);
  });

  it('rotates keys without restart: a new key is used, a removed key stops verifying (cached tokens too)', async () => {
    const source = await compileReady(policy(server), runtime);
    const oldToken = await sign(k1, claims());
    expect(await outcome(source, bearer(oldToken))).toBe('principal');

    // The issuer publishes k2 and starts signing with it.
    server.keys = [k1.publicJwk, k2.publicJwk];
    runtime.clock.advance(30_000);
    const newToken = await sign(k2, claims());
    expect(await outcome(source, bearer(newToken))).toBe('principal');
    expect(server.jwksRequests()).toBe(2);

    // k1 is withdrawn; after the next refresh its tokens fail, even the one in the cache.
    expect(source.identify(bearer(oldToken))).toMatchObject({ kind: 'principal' });
    server.keys = [k2.publicJwk];
    expect(await manager(runtime, server).refresh()).toBe(true);
    expect(await outcome(source, bearer(oldToken))).toBe('unknown_key');
    expect(await outcome(source, bearer(await sign(k1, claims({ jti: 'fresh' }))))).toBe('unknown_key');
    expect(await outcome(source, bearer(newToken))).toBe('principal');
  });

  it('refreshes in the background', async () => {
    const source = await compileReady(policy(server, { jwksRefreshInterval: '1s' }), runtime);
    server.keys = [k1.publicJwk, k2.publicJwk];
    await vi.waitFor(() => expect(server.jwksRequests()).toBeGreaterThanOrEqual(2), { timeout: 5_000, interval: 50 });
    // The new key is already there: no fetch on its first token, even inside the cooldown.
    const before = server.jwksRequests();
    expect(await outcome(source, bearer(await sign(k2, claims())))).toBe('principal');
    expect(server.jwksRequests()).toBe(before);
  });

  it('keeps serving the cached keys when a refresh fails', async () => {
    const source = await compileReady(policy(server), runtime);
    server.mode = 500;
    expect(await manager(runtime, server).refresh()).toBe(false);
    expect(await outcome(source, bearer(await sign(k1, claims())))).toBe('principal');
    expect(await fetchCount(runtime, 'http_error')).toBe(1);
  });

  it('fails closed with jwks_unavailable (503) when no key set was ever fetched', async () => {
    server.mode = 503;
    const compiled = compileSource(policy(server, { waitForKeys: false }), runtime);
    expect(compiled.waits).toHaveLength(0);
    const source = compiled.source!;
    await vi.waitFor(() => expect(server.jwksRequests()).toBe(1));
    const token = await sign(k1, claims());
    const result = await identify(source, bearer(token));
    expect(result).toMatchObject({ kind: 'deny', denial: { reason: 'jwks_unavailable' } });
    expect(REASONS.jwks_unavailable.status).toBe(503);
    for (let i = 0; i < 10; i++) expect(await outcome(source, bearer(await sign(k1, claims({ jti: `${i}` }))))).toBe('jwks_unavailable');
    // Bounded by the refetch budget, not one fetch per check (backoff retries run besides).
    expect(server.jwksRequests()).toBeLessThan(1 + 11);

    server.mode = 'ok';
    runtime.clock.advance(30_000);
    expect(await outcome(source, bearer(token))).toBe('principal');
  });

  it('readiness waits for the first successful fetch', async () => {
    server.mode = 503;
    const compiled = compileSource(policy(server), runtime);
    expect(compiled.waits).toHaveLength(1);
    let ready = false;
    void compiled.waits[0]!.then(() => (ready = true));
    await vi.waitFor(() => expect(server.jwksRequests()).toBe(1));
    expect(ready).toBe(false);
    server.mode = 'ok';
    // The retry after a failed start-up fetch comes on its own (backoff from 1 s).
    await compiled.waits[0];
    expect(ready).toBe(true);
  });

  it('bounds a fetch by its timeout', async () => {
    server.mode = 'hang';
    const source = compileSource(policy(server, { waitForKeys: false, jwksTimeout: '200ms' }), runtime).source!;
    await vi.waitFor(async () => expect(await fetchCount(runtime, 'timeout')).toBe(1), { timeout: 5_000 });
    expect(await outcome(source, bearer(await sign(k1, claims())))).toBe('jwks_unavailable');
  });

  it('follows redirects within the origin only', async () => {
    const elsewhere = await startKeyServer([k1.publicJwk]);
    try {
      const redirecting = await startServer((req, res) => {
        if (req.url === '/moved') res.writeHead(302, { location: '/jwks-here' }).end();
        else if (req.url === '/jwks-here') res.writeHead(200).end(JSON.stringify({ keys: [k1.publicJwk] }));
        else res.writeHead(302, { location: `${elsewhere.url}/jwks.json` }).end();
      });
      try {
        const issuer = (uri: string) => ({ identity: [{ jwt: { issuers: ['idp'] } }], issuers: { idp: { issuer: 'https://idp.example.test/', jwksUri: uri, audiences: [AUDIENCE], waitForKeys: false } } });
        const tokenClaims = { iss: 'https://idp.example.test/', aud: AUDIENCE, exp: nowSeconds(runtime) + 60 };

        const same = await compileReady(issuer(`${redirecting.url}/moved`), runtime);
        await vi.waitFor(() => expect(redirecting.count('/jwks-here')).toBe(1));
        await vi.waitFor(async () => expect(await outcome(same, bearer(await sign(k1, tokenClaims)))).toBe('principal'));

        const other = await compileReady(issuer(`${redirecting.url}/elsewhere`), runtime);
        await vi.waitFor(() => expect(redirecting.count('/elsewhere')).toBe(1));
        expect(await outcome(other, bearer(await sign(k1, tokenClaims)))).toBe('jwks_unavailable');
        expect(elsewhere.total()).toBe(0);
      } finally {
        await redirecting.close();
      }
    } finally {
      await elsewhere.close();
    }
  });

  it('ignores unusable keys and refuses a set without any usable one', async () => {
    const weak = { kty: 'RSA', kid: 'weak', n: Buffer.alloc(128, 1).toString('base64url'), e: 'AQAB' };
    const encryption = { ...k1.publicJwk, kid: 'enc', use: 'enc' };
    const secret = { kty: 'oct', kid: 'oct', k: 'c2VjcmV0' };
    server.keys = [weak, encryption, secret];
    const source = compileSource(policy(server, { waitForKeys: false }), runtime).source!;
    await vi.waitFor(async () => expect(await fetchCount(runtime, 'invalid')).toBe(1));
    expect(await outcome(source, bearer(await sign(k1, claims())))).toBe('jwks_unavailable');

    server.keys = [weak, encryption, secret, k1.publicJwk];
    runtime.clock.advance(30_000);
    expect(await outcome(source, bearer(await sign(k1, claims())))).toBe('principal');
    expect(await outcome(source, bearer(await sign(k1, claims(), { kid: 'weak' })))).toBe('refused_key');
  });

  it('keeps its keys across policy reloads (resource pool)', async () => {
    const first = await compileReady(policy(server), runtime);
    await runtime.resources.commit();
    const second = await compileReady(policy(server), runtime);
    await runtime.resources.commit();
    expect(await outcome(first, bearer(await sign(k1, claims())))).toBe('principal');
    expect(await outcome(second, bearer(await sign(k1, claims({ jti: '2' }))))).toBe('principal');
    expect(server.jwksRequests()).toBe(1);
  });

  it('discovery must name the configured issuer', async () => {
    server.discoveredIssuer = 'https://impostor.example.test/';
    const compiled = compileSource(
      { identity: [{ jwt: { issuers: ['idp'] } }], issuers: { idp: { issuer: server.url, discovery: true, audiences: [AUDIENCE], waitForKeys: false } } },
      runtime,
    );
    await vi.waitFor(async () => expect(await fetchCount(runtime, 'invalid')).toBe(1));
    expect(server.jwksRequests()).toBe(0);
    expect(await outcome(compiled.source!, bearer(await sign(k1, claims())))).toBe('jwks_unavailable');
  });
});
