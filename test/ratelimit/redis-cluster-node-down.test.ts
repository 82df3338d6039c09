// One master of a real three-master Redis Cluster stopped (SIGSTOP: it hangs, its connections stay
// open): only the counters on that master follow the fail-open/closed policy; checks whose
// counters live on the two healthy masters keep their exact limits, before and after the stopped
// master's breaker opens, and the stopped master's counters recover once it answers again.
// The cluster runs with cluster-require-full-coverage no, as a cluster without replicas must for
// the healthy masters to keep serving their slots (README "Rate limits", Redis Cluster).
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterSlot } from '../../src/ratelimit/cluster-slot.js';
import type { RouteRateLimiter } from '../../src/ratelimit/index.js';
import type { Runtime } from '../../src/runtime.js';
import { testRuntime } from '../support/runtime.js';
import { compile, input, limiterAt, metricValue, outcome } from './helpers.js';
import { RedisServer, redisServerInstalled, startCluster } from './redis-server.js';

const servers: RedisServer[] = [];
const runtimes: Runtime[] = [];
let clusterError: string | undefined;
const SEP = '\u001f';

function policyYaml(policies: string): string {
  return `
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  backend:
    redis:
      cluster: { nodes: [${servers.map((s) => `"${s.url}"`).join(', ')}] }
      # Generous: on a loaded test machine a healthy master must never miss it.
      timeout: 1s
      circuitBreaker: { failures: 2, cooldown: 1s }
  failure: closed
  policies:
${policies}
`;
}

/** Port of the master serving each slot, from CLUSTER SLOTS. */
async function slotOwners(): Promise<(slot: number) => number> {
  const admin = servers[1]!.admin();
  const ranges = (await admin.cluster('SLOTS')) as unknown as [number, number, [string, number, string]][];
  admin.disconnect();
  return (slot) => ranges.find(([from, to]) => slot >= from && slot <= to)![2][1];
}

/** `count` values of `make(i)` whose counter key `{policy␟value}` lands on a master of `ports`. */
function valuesOn(owner: (slot: number) => number, ports: number[], policy: string, count: number, make: (i: number) => string): string[] {
  const found: string[] = [];
  for (let i = 0; found.length < count && i < 100_000; i++) {
    const value = make(i);
    if (ports.includes(owner(clusterSlot(`{${policy}${SEP}${value}}`)))) found.push(value);
  }
  return found;
}

describe.skipIf(!redisServerInstalled())('redis cluster: one master down', () => {
  beforeAll(async () => {
    try {
      await startCluster(servers, ['--cluster-require-full-coverage', 'no']);
    } catch (err) {
      clusterError = (err as Error).message;
      console.warn(`SKIPPING Redis Cluster tests: ${clusterError}`);
    }
  }, 60_000);

  afterAll(async () => {
    for (const server of servers) server.resume();
    for (const runtime of runtimes) await runtime.resources.closeAll();
    for (const server of servers) await server.stop();
  });

  it('healthy masters keep exact limits, the stopped master fails closed, then recovers', async ({ skip }) => {
    if (clusterError) skip();
    const owner = await slotOwners();
    const down = servers[0]!.port;
    const healthy = [servers[1]!.port, servers[2]!.port];

    const runtime = testRuntime();
    runtimes.push(runtime);
    const policy = compile(policyYaml('    - { name: per-ip, key: [ip], window: 1m, limit: 5 }'), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    const ip = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    const onDown = valuesOn(owner, [down], 'per-ip', 4, ip);
    const onHealthy = [...valuesOn(owner, [healthy[0]!], 'per-ip', 4, ip), ...valuesOn(owner, [healthy[1]!], 'per-ip', 4, (i) => ip(i + 50_000))];
    // Connections to every master are open before one stops (as in a running deployment).
    for (const warm of valuesOn(owner, [down, ...healthy], 'per-ip', 3, (i) => ip(i + 100_000))) expect(outcome(await limiter.evaluate(input({ ip: warm })))).toBe('allow');

    // Also a check with counters on both sides: the healthy counter stays exact, the stopped one
    // follows its own policy (open here).
    const mixedRuntime = testRuntime();
    runtimes.push(mixedRuntime);
    const mixedPolicy = compile(
      policyYaml(`    - { name: ip-open, key: [ip], window: 1m, limit: 1000, failure: open }
    - { name: per-tenant, key: [tenant], window: 1m, limit: 3 }`),
      mixedRuntime,
    );
    await mixedPolicy.ready;
    const mixed = limiterAt(mixedPolicy, '/x');
    const mixedIp = valuesOn(owner, [down], 'ip-open', 1, (i) => ip(i + 150_000))[0]!;
    const tenant = valuesOn(owner, healthy, 'per-tenant', 1, (i) => `tenant-${i}`)[0]!;
    const warmTenant = valuesOn(owner, healthy, 'per-tenant', 1, (i) => `warm-${i}`)[0]!;
    expect(outcome(await mixed.evaluate(input({ ip: mixedIp, tenant: warmTenant })))).toBe('allow');

    servers[0]!.pause();
    const rounds: Record<string, string[]> = {};
    const round = async (l: RouteRateLimiter, ips: string[]) =>
      Promise.all(ips.map(async (client) => (rounds[client] ??= []).push(outcome(await l.evaluate(input({ ip: client }))))));
    for (let r = 0; r < 8; r++) await round(limiter, [...onDown, ...onHealthy]);
    for (const client of onHealthy) expect(rounds[client], client).toEqual(['allow', 'allow', 'allow', 'allow', 'allow', 'rate_limited', 'rate_limited', 'rate_limited']);
    for (const client of onDown) expect(rounds[client], client).toEqual(new Array(8).fill('ratelimit_unavailable'));
    // Only the stopped master's breaker opened.
    expect(await metricValue(runtime, 'portcullis_ratelimit_circuit_nodes_open', {})).toBe(1);

    const mixedResults: string[] = [];
    const notes: (string | undefined)[] = [];
    for (let i = 0; i < 5; i++) {
      const verdict = await mixed.evaluate(input({ ip: mixedIp, tenant }));
      mixedResults.push(outcome(verdict));
      notes.push(verdict.note);
    }
    expect(mixedResults).toEqual(['allow', 'allow', 'allow', 'rate_limited', 'rate_limited']);
    expect(notes.slice(0, 3)).toEqual(['ratelimit-fail-open', 'ratelimit-fail-open', 'ratelimit-fail-open']);

    servers[0]!.resume();
    const deadline = Date.now() + 15_000;
    let recovered = '';
    while (recovered !== 'allow' && Date.now() < deadline) {
      runtime.clock.advance(1000); // the cooldown passes: the next check is the probe
      recovered = outcome(await limiter.evaluate(input({ ip: onDown[0]! })));
      if (recovered !== 'allow') await new Promise((r) => setTimeout(r, 100));
    }
    expect(recovered).toBe('allow');
    expect(await metricValue(runtime, 'portcullis_ratelimit_circuit_nodes_open', {})).toBe(0);
    for (const client of onHealthy) expect(outcome(await limiter.evaluate(input({ ip: client })))).toBe('rate_limited');
  }, 60_000);

  it('a killed master: its counters fail open by policy, the healthy masters keep exact limits', async ({ skip }) => {
    if (clusterError) skip();
    const owner = await slotOwners();
    const victim = servers[2]!;
    const healthy = [servers[0]!.port, servers[1]!.port];
    const runtime = testRuntime();
    runtimes.push(runtime);
    const policy = compile(policyYaml('    - { name: per-ip-k, key: [ip], window: 1m, limit: 3, failure: open }'), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    const ip = (i: number) => `172.16.${(i >> 8) & 255}.${i & 255}`;
    const onDown = valuesOn(owner, [victim.port], 'per-ip-k', 3, ip);
    const onHealthy = valuesOn(owner, healthy, 'per-ip-k', 6, (i) => ip(i + 20_000));
    for (const warm of valuesOn(owner, [victim.port, ...healthy], 'per-ip-k', 3, (i) => ip(i + 40_000))) expect(outcome(await limiter.evaluate(input({ ip: warm })))).toBe('allow');

    await victim.kill();
    const seen: Record<string, string[]> = {};
    for (let r = 0; r < 6; r++) {
      await Promise.all(
        [...onDown, ...onHealthy].map(async (client) => {
          const verdict = await limiter.evaluate(input({ ip: client }));
          (seen[client] ??= []).push(verdict.note === 'ratelimit-fail-open' ? 'fail-open' : outcome(verdict));
        }),
      );
    }
    for (const client of onHealthy) expect(seen[client], client).toEqual(['allow', 'allow', 'allow', 'rate_limited', 'rate_limited', 'rate_limited']);
    for (const client of onDown) expect(seen[client], client).toEqual(new Array(6).fill('fail-open'));
    await victim.start(); // rejoins with its nodes.conf (its counters are gone: no persistence)
  }, 60_000);
});
