// The memory backend through compiled policies, with a manual clock: exact algorithm behaviour,
// lockout, plans, shadow mode, key parts, route settings and headers.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryStore } from '../../src/ratelimit/memory-store.js';
import { testRuntime } from '../support/runtime.js';
import { compile, evaluateSync, header, input, limiterAt, metricValue, outcome, tally } from './helpers.js';

const SEED_003 = `
routes:
  - { name: health, match: { path: /health }, public: true, rateLimits: { exempt: true } }
  - { name: api, match: { pathPrefix: /v1/ } }
rateLimits:
  policies:
    - { name: per-company, key: [tenant], rate: 100/min, burst: 200 }
tenants:
  big: { limits: { per-company: { rate: 1000/min } } }
  free: { limits: { per-company: { rate: 10/min, burst: 10 } } }
  internal: { limits: { per-company: { unlimited: true } } }
`;

const SEED_004 = `
routes:
  - { name: health, match: { path: /health }, public: true, rateLimits: { exempt: true } }
  - { name: login, match: { path: /auth/login }, public: true }
  - { name: me, match: { path: /auth/me } }
rateLimits:
  policies:
    - name: per-ip-endpoint
      key: [ip, route]
      window: 60s
      limit: 20
      lockout: { after: 10, for: 15m }
`;

describe('token bucket (GCRA), seed 003: 100/min per company, burst 200', () => {
  it('admits the burst at once, then exactly one request per 600 ms', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(SEED_003, runtime), '/v1/items');
    const acme = input({ tenant: 'acme', route: 'api' });
    expect(tally(limiter, 201, () => acme)).toEqual({ allow: 200, rate_limited: 1 });

    const denied = evaluateSync(limiter, acme);
    expect(denied.denial).toMatchObject({ reason: 'rate_limited', retryAfter: 1, detail: 'policy per-company' });
    runtime.clock.advance(599);
    expect(outcome(evaluateSync(limiter, acme))).toBe('rate_limited');
    runtime.clock.advance(1);
    expect(outcome(evaluateSync(limiter, acme))).toBe('allow');
    expect(outcome(evaluateSync(limiter, acme))).toBe('rate_limited');

    // One minute refills 100 tokens, not more.
    runtime.clock.advance(60_000);
    expect(tally(limiter, 101, () => acme)).toEqual({ allow: 100, rate_limited: 1 });
    // Three idle minutes refill the bucket to its 200, never beyond.
    runtime.clock.advance(180_000);
    expect(tally(limiter, 201, () => acme)).toEqual({ allow: 200, rate_limited: 1 });
  });

  it('keeps one bucket per company', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(SEED_003, runtime), '/v1/items');
    expect(tally(limiter, 200, () => input({ tenant: 'acme' }))).toEqual({ allow: 200 });
    expect(tally(limiter, 200, () => input({ tenant: 'globex' }))).toEqual({ allow: 200 });
    expect(outcome(evaluateSync(limiter, input({ tenant: 'acme' })))).toBe('rate_limited');
  });

  it('Retry-After is the wait for enough tokens, rounded up to whole seconds', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(`
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  policies: [{ name: slow, key: [tenant], rate: 1/min, burst: 2 }]
`, runtime), '/x');
    const acme = input({ tenant: 'acme' });
    tally(limiter, 2, () => acme);
    expect(evaluateSync(limiter, acme).denial?.retryAfter).toBe(60);
    runtime.clock.advance(59_001);
    expect(evaluateSync(limiter, acme).denial?.retryAfter).toBe(1);
    runtime.clock.advance(999);
    expect(outcome(evaluateSync(limiter, acme))).toBe('allow');
  });

  it('applies tenant plans: another rate, its own default burst, or no limit', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(SEED_003, runtime), '/v1/items');
    // rate 1000/min without a burst: the burst is the plan's own 1000.
    expect(tally(limiter, 1001, () => input({ tenant: 'big' }))).toEqual({ allow: 1000, rate_limited: 1 });
    expect(tally(limiter, 11, () => input({ tenant: 'free' }))).toEqual({ allow: 10, rate_limited: 1 });
    runtime.clock.advance(6000);
    expect(tally(limiter, 2, () => input({ tenant: 'free' }))).toEqual({ allow: 1, rate_limited: 1 });
    expect(tally(limiter, 5000, () => input({ tenant: 'internal' }))).toEqual({ allow: 5000 });
  });

  it('skips a policy whose key part the request lacks (public route, no tenant)', () => {
    const runtime = testRuntime();
    const policy = compile(`
routes:
  - { name: open, match: { path: /open }, public: true }
  - { name: api, match: { pathPrefix: /v1/ } }
rateLimits:
  policies: [{ name: per-company, key: [tenant], rate: 1/min, burst: 1 }]
`, runtime);
    const open = limiterAt(policy, '/open');
    expect(tally(open, 50, () => input({ principal: null, route: 'open' }))).toEqual({ allow: 50 });
    expect(tally(open, 5, () => input({ principal: { method: 'host', scopes: [] }, route: 'open' }))).toEqual({ allow: 5 });
  });
});

describe('sliding window, seed 004: 20 per 60 s per IP per endpoint', () => {
  it('counts exactly the requests of the last 60 s (not a fixed window)', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(SEED_004, runtime), '/auth/login');
    const client = input({ principal: null, route: 'login', ip: '198.51.100.1' });
    expect(tally(limiter, 10, () => client)).toEqual({ allow: 10 });
    runtime.clock.advance(30_000);
    expect(tally(limiter, 11, () => client)).toEqual({ allow: 10, rate_limited: 1 });
    // The first ten leave the window at exactly t = 60 s.
    expect(evaluateSync(limiter, client).denial?.retryAfter).toBe(30);
    runtime.clock.advance(29_999);
    expect(outcome(evaluateSync(limiter, client))).toBe('rate_limited');
    runtime.clock.advance(1);
    expect(tally(limiter, 11, () => client)).toEqual({ allow: 10, rate_limited: 1 });
    expect(evaluateSync(limiter, client).denial?.retryAfter).toBe(30);
  });

  it('refuses a burst straddling a fixed-window boundary', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(SEED_004, runtime), '/auth/login');
    const client = input({ principal: null, route: 'login' });
    runtime.clock.set(Date.UTC(2026, 0, 1, 0, 0, 59));
    expect(tally(limiter, 20, () => client)).toEqual({ allow: 20 });
    runtime.clock.advance(2000); // a fixed per-minute window would have reset here
    expect(outcome(evaluateSync(limiter, client))).toBe('rate_limited');
  });

  it('keeps one window per IP and per endpoint; /health is exempt', () => {
    const runtime = testRuntime();
    const policy = compile(SEED_004, runtime);
    const login = limiterAt(policy, '/auth/login');
    const me = limiterAt(policy, '/auth/me');
    expect(tally(login, 21, () => input({ principal: null, route: 'login', ip: '198.51.100.1' }))).toEqual({ allow: 20, rate_limited: 1 });
    expect(tally(login, 20, () => input({ principal: null, route: 'login', ip: '198.51.100.2' }))).toEqual({ allow: 20 });
    expect(tally(me, 20, () => input({ route: 'me', ip: '198.51.100.1' }))).toEqual({ allow: 20 });
    const health = policy.routes.match('api.example.com', 'GET', '/health');
    expect(health?.rateLimiter).toBeUndefined();
  });

  it('locks the key out after 10 violations, for 15 minutes', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(SEED_004, runtime), '/auth/login');
    const client = input({ principal: null, route: 'login' });
    expect(tally(limiter, 29, () => client)).toEqual({ allow: 20, rate_limited: 9 });
    const tenth = evaluateSync(limiter, client);
    expect(tenth.denial).toMatchObject({ reason: 'locked_out', retryAfter: 900 });
    // The window emptying does not lift the lockout.
    runtime.clock.advance(61_000);
    expect(evaluateSync(limiter, client).denial).toMatchObject({ reason: 'locked_out', retryAfter: 839 });
    runtime.clock.advance(839_000 - 1);
    expect(outcome(evaluateSync(limiter, client))).toBe('locked_out');
    runtime.clock.advance(1);
    expect(tally(limiter, 21, () => client)).toEqual({ allow: 20, rate_limited: 1 });
    // Other clients were never affected.
    expect(outcome(evaluateSync(limiter, input({ principal: null, route: 'login', ip: '198.51.100.9' })))).toBe('allow');
  });

  it('forgets violations older than `within`', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(`
routes: [{ name: login, match: { path: /login }, public: true }]
rateLimits:
  policies:
    - { name: login, key: [ip], window: 10s, limit: 1, lockout: { after: 3, within: 1m, for: 5m } }
`, runtime), '/login');
    const client = input({ principal: null, route: 'login' });
    expect(tally(limiter, 3, () => client)).toEqual({ allow: 1, rate_limited: 2 });
    runtime.clock.advance(60_000); // the two violations expire
    expect(tally(limiter, 3, () => client)).toEqual({ allow: 1, rate_limited: 2 });
    expect(outcome(evaluateSync(limiter, client))).toBe('locked_out');
  });
});

describe('several policies on one request', () => {
  const TWO = `
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  policies:
    - { name: per-ip, key: [ip], window: 1m, limit: 2 }
    - { name: per-tenant, key: [tenant], rate: 1/hour, burst: 5 }
`;

  const TWO_CALLER_KEYED = `
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  policies:
    - { name: per-subject, key: [subject], window: 1m, limit: 2 }
    - { name: per-tenant, key: [tenant], rate: 1/hour, burst: 5 }
`;

  it('a refused request consumes nothing from the limits that would have let it pass', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(TWO, runtime), '/x');
    expect(tally(limiter, 4, () => input({ ip: '10.0.0.1' }))).toEqual({ allow: 2, rate_limited: 2 });
    // per-tenant spent only 2 of its 5: three more from other addresses pass.
    expect(tally(limiter, 4, (i) => input({ ip: `10.0.1.${i}` }))).toEqual({ allow: 3, rate_limited: 1 });
  });

  it('reports the policy with the longest wait among the limits of one phase', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(TWO_CALLER_KEYED, runtime), '/x');
    // per-subject of s0 spent (2 of 2), per-tenant spent (5 of 5): both refuse, per-tenant waits longer.
    expect(tally(limiter, 5, (i) => input({ subject: `s${Math.max(0, i - 1)}` }))).toEqual({ allow: 5 });
    const denied = evaluateSync(limiter, input({ subject: 's0' }));
    expect(denied.denial).toMatchObject({ reason: 'rate_limited', detail: 'policy per-tenant', retryAfter: 3600 });
  });

  it('decides request-keyed limits (ip) before caller-keyed ones: an IP refusal answers first', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(TWO, runtime), '/x');
    expect(tally(limiter, 5, (i) => input({ ip: `10.0.0.${Math.max(0, i - 1)}` }))).toEqual({ allow: 5 });
    const denied = evaluateSync(limiter, input({ ip: '10.0.0.0' }));
    expect(denied.denial).toMatchObject({ reason: 'rate_limited', detail: 'policy per-ip', retryAfter: 60 });
  });

  it('charges a route cost instead of the policy cost, and skips policies per route', () => {
    const runtime = testRuntime();
    const policy = compile(`
routes:
  - { name: export, match: { path: /export }, rateLimits: { cost: 5 } }
  - { name: cheap, match: { path: /cheap }, rateLimits: { skip: [per-ip] } }
  - { name: api, match: { pathPrefix: / } }
rateLimits:
  policies:
    - { name: per-ip, key: [ip], window: 1m, limit: 10 }
    - { name: per-tenant, key: [tenant], rate: 1/hour, burst: 100, cost: 2 }
`, runtime);
    expect(tally(limiterAt(policy, '/export'), 3, () => input({ route: 'export' }))).toEqual({ allow: 2, rate_limited: 1 });
    // per-tenant: 2 × 5 spent; 45 requests of cost 2 use the remaining 90.
    expect(tally(limiterAt(policy, '/cheap'), 46, () => input({ route: 'cheap' }))).toEqual({ allow: 45, rate_limited: 1 });
  });

  it('applies a policy only to the routes it names', () => {
    const runtime = testRuntime();
    const policy = compile(`
routes:
  - { name: login, match: { path: /login }, public: true }
  - { name: api, match: { pathPrefix: / } }
rateLimits:
  policies:
    - { name: login-ip, key: [ip], window: 1m, limit: 1, routes: [login] }
`, runtime);
    expect(tally(limiterAt(policy, '/login'), 2, () => input({ principal: null, route: 'login' }))).toEqual({ allow: 1, rate_limited: 1 });
    expect(policy.routes.match('api.example.com', 'GET', '/other')?.rateLimiter).toBeUndefined();
  });
});

describe('key parts', () => {
  it('keys by header value, subject (per issuer), API key id, method and host', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(`
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  policies:
    - { name: per-client, key: [header:X-Client-Id, method], window: 1m, limit: 1 }
    - { name: per-subject, key: [subject], window: 1m, limit: 2 }
    - { name: per-key, key: [apiKey, host], window: 1m, limit: 1 }
`, runtime), '/x');
    const client = (id: string, method = 'GET') => input({ headers: { 'x-client-id': id }, method, subject: `s-${id}` });
    expect(outcome(evaluateSync(limiter, client('a')))).toBe('allow');
    expect(outcome(evaluateSync(limiter, client('a')))).toBe('rate_limited');
    expect(outcome(evaluateSync(limiter, client('a', 'POST')))).toBe('allow');
    // Same subject from another issuer is another caller.
    const other = input({ principal: { method: 'jwt', issuer: 'supabase', subject: 's-a', tenant: 'acme', scopes: [] }, headers: { 'x-client-id': 'z' } });
    expect(outcome(evaluateSync(limiter, other))).toBe('allow');
    // Without the header the per-client policy is skipped; the per-key one applies to key callers only.
    const keyed = input({ keyId: 'k1', subject: 'svc' });
    expect(tally(limiter, 2, () => keyed)).toEqual({ allow: 1, rate_limited: 1 });
    expect(outcome(evaluateSync(limiter, input({ keyId: 'k1', subject: 'svc2', host: 'other.example.com' })))).toBe('allow');
  });

  it('hashes very long values instead of storing them', () => {
    const runtime = testRuntime();
    const policy = compile(`
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  backend: { memory: { maxKeys: 10 } }
  policies: [{ name: h, key: ['header:x-k'], window: 1m, limit: 1 }]
`, runtime);
    const limiter = limiterAt(policy, '/x');
    const long = 'v'.repeat(10_000);
    expect(tally(limiter, 2, () => input({ headers: { 'x-k': long } }))).toEqual({ allow: 1, rate_limited: 1 });
    expect(outcome(evaluateSync(limiter, input({ headers: { 'x-k': long + 'w' } })))).toBe('allow');
  });
});

describe('shadow mode', () => {
  it('evaluates and counts but never refuses', async () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(`
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  policies:
    - { name: trial, key: [tenant], window: 1m, limit: 2, shadow: true }
    - { name: real, key: [tenant], window: 1m, limit: 4 }
`, runtime), '/x');
    const verdicts = [0, 1, 2, 3, 4].map(() => evaluateSync(limiter, input()));
    expect(verdicts.map(outcome)).toEqual(['allow', 'allow', 'allow', 'allow', 'rate_limited']);
    expect(verdicts.map((v) => v.note)).toEqual([undefined, undefined, 'shadow:trial', 'shadow:trial', 'shadow:trial']);
    expect(await metricValue(runtime, 'portcullis_ratelimit_decisions_total', { policy: 'trial', result: 'shadow_rate_limited' })).toBe(3);
    expect(await metricValue(runtime, 'portcullis_ratelimit_decisions_total', { policy: 'real', result: 'allowed' })).toBe(4);
    expect(await metricValue(runtime, 'portcullis_ratelimit_decisions_total', { policy: 'real', result: 'rate_limited' })).toBe(1);
  });
});

describe('shadow lockout and the default route', () => {
  it('a shadow policy locks out in the log only; a policy can target unmatched requests', () => {
    const runtime = testRuntime();
    const policy = compile(`
default: authenticated
routes: [{ name: api, match: { path: /api } }]
rateLimits:
  policies:
    - { name: trial, key: [tenant], window: 1m, limit: 1, lockout: { after: 2, for: 1h }, shadow: true, routes: [default] }
`, runtime);
    expect(policy.routes.match('api.example.com', 'GET', '/api')?.rateLimiter).toBeUndefined();
    const limiter = policy.defaultRoute.rateLimiter!;
    const verdicts = [0, 1, 2, 3].map(() => evaluateSync(limiter, input({ route: 'default' })));
    expect(verdicts.map(outcome)).toEqual(['allow', 'allow', 'allow', 'allow']);
    expect(verdicts.map((v) => v.note)).toEqual([undefined, 'shadow:trial', 'shadow:trial:locked_out', 'shadow:trial:locked_out']);
  });
});

describe('headers', () => {
  const POLICY = (headers: string, quota: boolean) => `
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  headers: ${headers}
  quotaHeaders: ${quota}
  policies:
    - { name: per-company, key: [tenant], rate: 100/min, burst: 200 }
    - { name: per-ip, key: [ip], window: 60s, limit: 20 }
`;

  it('draft: RateLimit-Policy and RateLimit list every enforced policy (request-keyed ones first)', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(POLICY('draft', true), runtime), '/x');
    const first = evaluateSync(limiter, input());
    expect(first.responseHeaders).toEqual([
      { name: 'ratelimit-policy', value: '"per-ip";q=20;w=60, "per-company";q=200;w=120' },
      { name: 'ratelimit', value: '"per-ip";r=19;t=60, "per-company";r=199;t=1' },
    ]);
    tally(limiter, 19, () => input());
    // The per-ip refusal is decided before identification, so per-company is not consulted.
    const denied = evaluateSync(limiter, input());
    expect(denied.denial?.retryAfter).toBe(60);
    expect(header(denied, 'ratelimit')).toBe('"per-ip";r=0;t=60');
  });

  it('legacy: X-RateLimit-* of the refusing policy, or of the one with least left', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(POLICY('legacy', true), runtime), '/x');
    expect(evaluateSync(limiter, input()).responseHeaders).toEqual([
      { name: 'x-ratelimit-limit', value: '20' },
      { name: 'x-ratelimit-remaining', value: '19' },
      { name: 'x-ratelimit-reset', value: '60' },
    ]);
  });

  it('legacy on a refusal reports the refusing policy', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(POLICY('legacy', false), runtime), '/x');
    tally(limiter, 20, () => input());
    const denied = evaluateSync(limiter, input());
    expect(denied.denial?.headers).toEqual([
      { name: 'x-ratelimit-limit', value: '20' },
      { name: 'x-ratelimit-remaining', value: '0' },
      { name: 'x-ratelimit-reset', value: '60' },
    ]);
  });

  it('quota headers on allowed responses are off by default; none sends nothing', () => {
    const runtime = testRuntime();
    const limiter = limiterAt(compile(POLICY('draft', false), runtime), '/x');
    expect(evaluateSync(limiter, input()).responseHeaders).toEqual([]);
    const none = limiterAt(compile(POLICY('none', true), testRuntime()), '/x');
    expect(evaluateSync(none, input()).responseHeaders).toEqual([]);
    tally(none, 20, () => input());
    expect(evaluateSync(none, input()).denial).toMatchObject({ reason: 'rate_limited', headers: [] });
  });
});

describe('memory backend', () => {
  it('stays within maxKeys, dropping the least recently used counters', () => {
    const runtime = testRuntime();
    const policy = compile(`
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  backend: { memory: { maxKeys: 50 } }
  policies: [{ name: per-ip, key: [ip], window: 1m, limit: 1 }]
`, runtime);
    const limiter = limiterAt(policy, '/x');
    for (let i = 0; i < 500; i++) evaluateSync(limiter, input({ ip: `10.0.${i >> 8}.${i & 255}` }));
    const store = runtime.resources.peek<MemoryStore>('ratelimit:memory:50');
    expect(store?.size).toBe(50);
  });

  it('keeps counters across a policy reload', () => {
    const runtime = testRuntime();
    const yaml = `
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  policies: [{ name: per-ip, key: [ip], window: 1m, limit: 3 }]
`;
    expect(tally(limiterAt(compile(yaml, runtime), '/x'), 2, () => input())).toEqual({ allow: 2 });
    expect(tally(limiterAt(compile(yaml, runtime), '/x'), 2, () => input())).toEqual({ allow: 1, rate_limited: 1 });
  });
});

describe('memory backend: a policy whose algorithm changed (a reload keeps its name, so its keys)', () => {
  it('starts the counter afresh instead of failing every check until the old state expires', () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const store = new MemoryStore(clock, 100);
    const key = 'per-tenant\u001facme';
    const bucket = { algorithm: 'bucket', intervalMs: 3_600_000, burst: 2, toleranceMs: 7_200_000 } as const;
    const window = { algorithm: 'window', limit: 3, windowMs: 3_600_000 } as const;
    const as = (shape: typeof bucket | typeof window) => store.check([{ key, shape, lockout: undefined, cost: 1, enforce: true }])[0]!.status;
    expect([as(bucket), as(bucket), as(bucket)]).toEqual([0, 0, 1]);
    // The bucket's state is still in force (hours ahead): the window counts from zero.
    expect([as(window), as(window), as(window), as(window)]).toEqual([0, 0, 0, 1]);
    // And back: the window's state reads as no bucket state at all.
    expect([as(bucket), as(bucket), as(bucket)]).toEqual([0, 0, 1]);
  });
});
