// Escalation (issue 17 §1, seed 004 "permanent bans stored in Postgres for repeat offenders"):
// `escalate: { after, within, ban, scope }` turns repeated lockouts into a ban written once to the
// ban store, with reason, source policy, first/last offence and count. Lockouts are counted where
// the limits are: memory, or Redis shared by two instances (neither double-counted nor missed).
// `bans remove` lifts the ban and resets the count. A ban store that is down keeps the lockout,
// retries the write, counts it as pending and still enforces the ban on the instance that made it.

import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { runBansCommand } from '../../src/ratelimit/bans-cli.js';
import type { RouteRateLimiter } from '../../src/ratelimit/index.js';
import { TcpProxy } from '../keys/tcp-proxy.js';
import { testRuntime } from '../support/runtime.js';
import { DATABASE_URL, postgresAvailable, REDIS_URL, redisAvailable } from '../support/services.js';
import { compile, compileErrors, input, limiterAt, metricValue, outcome } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-escalation-'));
const runtimes: ReturnType<typeof testRuntime>[] = [];
afterAll(async () => {
  for (const runtime of runtimes) await runtime.resources.closeAll();
  rmSync(dir, { recursive: true, force: true });
});

function newRuntime(): ReturnType<typeof testRuntime> {
  const runtime = testRuntime();
  runtimes.push(runtime);
  return runtime;
}

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runBansCommand(argv, { out: (s) => (out += s), err: (s) => (err += s), env: { USER: 'ops' } });
  return { code, out, err };
}

function policyYaml(backend: string, bans: string, escalate: string): string {
  return `
routes:
  - { name: login, match: { path: /login } }
  - { name: probe, match: { path: /probe }, rateLimits: { exempt: true } }
  - { name: api, match: { pathPrefix: / } }
rateLimits:
  backend: ${backend}
  bans: ${bans}
  policies:
    - name: per-ip
      key: [ip, route]
      window: 60s
      limit: 1
      lockout: { after: 2, within: 1h, for: 1m }
      escalate: ${escalate}
`;
}

interface Instance {
  readonly runtime: ReturnType<typeof testRuntime>;
  readonly policy: CompiledPolicy;
  readonly login: RouteRateLimiter;
  readonly api: RouteRateLimiter;
  /** Bans only (no limit counts it): for watching a ban come and go. */
  readonly probe: RouteRateLimiter;
}

async function instance(yaml: string, start: number): Promise<Instance> {
  const runtime = newRuntime();
  runtime.clock.set(start);
  const policy = compile(yaml, runtime);
  await policy.ready;
  return { runtime, policy, login: limiterAt(policy, '/login'), api: limiterAt(policy, '/v1/x'), probe: limiterAt(policy, '/probe') };
}

const at = (ip: string, route = 'login') => input({ ip, route, path: `/${route}`, principal: null });

/**
 * Requests until the IP is locked out of /login (1 allowed, 1 refused, the next refusal locks),
 * spreading them over `instances` in turn; then every clock moves past the lock and the window.
 */
async function lockOnce(instances: readonly Instance[], ip: string, limiter: 'login' | 'api' = 'login', clocks: readonly Instance[] = instances): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < 3; i++) seen.push(outcome(await instances[i % instances.length]![limiter].evaluate(at(ip, limiter))));
  for (const { runtime } of clocks) runtime.clock.advance(61_000);
  return seen;
}

async function eventually<T>(read: () => Promise<T> | T, done: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 5000;
  let value = await read();
  while (!done(value)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 25));
    value = await read();
  }
  return value;
}

const fileBans = (file: string) => () => {
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { bans: Record<string, unknown>[] }).bans;
  } catch {
    return [];
  }
};

describe('escalate: schema', () => {
  it('needs a lockout, an ip key and valid numbers', () => {
    const runtime = newRuntime();
    const bad = (escalate: string, key = '[ip, route]', lockout = 'lockout: { after: 2, for: 1m }') =>
      compileErrors(`
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  bans: { file: ${dir}/x.json }
  policies:
    - { name: p, key: ${key}, window: 60s, limit: 1, ${lockout}, escalate: ${escalate} }
`, runtime);
    expect(bad('{ after: 3, within: 24h, ban: permanent, scope: ip }', '[ip, route]', 'cost: 1')).toEqual(['rateLimits.policies.0.escalate: escalate needs a lockout (it counts lockouts)']);
    expect(bad('{ after: 3, within: 24h, ban: permanent, scope: ip }', '[tenant]')).toEqual(['rateLimits.policies.0.escalate.scope: scope ip needs ip in the policy key']);
    expect(bad('{ after: 3, within: 24h, ban: forever, scope: ip }')).toEqual(['rateLimits.policies.0.escalate.ban: must be permanent or a duration such as 30d']);
    expect(bad('{ after: 0, within: 24h, ban: permanent, scope: ip }')).toEqual(['rateLimits.policies.0.escalate.after: must be at least 1']);
    expect(compileErrors(`
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  policies:
    - { name: p, key: [ip], window: 60s, limit: 1, lockout: { after: 2, for: 1m }, escalate: { after: 3, within: 24h, ban: permanent, scope: ip } }
`, runtime)).toEqual(['rateLimits.policies.0.escalate: escalate writes bans: rateLimits.bans must name the ban store']);
  });
});

describe('escalate with the memory backend and the file ban store', () => {
  it('the 3rd lockout within 24h bans the IP permanently, once, with its record; bans remove lifts it and resets the count', async () => {
    const file = path.join(dir, `bans-${randomBytes(3).toString('hex')}.json`);
    const a = await instance(policyYaml('memory', `{ file: "${file}", refresh: 100ms }`, '{ after: 3, within: 24h, ban: permanent, scope: ip }'), Date.now());
    const ip = '203.0.113.9';
    expect(await lockOnce([a], ip)).toEqual(['allow', 'rate_limited', 'locked_out']);
    expect(await lockOnce([a], ip)).toEqual(['allow', 'rate_limited', 'locked_out']);
    // Two lockouts: no ban, the IP gets its quota back.
    expect(fileBans(file)()).toEqual([]);
    expect(outcome(await a.api.evaluate(at(ip, 'api')))).toBe('allow');
    expect(await lockOnce([a], ip)).toEqual(['allow', 'rate_limited', 'locked_out']);

    const bans = await eventually(fileBans(file), (b) => b.length > 0, 'the ban in the file');
    expect(bans).toHaveLength(1);
    expect(bans[0]).toMatchObject({
      kind: 'ip',
      value: ip,
      source: 'per-ip',
      offences: 3,
      createdBy: 'portcullis',
    });
    expect(bans[0]!.reason).toBe('3 lockouts within 24h (rate-limit policy per-ip)');
    expect(bans[0]!.expiresAt).toBeUndefined();
    expect(Date.parse(bans[0]!.firstOffence as string)).toBeLessThan(Date.parse(bans[0]!.lastOffence as string));
    // Scope ip: every route, at once on this instance.
    expect(outcome(await a.api.evaluate(at(ip, 'api')))).toBe('banned');
    expect(outcome(await a.login.evaluate(at(ip)))).toBe('banned');
    expect(outcome(await a.login.evaluate(at('203.0.113.10')))).toBe('allow');

    const listed = await cli('list', '--file', file);
    expect(listed.code).toBe(0);
    expect(listed.out).toMatch(/^ip:203\.0\.113\.9\tpermanent\tsince \S+ by portcullis\t3 lockouts within 24h \(rate-limit policy per-ip\)\t3 offences \S+ – \S+\n$/);

    expect((await cli('remove', `ip:${ip}`, '--file', file)).code).toBe(0);
    await eventually(async () => outcome(await a.probe.evaluate(at(ip, 'probe'))), (o) => o === 'allow', 'the ban lifted');
    expect(outcome(await a.api.evaluate(at(ip, 'api')))).toBe('allow');
    a.runtime.clock.advance(61_000);
    // The count starts again: two more lockouts do not ban, the third does.
    await lockOnce([a], ip);
    await lockOnce([a], ip);
    await new Promise((r) => setTimeout(r, 300));
    expect(fileBans(file)()).toEqual([]);
    await lockOnce([a], ip);
    await eventually(fileBans(file), (b) => b.length === 1, 'the second ban');
  });

  it('offences older than `within` do not count; scope ip+route bans one endpoint for 30d', async () => {
    const file = path.join(dir, `bans-${randomBytes(3).toString('hex')}.json`);
    const a = await instance(policyYaml('memory', `{ file: "${file}", refresh: 100ms }`, '{ after: 2, within: 10m, ban: 30d, scope: ip+route }'), Date.now());
    const ip = '198.51.100.20';
    await lockOnce([a], ip);
    a.runtime.clock.advance(10 * 60_000);
    await lockOnce([a], ip);
    await new Promise((r) => setTimeout(r, 300));
    expect(fileBans(file)()).toEqual([]);
    await lockOnce([a], ip);
    const [ban] = await eventually(fileBans(file), (b) => b.length > 0, 'the ban');
    expect(ban).toMatchObject({ kind: 'ip', value: ip, route: 'login', offences: 2, source: 'per-ip' });
    expect(Date.parse(ban!.expiresAt as string) - Date.parse(ban!.createdAt as string)).toBe(30 * 86_400_000);
    expect(outcome(await a.login.evaluate(at(ip)))).toBe('banned');
    expect(outcome(await a.api.evaluate(at(ip, 'api')))).toBe('allow');
    expect((await cli('list', '--file', file)).out).toContain(`ip:${ip} route login\tuntil `);
    expect((await cli('remove', `ip:${ip}`, '--route', 'login', '--file', file)).code).toBe(0);
    expect(fileBans(file)()).toEqual([]);
  });

  it('IPv6: offences count per client network (/64), so rotating addresses does not dodge the ban; the ban covers the network', async () => {
    const file = path.join(dir, `bans-${randomBytes(3).toString('hex')}.json`);
    const a = await instance(policyYaml('memory', `{ file: "${file}", refresh: 100ms }`, '{ after: 2, within: 1h, ban: permanent, scope: ip }'), Date.now());
    expect(await lockOnce([a], '2001:db8:1:2::10')).toEqual(['allow', 'rate_limited', 'locked_out']);
    expect(await lockOnce([a], '2001:db8:1:2::20')).toEqual(['allow', 'rate_limited', 'locked_out']);
    const [ban] = await eventually(fileBans(file), (b) => b.length > 0, 'the ban');
    expect(ban).toMatchObject({ kind: 'ip', value: '2001:db8:1:2::20', offences: 2 });
    expect(outcome(await a.probe.evaluate(at('2001:db8:1:2::abcd', 'probe')))).toBe('banned');
    expect(outcome(await a.probe.evaluate(at('2001:db8:1:3::1', 'probe')))).toBe('allow');
  });

  it('a ban store that cannot be written: the lockout applies, the ban is enforced here and pending, the write is retried', async () => {
    const storeDir = path.join(dir, `missing-${randomBytes(3).toString('hex')}`);
    const file = path.join(storeDir, 'bans.json');
    const a = await instance(policyYaml('memory', `{ file: "${file}", refresh: 100ms }`, '{ after: 1, within: 1h, ban: permanent, scope: ip }'), Date.now());
    const ip = '192.0.2.44';
    expect(await lockOnce([a], ip)).toEqual(['allow', 'rate_limited', 'locked_out']);
    await eventually(() => metricValue(a.runtime, 'portcullis_ratelimit_ban_writes_pending', {}), (n) => n === 1, 'a pending write');
    expect(outcome(await a.login.evaluate(at(ip)))).toBe('banned');
    expect(outcome(await a.login.evaluate(at('192.0.2.45')))).toBe('allow');
    mkdirSync(storeDir);
    await eventually(fileBans(file), (b) => b.length === 1, 'the retried write');
    await eventually(() => metricValue(a.runtime, 'portcullis_ratelimit_ban_writes_pending', {}), (n) => n === 0, 'no pending write');
    expect(outcome(await a.api.evaluate(at(ip, 'api')))).toBe('banned');
  });
});

describe.skipIf(!(await redisAvailable()) || !(await postgresAvailable()))('escalate with Redis shared by two instances and PostgreSQL bans', () => {
  const schema = `rl_esc_${process.pid}_${randomBytes(3).toString('hex')}`;
  afterAll(async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.end();
  });
  const rows = async (table: string) => {
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    try {
      return (await client.query(`SELECT * FROM "${schema}"."${table}"`)).rows as Record<string, unknown>[];
    } catch (err) {
      if ((err as { code?: string }).code === '42P01') return [];
      throw err;
    } finally {
      await client.end();
    }
  };

  async function pair(table: string, url = DATABASE_URL): Promise<[Instance, Instance]> {
    const prefix = `pc-test:esc:${randomBytes(4).toString('hex')}:`;
    const yaml = policyYaml(
      `{ redis: { url: "${REDIS_URL}", keyPrefix: "${prefix}", time: local, timeout: 2s } }`,
      `{ postgres: { url: "${url}", schema: ${schema}, table: ${table} }, refresh: 100ms }`,
      '{ after: 3, within: 24h, ban: permanent, scope: ip }',
    );
    const start = Date.now();
    return [await instance(yaml, start), await instance(yaml, start)];
  }

  it('lockouts made across two instances are counted once each; the 3rd bans, one row, enforced by both', async () => {
    const [a, b] = await pair('bans_shared');
    const ip = '203.0.113.77';
    // Each lockout's requests alternate between the instances; exactly one of them sees it happen.
    expect(await lockOnce([a, b], ip)).toEqual(['allow', 'rate_limited', 'locked_out']);
    expect(await lockOnce([b, a], ip)).toEqual(['allow', 'rate_limited', 'locked_out']);
    await new Promise((r) => setTimeout(r, 300));
    expect(await rows('bans_shared')).toEqual([]);
    expect(await lockOnce([a, b], ip)).toEqual(['allow', 'rate_limited', 'locked_out']);
    const written = await eventually(() => rows('bans_shared'), (r) => r.length > 0, 'the ban row');
    expect(written).toHaveLength(1);
    expect(written[0]).toMatchObject({ kind: 'ip', value: ip, route: '', source: 'per-ip', offences: 3, created_by: 'portcullis', expires_at: null });
    for (const x of [a, b]) await eventually(async () => outcome(await x.probe.evaluate(at(ip, 'probe'))), (o) => o === 'banned', 'both instances enforce it');
    for (const x of [a, b]) expect(outcome(await x.api.evaluate(at(ip, 'api')))).toBe('banned');
    const listed = await cli('list', '--postgres', DATABASE_URL, '--schema', schema, '--table', 'bans_shared');
    expect(listed.out).toContain(`ip:${ip}\tpermanent`);
    expect(listed.out).toContain('3 lockouts within 24h (rate-limit policy per-ip)');

    // Lifted: both instances let it through again and the shared count starts over.
    expect((await cli('remove', `ip:${ip}`, '--postgres', DATABASE_URL, '--schema', schema, '--table', 'bans_shared')).code).toBe(0);
    for (const x of [a, b]) await eventually(async () => outcome(await x.probe.evaluate(at(ip, 'probe'))), (o) => o === 'allow', 'the ban lifted everywhere');
    expect(outcome(await a.api.evaluate(at(ip, 'api')))).toBe('allow');
    for (const x of [a, b]) x.runtime.clock.advance(61_000);
    await lockOnce([b, a], ip);
    await lockOnce([a, b], ip);
    await new Promise((r) => setTimeout(r, 300));
    expect(await rows('bans_shared')).toEqual([]);
  });

  it('PostgreSQL down: lockouts still apply, the ban is pending and enforced locally, then written once when it is back', async () => {
    const target = new URL(DATABASE_URL);
    const proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
    await proxy.start();
    try {
      const url = `postgres://${target.username ? `${target.username}@` : ''}127.0.0.1:${proxy.port}${target.pathname}`;
      const [a, b] = await pair('bans_down', url);
      const ip = '203.0.113.88';
      await lockOnce([a], ip, 'login', [a, b]);
      await lockOnce([b], ip, 'login', [a, b]);
      await proxy.down();
      expect(await lockOnce([a], ip, 'login', [a, b])).toEqual(['allow', 'rate_limited', 'locked_out']);
      await eventually(() => metricValue(a.runtime, 'portcullis_ratelimit_ban_writes_pending', {}), (n) => n === 1, 'a pending write');
      expect(outcome(await a.api.evaluate(at(ip, 'api')))).toBe('banned');
      await proxy.up();
      const written = await eventually(() => rows('bans_down'), (r) => r.length > 0, 'the retried write');
      expect(written).toHaveLength(1);
      await eventually(() => metricValue(a.runtime, 'portcullis_ratelimit_ban_writes_pending', {}), (n) => n === 0, 'nothing pending');
      await eventually(async () => outcome(await b.probe.evaluate(at(ip, 'probe'))), (o) => o === 'banned', 'the other instance enforces it');
    } finally {
      await proxy.down();
    }
  });
});
