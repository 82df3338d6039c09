// The lookup module through the `session` source against a real local HTTP target: cache and
// TTLs, single-flight, the faults (down, slow, 500, garbage, 10 MB, redirect) each a 503 within
// the timeout and recovery, the breaker, a 100k junk-cookie spray from one client while other
// clients' sessions keep resolving, and metrics.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { closedPort, decide, header, reasonOf, startSessionTarget, type SessionTarget } from './helpers.js';

const TIMEOUT_MS = 300;
/** The bound every failure must be answered within: the timeout plus a margin for a busy machine. */
const BOUND_MS = TIMEOUT_MS + 700;

function policy(url: string, extra = ''): string {
  return `
lookups:
  sessions:
    http:
      url: "${url}/session"
      headers: { cookie: "sid={{credential}}" }
    timeout: ${TIMEOUT_MS}ms
    cache: { ttl: 30s, negativeTtl: 5s, maxEntries: 1000 }
    maxInFlight: 32
    perClientInFlight: 4
    breaker: { failures: 3, cooldown: 2s }
${extra}
identity:
  - session:
      cookie: sid
      lookup: sessions
      map: { tenant: session.activeOrganizationId, subject: user.id, email: user.email, expiresAt: session.expiresAt }
      scopes: [admin, storefront]
routes:
  - { match: { pathPrefix: /v1/admin/ }, require: { allOf: [admin] } }
`;
}

function session(id: string, org: string, expiresAt = new Date(Date.now() + 86_400_000).toISOString()) {
  return { session: { id, activeOrganizationId: org, expiresAt }, user: { id: `user-${id}`, email: `${id}@example.com` } };
}

const withCookie = (sid: string, ip = '198.51.100.1') => request({ path: '/v1/admin/products', headers: { cookie: `theme=dark; sid=${sid}` }, sourceAddress: ip });

describe('session source over an HTTP lookup', () => {
  let target: SessionTarget;
  beforeAll(async () => {
    target = await startSessionTarget();
  });
  afterAll(async () => {
    await target.close();
  });

  it('resolves a session to its active organization with fixed scopes, then answers from the cache synchronously', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(target.url), runtime);
    target.sessions.set('s1', session('s1', 'org-acme'));
    target.requests = 0;
    const first = await decide(compiled, withCookie('s1'));
    expect(reasonOf(first)).toBe('allow');
    expect(header(first, 'x-tenant-id')).toBe('org-acme');
    expect(header(first, 'x-auth-subject')).toBe('user-s1');
    expect(header(first, 'x-auth-email')).toBe('s1@example.com');
    expect(header(first, 'x-auth-scopes')).toBe('admin storefront');
    expect(header(first, 'x-auth-method')).toBe('session');
    expect(target.cookies.at(-1)).toBe('sid=s1');
    const { authorize } = await import('../../src/pipeline/authorize.js');
    const second = authorize(compiled, withCookie('s1'));
    expect(second).not.toBeInstanceOf(Promise);
    expect(target.requests).toBe(1);
  });

  it('refuses an unknown session (401 session_invalid) and remembers it for the negative TTL', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(target.url), runtime);
    target.requests = 0;
    expect(reasonOf(await decide(compiled, withCookie('nope')))).toBe('session_invalid');
    expect(reasonOf(await decide(compiled, withCookie('nope')))).toBe('session_invalid');
    expect(target.requests).toBe(1);
    target.sessions.set('nope', session('nope', 'org-late'));
    runtime.clock.advance(5_001);
    expect(reasonOf(await decide(compiled, withCookie('nope')))).toBe('allow');
  });

  it('refuses a signed-out session at the latest one positive TTL after logout, and never past its expiresAt', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(target.url), runtime);
    target.sessions.set('s2', session('s2', 'org-acme'));
    expect(reasonOf(await decide(compiled, withCookie('s2')))).toBe('allow');
    target.sessions.delete('s2'); // sign out
    runtime.clock.advance(30_001);
    expect(reasonOf(await decide(compiled, withCookie('s2')))).toBe('session_invalid');

    // An answer expiring in 2 s is not used after 2 s, although the TTL is 30 s.
    const soon = new Date(runtime.clock.now() + 2_000).toISOString();
    target.sessions.set('s3', session('s3', 'org-acme', soon));
    expect(reasonOf(await decide(compiled, withCookie('s3')))).toBe('allow');
    target.sessions.delete('s3');
    runtime.clock.advance(2_001);
    expect(reasonOf(await decide(compiled, withCookie('s3')))).toBe('session_invalid');
  });

  it('sends one request for concurrent identical lookups (single-flight)', async () => {
    const compiled = compileYaml(policy(target.url), testRuntime());
    target.sessions.set('s4', session('s4', 'org-acme'));
    target.requests = 0;
    const decisions = await Promise.all(Array.from({ length: 20 }, () => decide(compiled, withCookie('s4'))));
    expect(decisions.every((d) => d.allowed)).toBe(true);
    expect(target.requests).toBe(1);
  });

  it('refuses a cookie sent twice and values that could not travel in a header', async () => {
    const compiled = compileYaml(policy(target.url), testRuntime());
    const twice = request({ headers: { cookie: 'sid=a; sid=b' } });
    expect(reasonOf(await decide(compiled, twice))).toBe('malformed_credential');
    const control = request({ headers: { cookie: 'sid=a\u0001b' } });
    expect(reasonOf(await decide(compiled, control))).toBe('malformed_credential');
    expect(reasonOf(await decide(compiled, request({ path: '/v1/admin/x' })))).toBe('missing_credential');
  });

  it('refuses a session header sent twice (joined with ",") before any lookup', async () => {
    const compiled = compileYaml(policy(target.url).replace('      cookie: sid\n', '      header: x-session-token\n'), testRuntime());
    target.sessions.set('h1', session('h1', 'org-acme'));
    expect(reasonOf(await decide(compiled, request({ path: '/v1/admin/x', headers: { 'x-session-token': 'h1' } })))).toBe('allow');
    target.requests = 0;
    expect(reasonOf(await decide(compiled, request({ path: '/v1/admin/x', headers: { 'x-session-token': 'h1,h2' } })))).toBe('malformed_credential');
    expect(target.requests).toBe(0);
  });

  for (const mode of ['slow', '500', 'garbage', 'huge', 'redirect'] as const) {
    it(`answers 503 lookup_unavailable within the timeout when the target is ${mode}, and recovers`, async () => {
      const compiled = compileYaml(policy(target.url), testRuntime());
      target.sessions.set(`f-${mode}`, session(`f-${mode}`, 'org-acme'));
      target.mode = mode;
      try {
        const started = performance.now();
        const decision = await decide(compiled, withCookie(`f-${mode}`));
        const elapsed = performance.now() - started;
        expect(reasonOf(decision)).toBe('lookup_unavailable');
        expect(decision.allowed ? 0 : decision.status).toBe(503);
        expect(elapsed).toBeLessThan(BOUND_MS);
        if (mode === 'huge') expect(decision.allowed ? '' : decision.detail).toContain('larger than');
        if (mode === 'redirect') expect(decision.allowed ? '' : decision.detail).toContain('redirect 302 not followed');
      } finally {
        target.mode = 'ok';
      }
      expect(reasonOf(await decide(compiled, withCookie(`f-${mode}`)))).toBe('allow');
    });
  }

  it('answers 503 within the timeout when the target is down', async () => {
    const port = await closedPort();
    const compiled = compileYaml(policy(`http://127.0.0.1:${port}`), testRuntime());
    const started = performance.now();
    const decision = await decide(compiled, withCookie('anything'));
    expect(reasonOf(decision)).toBe('lookup_unavailable');
    expect(performance.now() - started).toBeLessThan(BOUND_MS);
  });

  it('opens the breaker after consecutive failures (no requests while open) and recovers after the cooldown', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(target.url), runtime);
    target.mode = '500';
    try {
      for (let i = 0; i < 3; i++) expect(reasonOf(await decide(compiled, withCookie(`b${i}`)))).toBe('lookup_unavailable');
      target.requests = 0;
      const open = await decide(compiled, withCookie('b-open'));
      expect(reasonOf(open)).toBe('lookup_unavailable');
      expect(open.allowed ? '' : open.detail).toContain('circuit breaker open');
      expect(target.requests).toBe(0);
    } finally {
      target.mode = 'ok';
    }
    runtime.clock.advance(2_001);
    target.sessions.set('b-after', session('b-after', 'org-acme'));
    expect(reasonOf(await decide(compiled, withCookie('b-after')))).toBe('allow');
  });

  it('keeps resolving real sessions from other clients during a spray of 100k junk cookies from one client', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(target.url), runtime);
    target.requests = 0;
    const outcomes = new Map<string, number>();
    let realAllowed = 0;
    let realTotal = 0;
    const BATCH = 2_000;
    for (let start = 0; start < 100_000; start += BATCH) {
      const batch: Promise<void>[] = [];
      for (let i = start; i < start + BATCH; i++) {
        batch.push(
          decide(compiled, withCookie(`junk-${i}`, '203.0.113.66')).then((d) => {
            const r = reasonOf(d);
            outcomes.set(r, (outcomes.get(r) ?? 0) + 1);
          }),
        );
      }
      // A real, not yet cached session from another client, in the middle of the spray.
      const sid = `real-${start}`;
      target.sessions.set(sid, session(sid, 'org-real'));
      realTotal++;
      batch.push(
        decide(compiled, withCookie(sid, `192.0.2.${(start / BATCH) % 250}`)).then((d) => {
          if (d.allowed && header(d, 'x-tenant-id') === 'org-real') realAllowed++;
        }),
      );
      await Promise.all(batch);
    }
    expect(realAllowed).toBe(realTotal);
    expect(outcomes.get('allow')).toBeUndefined();
    expect((outcomes.get('session_invalid') ?? 0) + (outcomes.get('lookup_unavailable') ?? 0)).toBe(100_000);
    // The spraying client never had more than its share in flight: most of the spray was shed.
    expect(target.requests).toBeLessThan(100_000 / 10);
  }, 60_000);

  it('treats an IPv6 /64 as one client: rotating addresses inside it share one share of lookups', async () => {
    const compiled = compileYaml(policy(target.url), testRuntime());
    target.requests = 0;
    target.sessions.set('v6-real', session('v6-real', 'org-real'));
    const spray = Array.from({ length: 1_000 }, (_, i) => decide(compiled, withCookie(`v6-junk-${i}`, `2001:db8:1:2:${(i + 1).toString(16)}::1`)));
    const real = decide(compiled, withCookie('v6-real', '2001:db8:9:9::1'));
    const reasons = (await Promise.all(spray)).map(reasonOf);
    expect(reasons.filter((r) => r === 'session_invalid').length).toBeLessThanOrEqual(4); // perClientInFlight
    expect(reasons.filter((r) => r === 'lookup_unavailable').length).toBeGreaterThanOrEqual(996);
    expect(header(await real, 'x-tenant-id')).toBe('org-real');
    expect(target.requests).toBeLessThanOrEqual(5);
  });

  it('counts lookups by outcome and cache hits', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(target.url), runtime);
    target.sessions.set('m1', session('m1', 'org-acme'));
    await decide(compiled, withCookie('m1'));
    await decide(compiled, withCookie('m1'));
    await decide(compiled, withCookie('m-unknown'));
    const text = await runtime.metrics.registry.metrics();
    expect(text).toContain('portcullis_lookups_total{lookup="sessions",source="session",outcome="found"} 1');
    expect(text).toContain('portcullis_lookups_total{lookup="sessions",source="session",outcome="not_found"} 1');
    expect(text).toContain('portcullis_lookup_cache_total{lookup="sessions",source="session",result="hit"} 1');
    expect(text).toContain('portcullis_lookup_duration_seconds_count{lookup="sessions",source="session"} 2');
  });
});
