// Redis failure and recovery, on a redis-server this file starts on its own port: a paused
// Redis (timeouts, circuit breaker, fail closed, recovery), a killed Redis (fail open, recovery
// after restart), script cache loss (EVALSHA → NOSCRIPT → EVAL), per-policy failure modes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/runtime.js';
import { isPromise } from '../../src/types.js';
import { testRuntime } from '../support/runtime.js';
import { compile, input, limiterAt, metricValue, outcome } from './helpers.js';
import { freePort, RedisServer, redisServerInstalled } from './redis-server.js';

const runtimes: Runtime[] = [];

function newRuntime() {
  const runtime = testRuntime();
  runtimes.push(runtime);
  return runtime;
}

function policyFor(url: string, failure: string, policies: string): string {
  return `
routes:
  - { name: api, match: { pathPrefix: /api/ } }
  - { name: open, match: { pathPrefix: /open/ } }
rateLimits:
  backend: { redis: { url: "${url}", timeout: 150ms, circuitBreaker: { failures: 3, cooldown: 300ms } } }
  failure: ${failure}
  policies:
${policies}
`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(!redisServerInstalled())('redis failure and recovery', () => {
  let server: RedisServer;

  beforeAll(async () => {
    server = new RedisServer(await freePort());
    await server.start();
  });

  afterAll(async () => {
    for (const runtime of runtimes) await runtime.resources.closeAll();
    await server.stop();
  });

  it('a paused Redis: bounded timeouts, the breaker opens, checks fail closed without waiting, then recover', async () => {
    const runtime = newRuntime();
    const policy = compile(policyFor(server.url, 'closed', '    - { name: per-ip, key: [ip], window: 1m, limit: 100 }'), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/api/x');
    expect(outcome(await limiter.evaluate(input()))).toBe('allow');

    const admin = server.admin();
    await admin.call('CLIENT', 'PAUSE', '1000', 'ALL');
    for (let i = 0; i < 3; i++) {
      const verdict = limiter.evaluate(input());
      expect(isPromise(verdict)).toBe(true);
      expect((await verdict).denial).toMatchObject({ reason: 'ratelimit_unavailable', retryAfter: 1 });
    }
    expect(await metricValue(runtime, 'portcullis_ratelimit_backend_errors_total', { kind: 'timeout' })).toBe(3);
    expect(await metricValue(runtime, 'portcullis_ratelimit_circuit_state', {})).toBe(1);

    // Open breaker: answered at once, no promise, no Redis.
    const skipped = limiter.evaluate(input());
    expect(isPromise(skipped)).toBe(false);
    expect(skipped).toMatchObject({ denial: { reason: 'ratelimit_unavailable', retryAfter: 1 } });
    expect(await metricValue(runtime, 'portcullis_ratelimit_backend_errors_total', { kind: 'circuit_open' })).toBe(1);
    expect(await metricValue(runtime, 'portcullis_ratelimit_decisions_total', { policy: 'per-ip', result: 'fail_closed' })).toBe(4);

    await sleep(1100); // the pause ends
    runtime.clock.advance(300); // the cooldown ends: the next check is the probe
    expect(outcome(await limiter.evaluate(input()))).toBe('allow');
    expect(await metricValue(runtime, 'portcullis_ratelimit_circuit_state', {})).toBe(0);
    expect(isPromise(limiter.evaluate(input()))).toBe(true);
    admin.disconnect();
  });

  it('a paused Redis and a batch of concurrent checks: each fails, the breaker counts the batch once', async () => {
    const runtime = newRuntime();
    const policy = compile(policyFor(server.url, 'closed', '    - { name: per-ip, key: [ip], window: 1m, limit: 100 }'), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/api/x');
    expect(outcome(await limiter.evaluate(input()))).toBe('allow');
    const admin = server.admin();
    await admin.call('CLIENT', 'PAUSE', '500', 'ALL');
    const verdicts = await Promise.all(Array.from({ length: 10 }, (_, i) => limiter.evaluate(input({ ip: `192.0.2.${i}` }))));
    for (const verdict of verdicts) expect(verdict.denial?.reason).toBe('ratelimit_unavailable');
    expect(await metricValue(runtime, 'portcullis_ratelimit_backend_errors_total', { kind: 'timeout' })).toBe(10);
    expect(await metricValue(runtime, 'portcullis_ratelimit_circuit_state', {})).toBe(0); // 1 failure of 3
    await sleep(600); // the pause ends
    expect(outcome(await limiter.evaluate(input()))).toBe('allow');
    admin.disconnect();
  });

  it('coalesces concurrent checks into one EVALSHA per at most 128 requests, exactly', async () => {
    const runtime = newRuntime();
    const policy = compile(policyFor(server.url, 'closed', '    - { name: per-ip, key: [ip], window: 1m, limit: 100 }'), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/api/x');
    expect(outcome(await limiter.evaluate(input({ ip: '198.51.100.1' })))).toBe('allow'); // EVAL on first use
    const admin = server.admin();
    await admin.config('RESETSTAT');
    const results = (await Promise.all(Array.from({ length: 300 }, () => limiter.evaluate(input({ ip: '198.51.100.2' }))))).map(outcome);
    expect(results.filter((o) => o === 'allow')).toHaveLength(100);
    expect(results.filter((o) => o === 'rate_limited')).toHaveLength(200);
    const stats = String(await admin.info('commandstats'));
    expect(Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1])).toBe(3); // 128 + 128 + 44
    expect(/cmdstat_eval:/.test(stats)).toBe(false);
    admin.disconnect();
  });

  it('a killed Redis: fail open allows (noted and counted); after a restart counting resumes', async () => {
    const runtime = newRuntime();
    const policy = compile(policyFor(server.url, 'open', '    - { name: per-ip, key: [ip], window: 1m, limit: 2 }'), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/api/x');
    const client = input({ ip: '192.0.2.50' });
    expect(outcome(await limiter.evaluate(client))).toBe('allow');

    await server.kill();
    for (let i = 0; i < 5; i++) {
      const verdict = await limiter.evaluate(client);
      expect(verdict.denial).toBeUndefined();
      expect(verdict.note).toBe('ratelimit-fail-open');
    }
    expect(await metricValue(runtime, 'portcullis_ratelimit_decisions_total', { policy: 'per-ip', result: 'fail_open' })).toBe(5);

    await server.start(); // empty: the restarted Redis lost every counter
    const deadline = Date.now() + 10_000;
    let recovered = false;
    while (!recovered && Date.now() < deadline) {
      runtime.clock.advance(300);
      recovered = (await limiter.evaluate(client)).note === undefined;
      if (!recovered) await sleep(100);
    }
    expect(recovered).toBe(true);
    // That check counted one; one more passes, the next is refused.
    expect(outcome(await limiter.evaluate(client))).toBe('allow');
    expect(outcome(await limiter.evaluate(client))).toBe('rate_limited');
  });

  it('reloads the script after the script cache is flushed (EVALSHA → NOSCRIPT → EVAL)', async () => {
    const runtime = newRuntime();
    const policy = compile(policyFor(server.url, 'closed', '    - { name: per-key, key: [tenant], window: 1m, limit: 5 }'), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/api/x');
    const admin = server.admin();
    await admin.config('RESETSTAT');
    expect(outcome(await limiter.evaluate(input({ tenant: 'cache' })))).toBe('allow');
    expect(outcome(await limiter.evaluate(input({ tenant: 'cache' })))).toBe('allow');
    await admin.script('FLUSH');
    expect(outcome(await limiter.evaluate(input({ tenant: 'cache' })))).toBe('allow');
    expect(outcome(await limiter.evaluate(input({ tenant: 'cache' })))).toBe('allow');
    const stats = String(await admin.info('commandstats'));
    const calls = (name: string) => Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    // First use on the connection sends EVAL; then EVALSHA; after the flush NOSCRIPT → EVAL once more.
    expect(calls('eval')).toBe(2);
    expect(calls('evalsha')).toBe(3);
    admin.disconnect();
  });

  it('fails closed when any enforced policy on the route says so; shadow policies never deny', async () => {
    const port = await freePort(); // nothing listens here
    const runtime = newRuntime();
    const policy = compile(
      policyFor(
        `redis://127.0.0.1:${port}`,
        'closed',
        `    - { name: lenient, key: [ip], window: 1m, limit: 5, failure: open }
    - { name: strict, key: [tenant], window: 1m, limit: 5, routes: [api] }
    - { name: trial, key: [ip], window: 1m, limit: 5, shadow: true, routes: [open] }`,
      ),
      runtime,
    );
    const api = limiterAt(policy, '/api/x');
    const open = limiterAt(policy, '/open/x');
    expect((await api.evaluate(input({ route: 'api' }))).denial?.reason).toBe('ratelimit_unavailable');
    const verdict = await open.evaluate(input({ route: 'open' }));
    expect(verdict.denial).toBeUndefined();
    expect(verdict.note).toBe('ratelimit-fail-open');
  });
});
