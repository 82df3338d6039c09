// What one rate-limited check costs the Redis backend, apart from everything else a check does:
// RedisStore (ioredis, the batch script) asked for a token-bucket check by BATCH callers in the
// same turn, ROUNDS times; the figures are this process's CPU per check (building and writing the
// script call, reading its reply) and redis-server's (from /proc: the script's work), medians of
// alternating rounds. With --a, a second build runs in alternation (before/after a change).
//
//   npm run build && node bench/redis-cost.mjs [--a /tmp/before/dist] [--batch 57] [--rounds 6]
//
// Needs Redis at BENCH_REDIS_URL (default redis://127.0.0.1:6379) on this machine (its CPU is
// read from /proc); keys go under bench:redis-cost:<pid>: and expire within seconds.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { processCpuSeconds } from './lib/processes.mjs';
import { ROOT } from './lib/proto.mjs';
const { values: args } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string', default: path.join(ROOT, 'dist') },
    batch: { type: 'string', default: '57' },
    rounds: { type: 'string', default: '6' },
    checks: { type: 'string', default: '100000' },
    child: { type: 'string' },
  },
});
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const batch = Math.max(1, Math.min(128, Number(args.batch)));
const checks = Math.max(1000, Math.min(1_000_000, Number(args.checks)));

if (args.child) {
  await measure(path.resolve(args.child));
} else {
  const builds = args.a ? [['a', path.resolve(args.a)], ['b', path.resolve(args.b)]] : [['b', path.resolve(args.b)]];
  const results = new Map(builds.map(([name]) => [name, []]));
  for (let round = 0; round < Number(args.rounds); round++) {
    for (const [name, dist] of round % 2 === 0 ? builds : [...builds].reverse()) {
      const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', dist, '--batch', String(batch), '--checks', String(checks)], { encoding: 'utf8', timeout: 120_000 });
      if (run.status !== 0) throw new Error(`redis-cost: ${name} failed: ${run.stderr || run.error?.message}`);
      results.get(name).push(JSON.parse(run.stdout));
    }
  }
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  console.log(`token-bucket checks through RedisStore, ${batch} per turn, ${checks} per round, ${args.rounds} rounds (median)`);
  const summary = {};
  for (const [name, dist] of builds) {
    const rows = results.get(name);
    summary[name] = { client: median(rows.map((r) => r.clientUs)), redis: median(rows.map((r) => r.redisUs)), wall: median(rows.map((r) => r.wallUs)) };
    console.log(`  ${name} ${dist}: client CPU ${summary[name].client.toFixed(2)} µs/check, redis-server CPU ${summary[name].redis.toFixed(2)} µs/check, wall ${summary[name].wall.toFixed(2)} µs/check`);
  }
  if (summary.a) console.log(`  b/a: client ${(summary.b.client / summary.a.client).toFixed(2)}, redis-server ${(summary.b.redis / summary.a.redis).toFixed(2)}, wall ${(summary.b.wall / summary.a.wall).toFixed(2)}`);
}

async function measure(dist) {
  const { RedisStore } = await import(path.join(dist, 'ratelimit', 'redis-store.js'));
  const { redisBackendSchema } = await import(path.join(dist, 'ratelimit', 'config.js'));
  const { Metrics } = await import(path.join(dist, 'observability', 'metrics.js'));
  const { silentLogger } = await import(path.join(dist, 'observability', 'logger.js'));
  const config = redisBackendSchema.parse({ url: REDIS_URL, time: 'local', timeout: '2s' });
  const store = new RedisStore({ config, clock: { now: () => Date.now() }, logger: silentLogger(), metrics: new Metrics({ defaultMetrics: false }) });
  await store.ready;
  const redisPid = fs.readdirSync('/proc').find((p) => /^\d+$/.test(p) && readOr(`/proc/${p}/comm`).startsWith('redis-server'));
  if (redisPid === undefined) throw new Error('redis-server is not a process on this machine (its CPU is read from /proc)');
  const redisCpu = () => {
    const cpu = processCpuSeconds(redisPid);
    if (cpu === undefined) throw new Error('redis-server went away');
    return cpu.user + cpu.system;
  };
  // A bucket far above the load: every check is allowed and every check goes to Redis.
  const shape = { algorithm: 'bucket', intervalMs: 0.001, burst: 1e9, toleranceMs: 1e6 };
  const key = `bench:redis-cost:${process.pid}:{tenant-0001}`;
  const turn = () => Promise.all(Array.from({ length: batch }, () => store.check([{ key, shape, lockout: undefined, cost: 1, enforce: true }])));
  for (let i = 0; i < 200; i++) await turn();
  const rounds = Math.ceil(checks / batch);
  const redis0 = redisCpu();
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  for (let i = 0; i < rounds; i++) await turn();
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - wall0;
  const n = rounds * batch;
  process.stdout.write(JSON.stringify({ clientUs: (cpu.user + cpu.system) / n, redisUs: ((redisCpu() - redis0) / n) * 1e6, wallUs: (wall * 1000) / n }));
  await store.close();
}

function readOr(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
