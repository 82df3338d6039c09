// The Redis deadline counts from when the reply could have been read: a busy process (an event
// loop stalled by GC or a burst of work) must not misreport a healthy Redis as down. Real Redis at
// 127.0.0.1:6379, random key prefix, the default 20 ms deadline.
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/runtime.js';
import { REDIS_URL, redisAvailable } from '../support/services.js';
import { testRuntime } from '../support/runtime.js';
import { compile, input, limiterAt, metricValue, outcome } from './helpers.js';

const PREFIX = `portcullis-test:deadline:${process.pid}:${randomBytes(4).toString('hex')}:`;
const runtimes: Runtime[] = [];

/** Keep the event loop busy, as a long GC pause or a CPU-heavy callback does. */
function stall(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy
  }
}

/** One turn of the loop: the limiter's flush (queued with setImmediate before this) has sent. */
const afterFlush = () => new Promise<void>((resolve) => setImmediate(resolve));

describe.skipIf(!(await redisAvailable()))('redis deadline under event-loop stalls', () => {
  afterAll(async () => {
    for (const runtime of runtimes) await runtime.resources.closeAll();
  });

  it('a reply that arrived during a stall longer than the deadline is used, not a 503', async () => {
    const runtime = testRuntime();
    runtimes.push(runtime);
    const policy = compile(
      `
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  backend: { redis: { url: "${REDIS_URL}", keyPrefix: "${PREFIX}", timeout: 20ms } }
  failure: closed
  policies:
    - { name: per-ip, key: [ip], window: 1m, limit: 1000 }
`,
      runtime,
    );
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    // Connection and script warm (the first call may miss 20 ms on a loaded host: retried, not counted).
    for (let i = 0; i < 20 && outcome(await limiter.evaluate(input({ ip: '192.0.2.1' }))) !== 'allow'; i++) await new Promise((r) => setTimeout(r, 50));
    expect(outcome(await limiter.evaluate(input({ ip: '192.0.2.1' })))).toBe('allow');
    const timeoutsBefore = await metricValue(runtime, 'portcullis_ratelimit_backend_errors_total', { kind: 'timeout' });
    const errorsBefore = await metricValue(runtime, 'portcullis_ratelimit_backend_errors_total', { kind: 'error' });

    const results: string[] = [];
    for (const ms of [50, 50, 50, 150, 150]) {
      const pending = limiter.evaluate(input({ ip: '192.0.2.1' }));
      await afterFlush();
      stall(ms); // Redis answers meanwhile; the deadline timer is due before the reply is read
      results.push(outcome(await pending));
    }
    expect(results).toEqual(['allow', 'allow', 'allow', 'allow', 'allow']);
    expect(await metricValue(runtime, 'portcullis_ratelimit_backend_errors_total', { kind: 'timeout' })).toBe(timeoutsBefore);
    expect(await metricValue(runtime, 'portcullis_ratelimit_backend_errors_total', { kind: 'error' })).toBe(errorsBefore);
  });
});
