// A local three-master Redis Cluster (redis-server processes on loopback ports, started and
// stopped here) proving the hash-tagged keys work: every script touches one slot, counters spread
// over the masters, limits hold exactly.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterSlot } from '../../src/ratelimit/cluster-slot.js';
import type { Runtime } from '../../src/runtime.js';
import { testRuntime } from '../support/runtime.js';
import { compile, evaluate, input, limiterAt, outcome } from './helpers.js';
import { RedisServer, redisServerInstalled, startCluster } from './redis-server.js';

const servers: RedisServer[] = [];
const runtimes: Runtime[] = [];
let clusterError: string | undefined;

function clusterPolicy(policies: string): string {
  return `
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  backend:
    redis:
      cluster: { nodes: [${servers.map((s) => `"${s.url}"`).join(', ')}] }
      timeout: 2s
  policies:
${policies}
`;
}

describe.skipIf(!redisServerInstalled())('redis cluster', () => {
  beforeAll(async () => {
    try {
      await startCluster(servers);
    } catch (err) {
      clusterError = (err as Error).message;
      console.warn(`SKIPPING Redis Cluster tests: ${clusterError}`);
    }
  }, 60_000);

  afterAll(async () => {
    for (const runtime of runtimes) await runtime.resources.closeAll();
    for (const server of servers) await server.stop();
  });

  it('computes the same hash slot as Redis', async ({ skip }) => {
    if (clusterError) skip();
    const admin = servers[0]!.admin();
    const keys = ['plain', 'portcullis:rl:{per-tenant\u001facme}:s', 'a{}b', '{}x', 'x{y}z{w}', 'ünïcødé{ключ}', '{only}'];
    for (const key of keys) expect(clusterSlot(key), key).toBe(Number(await admin.cluster('KEYSLOT', key)));
    admin.disconnect();
  });

  it('admits exactly the limit under 64 concurrent callers and spreads counters over the masters', async ({ skip }) => {
    if (clusterError) skip();
    const runtime = testRuntime();
    runtimes.push(runtime);
    const policy = compile(
      clusterPolicy(`    - { name: per-tenant, key: [tenant], window: 1h, limit: 50 }
    - { name: per-ip, key: [ip], rate: 1/hour, burst: 1000 }`),
      runtime,
    );
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    const flat = (
      await Promise.all(
        Array.from({ length: 64 }, async (_, caller) => {
          const mine: string[] = [];
          for (let i = 0; i < 3; i++) mine.push(outcome(await evaluate(limiter, input({ tenant: 'acme', ip: `10.1.${caller}.${i}` }))));
          return mine;
        }),
      )
    ).flat();
    expect(flat.filter((o) => o === 'allow')).toHaveLength(50);

    // Many tenants: their counters land on every master.
    for (let t = 0; t < 60; t++) expect(outcome(await evaluate(limiter, input({ tenant: `t${t}`, ip: '10.2.0.1' })))).toBe('allow');
    const sizes = await Promise.all(
      servers.map(async (server) => {
        const admin = server.admin();
        const size = await admin.dbsize();
        admin.disconnect();
        return size;
      }),
    );
    expect(sizes.every((size) => size > 0)).toBe(true);
  });

  it('evaluates limits in different slots together (one script per slot) and enforces each', async ({ skip }) => {
    if (clusterError) skip();
    const runtime = testRuntime();
    runtimes.push(runtime);
    const policy = compile(
      clusterPolicy(`    - { name: per-ip, key: [ip], window: 1m, limit: 3 }
    - { name: per-tenant, key: [tenant], window: 1m, limit: 100 }`),
      runtime,
    );
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    expect(clusterSlot('{per-ip\u001f10.3.0.1}')).not.toBe(clusterSlot('{per-tenant\u001fslots}'));
    const results: string[] = [];
    for (let i = 0; i < 4; i++) results.push(outcome(await evaluate(limiter, input({ tenant: 'slots', ip: '10.3.0.1' }))));
    expect(results).toEqual(['allow', 'allow', 'allow', 'rate_limited']);
    const direct = new Redis.Cluster(servers.map((s) => ({ host: '127.0.0.1', port: s.port })));
    expect(await direct.zcard('portcullis:rl:{per-ip\u001f10.3.0.1}:s')).toBe(3);
    expect(await direct.zcard('portcullis:rl:{per-tenant\u001fslots}:s')).toBeGreaterThanOrEqual(3);
    direct.disconnect();
  });
});
