// The Redis backend against the real Redis at 127.0.0.1:6379: the Lua script matches the memory
// backend exactly (controlled clock), two instances sharing Redis admit exactly the limit under
// 64 concurrent callers, refused keys are remembered locally.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { redisBackendSchema } from '../../src/ratelimit/config.js';
import { MemoryStore } from '../../src/ratelimit/memory-store.js';
import { RedisStore } from '../../src/ratelimit/redis-store.js';
import type { LimitCheck, LimitOutcome, LimitShape, LockoutShape } from '../../src/ratelimit/types.js';
import { isPromise } from '../../src/types.js';
import { REDIS_URL, redisAvailable } from '../support/services.js';
import { testRuntime } from '../support/runtime.js';
import type { Runtime } from '../../src/runtime.js';
import { compile, evaluate, input, limiterAt, outcome } from './helpers.js';

async function compileReady(yaml: string, runtime: Runtime) {
  const policy = compile(yaml, runtime);
  await policy.ready;
  return policy;
}

const PREFIX = `portcullis-test:rl:${process.pid}:${randomBytes(4).toString('hex')}:`;
const runtimes: Runtime[] = [];

function redisPolicy(policies: string, extra = ''): string {
  return `
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  backend: { redis: { url: "${REDIS_URL}", keyPrefix: "${PREFIX}${randomBytes(3).toString('hex')}:", timeout: 2s${extra} } }
  policies:
${policies}
`;
}

function newRuntime(): Runtime & { clock: ManualClock } {
  const runtime = testRuntime();
  runtimes.push(runtime);
  return runtime;
}

/** A RedisStore on the test Redis, each request carrying `clock`'s time (time: local), connected. */
async function localTimeStore(clock: ManualClock): Promise<RedisStore> {
  const config = redisBackendSchema.parse({ url: REDIS_URL, time: 'local', timeout: '2s' });
  const redis = new RedisStore({ config, clock, logger: silentLogger(), metrics: new Metrics({ defaultMetrics: false }) });
  await redis.ready;
  return redis;
}

/** Deterministic pseudo-random numbers (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe.skipIf(!(await redisAvailable()))('redis backend', () => {
  afterAll(async () => {
    for (const runtime of runtimes) await runtime.resources.closeAll();
    const admin = new Redis(REDIS_URL);
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 1000);
      if (keys.length > 0) await admin.del(...keys);
      cursor = next;
    } while (cursor !== '0');
    admin.disconnect();
  });

  it('the Lua script answers exactly like the memory backend (same clock, 1500 random checks)', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const memory = new MemoryStore(clock, 10_000);
    const redis = await localTimeStore(clock);
    const bucket: LimitShape = { algorithm: 'bucket', intervalMs: 1000 / 3, burst: 4, toleranceMs: (4 * 1000) / 3 };
    const window: LimitShape = { algorithm: 'window', limit: 5, windowMs: 10_000 };
    const strict: LimitShape = { algorithm: 'window', limit: 3, windowMs: 5000 };
    const lockout: LockoutShape = { after: 3, withinMs: 20_000, forMs: 30_000 };
    const slowBucket: LimitShape = { algorithm: 'bucket', intervalMs: 2500, burst: 3, toleranceMs: 7500 };
    const tag = randomBytes(3).toString('hex');
    const random = prng(20260101);
    const statuses = new Set<number>();
    try {
      for (let step = 0; step < 1500; step++) {
        if (random() < 0.7) clock.advance(Math.floor(random() * 900));
        const who = Math.floor(random() * 3);
        const cost = random() < 0.2 ? 2 : 1;
        const all: LimitCheck[] = [
          { key: `${PREFIX}{b:${tag}:${who}}`, shape: bucket, lockout: undefined, cost, enforce: true },
          { key: `${PREFIX}{w:${tag}:${who}}`, shape: window, lockout: undefined, cost, enforce: true },
          { key: `${PREFIX}{l:${tag}:${who}}`, shape: strict, lockout, cost, enforce: true },
          { key: `${PREFIX}{s:${tag}:${who % 2}}`, shape: slowBucket, lockout: undefined, cost, enforce: false },
        ];
        const checks = all.filter(() => random() < 0.6);
        if (checks.length === 0) continue;
        const expected = memory.check(checks);
        const actual = await redis.check(checks);
        expect(actual, `step ${step}`).toEqual(expected);
        for (const o of expected) statuses.add(o.status);
      }
    } finally {
      await redis.close();
    }
    // The run exercised admissions, refusals and lockouts alike.
    expect([...statuses].sort()).toEqual([0, 1, 2]);
  });

  it('a batch (checks asked in the same turn) answers exactly like the memory backend applied in order', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const memory = new MemoryStore(clock, 10_000);
    const redis = await localTimeStore(clock);
    const bucket: LimitShape = { algorithm: 'bucket', intervalMs: 200, burst: 6, toleranceMs: 1200 };
    const window: LimitShape = { algorithm: 'window', limit: 8, windowMs: 4000 };
    const lockout: LockoutShape = { after: 4, withinMs: 10_000, forMs: 6000 };
    const shadow: LimitShape = { algorithm: 'window', limit: 5, windowMs: 3000 };
    const tag = randomBytes(3).toString('hex');
    const random = prng(20260202);
    const statuses = new Set<number>();
    let batched = 0;
    try {
      for (let round = 0; round < 60; round++) {
        clock.advance(Math.floor(random() * 700));
        // Up to 300 requests in one turn: more than one script call's worth (MAX_BATCH_REQUESTS).
        const size = round % 10 === 9 ? 300 : 1 + Math.floor(random() * 40);
        const batch: LimitCheck[][] = [];
        for (let r = 0; r < size; r++) {
          const who = Math.floor(random() * 4);
          const cost = random() < 0.2 ? 2 : 1;
          const all: LimitCheck[] = [
            { key: `${PREFIX}{bb:${tag}:${who}}`, shape: bucket, lockout: undefined, cost, enforce: true },
            { key: `${PREFIX}{bw:${tag}:${who % 2}}`, shape: window, lockout, cost, enforce: true },
            { key: `${PREFIX}{bs:${tag}}`, shape: shadow, lockout: undefined, cost, enforce: false },
          ];
          const checks = all.filter(() => random() < 0.6);
          if (checks.length > 0) batch.push(checks);
        }
        const expected = batch.map((checks) => memory.check(checks));
        const actual = await Promise.all(batch.map((checks) => redis.check(checks)));
        expect(actual, `round ${round}`).toEqual(expected);
        batched += batch.length;
        for (const outcomes of expected) for (const o of outcomes) statuses.add(o.status);
      }
    } finally {
      await redis.close();
    }
    expect(batched).toBeGreaterThan(1000);
    expect([...statuses].sort()).toEqual([0, 1, 2]);
  });

  it("a batch leaves a token bucket's state as its last charged request would, expiring when the bucket is full again", async () => {
    const t0 = Date.UTC(2026, 0, 1);
    const clock = new ManualClock(t0);
    const redis = await localTimeStore(clock);
    // One unit every 1000 ms, burst 10: the TAT may run at most 10 s ahead of now.
    const bucket: LimitShape = { algorithm: 'bucket', intervalMs: 1000, burst: 10, toleranceMs: 10_000 };
    const key = `${PREFIX}{ttl:${randomBytes(3).toString('hex')}}`;
    const check = (cost: number): LimitCheck[] => [{ key, shape: bucket, lockout: undefined, cost, enforce: true }];
    const admin = new Redis(REDIS_URL);
    try {
      // Five requests in one turn (one script call), 100 ms apart on their own clocks, costs 1 to
      // 5: 1+2+3+4 fill the bucket (TAT t0 + 10 s), 5 is refused and not charged.
      const asked: Promise<readonly LimitOutcome[]>[] = [];
      for (const cost of [1, 2, 3, 4, 5]) {
        asked.push(redis.check(check(cost)));
        clock.advance(100);
      }
      const outcomes = await Promise.all(asked);
      expect(outcomes.map((o) => o[0]!.status)).toEqual([0, 0, 0, 0, 1]);
      expect(Number(await admin.get(`${key}:s`))).toBe(t0 + 10_000);
      // Expires when the last charged request (cost 4, at t0 + 300) would see the bucket full again.
      const ttl = await admin.pttl(`${key}:s`);
      expect(ttl).toBeGreaterThan(8_700);
      expect(ttl).toBeLessThanOrEqual(9_700);
      // A later call at a later time: the expiry follows its request's now.
      clock.advance(3600);
      expect((await redis.check(check(2)))[0]!.status).toBe(0);
      const later = await admin.pttl(`${key}:s`);
      expect(later).toBeGreaterThan(7_000);
      expect(later).toBeLessThanOrEqual(8_000);
    } finally {
      admin.disconnect();
      await redis.close();
    }
  });

  it('a batch where one limit object is enforced and shadow, with and without a lockout, answers like the memory backend', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const memory = new MemoryStore(clock, 10_000);
    const redis = await localTimeStore(clock);
    // One shape object for every limit: the batch's specs differ only in enforce and lockout.
    const shape: LimitShape = { algorithm: 'window', limit: 4, windowMs: 5000 };
    const lockout: LockoutShape = { after: 2, withinMs: 10_000, forMs: 4000 };
    const tag = randomBytes(3).toString('hex');
    const random = prng(20261201);
    const statuses = new Set<number>();
    try {
      for (let round = 0; round < 40; round++) {
        const asked: Promise<readonly LimitOutcome[]>[] = [];
        const expected: (readonly LimitOutcome[])[] = [];
        for (let r = 0; r < 1 + Math.floor(random() * 30); r++) {
          const who = Math.floor(random() * 3);
          const checks: LimitCheck[] = [
            { key: `${PREFIX}{se:${tag}:${who}}`, shape, lockout, cost: 1, enforce: true },
            { key: `${PREFIX}{ss:${tag}:${who}}`, shape, lockout: undefined, cost: 1, enforce: false },
            { key: `${PREFIX}{sn:${tag}:${who}}`, shape, lockout: undefined, cost: 1, enforce: true },
            { key: `${PREFIX}{sl:${tag}:${who}}`, shape, lockout, cost: 1, enforce: false },
          ].filter(() => random() < 0.7);
          if (checks.length === 0) continue;
          expected.push(memory.check(checks) as readonly LimitOutcome[]);
          asked.push(redis.check(checks));
          clock.advance(Math.floor(random() * 150));
        }
        expect(await Promise.all(asked), `round ${round}`).toEqual(expected);
        for (const outcomes of expected) for (const o of outcomes) statuses.add(o.status);
      }
    } finally {
      await redis.close();
    }
    expect([...statuses].sort()).toEqual([0, 1, 2]);
  });

  it('time: server — a batch on Redis TIME admits exactly the burst, in order, and the window exactly its limit', async () => {
    const config = redisBackendSchema.parse({ url: REDIS_URL, time: 'server', timeout: '2s' });
    // The local clock is far in the past: every time the script compares must be Redis's own.
    const redis = new RedisStore({ config, clock: new ManualClock(0), logger: silentLogger(), metrics: new Metrics({ defaultMetrics: false }) });
    await redis.ready;
    const tag = randomBytes(3).toString('hex');
    const bucket: LimitShape = { algorithm: 'bucket', intervalMs: 3_600_000, burst: 5, toleranceMs: 5 * 3_600_000 };
    const window: LimitShape = { algorithm: 'window', limit: 7, windowMs: 3_600_000 };
    const admin = new Redis(REDIS_URL);
    try {
      const asked = Array.from({ length: 12 }, (_, i) =>
        redis.check([
          { key: `${PREFIX}{srv-b:${tag}}`, shape: bucket, lockout: undefined, cost: 1, enforce: false },
          { key: `${PREFIX}{srv-w:${tag}}`, shape: window, lockout: undefined, cost: i % 2 === 0 ? 1 : 2, enforce: false },
        ]),
      );
      const outcomes = await Promise.all(asked);
      expect(outcomes.map((o) => o[0]!.status)).toEqual([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]);
      // Window: costs 1, 2, 1, 2 fill 6 of 7; then 1 fits (7), and nothing more does.
      expect(outcomes.map((o) => o[1]!.status)).toEqual([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]);
      const [seconds] = await admin.time();
      const tat = Number(await admin.get(`${PREFIX}{srv-b:${tag}}:s`));
      // Five units taken at Redis's now: the TAT is five hours ahead of Redis's clock, not of 1970.
      expect(Math.abs(tat - (Number(seconds) * 1000 + 5 * 3_600_000))).toBeLessThan(5_000);
      expect(await admin.zcard(`${PREFIX}{srv-w:${tag}}:s`)).toBe(7);
    } finally {
      admin.disconnect();
      await redis.close();
    }
  });

  it('a key whose algorithm changed (a reload) starts afresh, in and across batches, exactly like the memory backend', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const memory = new MemoryStore(clock, 10_000);
    const redis = await localTimeStore(clock);
    // The same policy name (so the same key) as a bucket before a reload and a window after it.
    const bucket: LimitShape = { algorithm: 'bucket', intervalMs: 500, burst: 4, toleranceMs: 2000 };
    const window: LimitShape = { algorithm: 'window', limit: 3, windowMs: 4000 };
    const lockout: LockoutShape = { after: 3, withinMs: 10_000, forMs: 3000 };
    const tag = randomBytes(3).toString('hex');
    const random = prng(20261202);
    const statuses = new Set<number>();
    try {
      for (let round = 0; round < 80; round++) {
        const asked: Promise<readonly LimitOutcome[]>[] = [];
        const expected: (readonly LimitOutcome[])[] = [];
        for (let r = 0; r < 1 + Math.floor(random() * 12); r++) {
          const who = Math.floor(random() * 2);
          const shape = random() < 0.5 ? bucket : window;
          const checks: LimitCheck[] = [{ key: `${PREFIX}{alg:${tag}:${who}}`, shape, lockout: random() < 0.3 ? lockout : undefined, cost: random() < 0.2 ? 2 : 1, enforce: true }];
          expected.push(memory.check(checks) as readonly LimitOutcome[]);
          asked.push(redis.check(checks));
          clock.advance(Math.floor(random() * 120));
        }
        expect(await Promise.all(asked), `round ${round}`).toEqual(expected);
        for (const outcomes of expected) for (const o of outcomes) statuses.add(o.status);
        clock.advance(Math.floor(random() * 400));
      }
    } finally {
      await redis.close();
    }
    expect([...statuses].sort()).toEqual([0, 1, 2]);
  });

  it("a counter left by the other algorithm does not fail the other checks of its batch (a fail-open policy stays exact)", async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const redis = await localTimeStore(clock);
    const tag = randomBytes(3).toString('hex');
    const stale = `${PREFIX}{stale:${tag}}`;
    const other = `${PREFIX}{other:${tag}}`;
    const window: LimitShape = { algorithm: 'window', limit: 10, windowMs: 3_600_000 };
    const bucket: LimitShape = { algorithm: 'bucket', intervalMs: 3_600_000, burst: 10, toleranceMs: 36_000_000 };
    const otherLimit: LimitShape = { algorithm: 'bucket', intervalMs: 3_600_000, burst: 3, toleranceMs: 10_800_000 };
    try {
      // Before the reload: `stale` is a window (a sorted set in Redis).
      expect((await redis.check([{ key: stale, shape: window, lockout: undefined, cost: 1, enforce: true }]))[0]!.status).toBe(0);
      // After it, a bucket: every batch mixes it with another tenant's checks.
      const asked = Array.from({ length: 12 }, (_, i) =>
        redis.check([{ key: i % 2 === 0 ? stale : other, shape: i % 2 === 0 ? bucket : otherLimit, lockout: undefined, cost: 1, enforce: true }]),
      );
      const outcomes = await Promise.all(asked);
      // The stale counter starts afresh as a bucket; the other tenant gets exactly its 3.
      expect(outcomes.filter((_, i) => i % 2 === 0).map((o) => o[0]!.status)).toEqual([0, 0, 0, 0, 0, 0]);
      expect(outcomes.filter((_, i) => i % 2 === 1).map((o) => o[0]!.status)).toEqual([0, 0, 0, 1, 1, 1]);
    } finally {
      await redis.close();
    }
  });

  it('two instances sharing Redis, 64 concurrent callers: a sliding window admits exactly its limit', async () => {
    const yaml = redisPolicy('    - { name: per-tenant, key: [tenant], window: 1h, limit: 100 }');
    const a = limiterAt(await compileReady(yaml, newRuntime()), '/x');
    const b = limiterAt(await compileReady(yaml, newRuntime()), '/x');
    const results = await Promise.all(
      Array.from({ length: 64 }, async (_, caller) => {
        const mine: string[] = [];
        for (let i = 0; i < 5; i++) mine.push(outcome(await evaluate((caller + i) % 2 === 0 ? a : b, input({ tenant: 'acme' }))));
        return mine;
      }),
    );
    const flat = results.flat();
    expect(flat.filter((o) => o === 'allow')).toHaveLength(100);
    expect(flat.filter((o) => o === 'rate_limited')).toHaveLength(220);
  });

  it('two instances sharing Redis, 64 concurrent callers: a token bucket admits exactly its burst', async () => {
    const yaml = redisPolicy('    - { name: per-tenant, key: [tenant], rate: 1/hour, burst: 100 }');
    const a = limiterAt(await compileReady(yaml, newRuntime()), '/x');
    const b = limiterAt(await compileReady(yaml, newRuntime()), '/x');
    const flat = (
      await Promise.all(
        Array.from({ length: 64 }, async (_, caller) => {
          const mine: string[] = [];
          for (let i = 0; i < 5; i++) mine.push(outcome(await evaluate(caller % 2 === 0 ? a : b, input({ tenant: 'globex' }))));
          return mine;
        }),
      )
    ).flat();
    expect(flat.filter((o) => o === 'allow')).toHaveLength(100);
  });

  it('remembers a refused key until it may pass, answering without Redis', async () => {
    const runtime = newRuntime();
    const limiter = limiterAt(await compileReady(redisPolicy('    - { name: per-ip, key: [ip], rate: 1/hour, burst: 2 }'), runtime), '/x');
    const client = input({ ip: '192.0.2.1' });
    const first = limiter.evaluate(client);
    expect(isPromise(first)).toBe(true);
    expect(outcome(await first)).toBe('allow');
    expect(outcome(await limiter.evaluate(client))).toBe('allow');
    const refused = await limiter.evaluate(client);
    expect(refused.denial).toMatchObject({ reason: 'rate_limited', retryAfter: 3600 });
    // Now answered from local memory: synchronously, same verdict.
    const remembered = limiter.evaluate(client);
    expect(isPromise(remembered)).toBe(false);
    expect(remembered).toMatchObject({ denial: { reason: 'rate_limited', retryAfter: 3600 } });
    // Another key still goes to Redis.
    expect(isPromise(limiter.evaluate(input({ ip: '192.0.2.2' })))).toBe(true);
  });

  it('stores each counter under one hash tag, readable by operators', async () => {
    const runtime = newRuntime();
    const prefix = `${PREFIX}tags:`;
    const yaml = `
routes: [{ name: login, match: { path: /login }, public: true }]
rateLimits:
  backend: { redis: { url: "${REDIS_URL}", keyPrefix: "${prefix}", timeout: 2s } }
  policies:
    - { name: auth-per-ip, key: [ip, route], window: 60s, limit: 20, lockout: { after: 1, for: 1m } }
`;
    const limiter = limiterAt(await compileReady(yaml, runtime), '/login');
    for (let i = 0; i < 22; i++) await limiter.evaluate(input({ principal: null, ip: '192.0.2.7', route: 'login' }));
    const admin = new Redis(REDIS_URL);
    const keys = (await admin.keys(`${prefix}*`)).sort();
    const tagged = `${prefix}{auth-per-ip\u001f192.0.2.7\u001flogin}`;
    expect(keys).toEqual([`${tagged}:l`, `${tagged}:q`, `${tagged}:s`]);
    expect(await admin.zcard(`${tagged}:s`)).toBe(20);
    const ttl = await admin.pttl(`${tagged}:l`);
    expect(ttl).toBeGreaterThan(50_000);
    admin.disconnect();
  });
});
