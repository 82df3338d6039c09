// Bans: target parsing, matching, the file and Postgres stores through `portcullis bans`, and a
// running limiter picking up changes.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { PortcullisError } from '../../src/errors.js';
import { BanList, parseBanTarget } from '../../src/ratelimit/bans.js';
import { runBansCommand } from '../../src/ratelimit/bans-cli.js';
import type { RouteRateLimiter } from '../../src/ratelimit/index.js';
import type { Runtime } from '../../src/runtime.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { testRuntime } from '../support/runtime.js';
import { compile, input, limiterAt, outcome } from './helpers.js';
import { freePort } from './redis-server.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-bans-'));
const runtimes: Runtime[] = [];

afterAll(async () => {
  for (const runtime of runtimes) await runtime.resources.closeAll();
  rmSync(dir, { recursive: true, force: true });
});

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runBansCommand(argv, { out: (s) => (out += s), err: (s) => (err += s), env: { USER: 'ops' } });
  return { code, out, err };
}

/** Evaluate until the verdict is `want` (the watcher re-reads every 100 ms), at most 5 s. */
async function eventually(limiter: RouteRateLimiter, make: () => ReturnType<typeof input>, want: string): Promise<string> {
  const deadline = Date.now() + 5000;
  let got = '';
  while (Date.now() < deadline) {
    got = outcome(await limiter.evaluate(make()));
    if (got === want) return got;
    await new Promise((r) => setTimeout(r, 50));
  }
  return got;
}

function bansPolicy(bans: string, failure = 'closed'): string {
  return `
routes:
  - { name: health, match: { path: /health }, public: true, rateLimits: { exempt: true } }
  - { name: api, match: { pathPrefix: / } }
rateLimits:
  failure: ${failure}
  bans: ${bans}
`;
}

describe('ban targets and matching', () => {
  it('parses and canonicalises targets', () => {
    expect(parseBanTarget('ip:203.0.113.7')).toEqual({ kind: 'ip', value: '203.0.113.7' });
    expect(parseBanTarget('ip:::FFFF:203.0.113.7')).toEqual({ kind: 'ip', value: '203.0.113.7' });
    expect(parseBanTarget('ip:2001:DB8::1')).toEqual({ kind: 'ip', value: '2001:db8::1' });
    expect(parseBanTarget('ip:10.0.0.0/8')).toEqual({ kind: 'ip', value: '10.0.0.0/8' });
    expect(parseBanTarget('subject:auth0|42')).toEqual({ kind: 'subject', value: 'auth0|42' });
    for (const bad of ['ip:999.1.1.1', 'ip:10.0.0.0/33', 'user:x', 'tenant:', 'acme']) {
      expect(() => parseBanTarget(bad), bad).toThrow(PortcullisError);
    }
  });

  it('matches addresses, CIDR blocks, tenants, subjects and key ids; ignores expired bans', () => {
    const list = new BanList();
    expect(list.match(input())).toBe('unavailable');
    const now = Date.UTC(2026, 0, 1);
    const at = new Date(now).toISOString();
    list.replace(
      [
        { kind: 'ip', value: '203.0.113.7', createdAt: at },
        { kind: 'ip', value: '10.0.0.0/8', createdAt: at },
        { kind: 'ip', value: '2001:db8::/32', createdAt: at },
        { kind: 'tenant', value: 'evil', createdAt: at },
        { kind: 'subject', value: 'spammer', createdAt: at },
        { kind: 'apiKey', value: 'k_leaked', createdAt: at },
        { kind: 'ip', value: '198.51.100.1', createdAt: at, expiresAt: new Date(now - 1).toISOString() },
      ],
      now,
    );
    expect(list.size).toBe(6);
    expect(list.match(input({ ip: '203.0.113.7' }))).toBe('ip');
    expect(list.match(input({ ip: '::ffff:10.20.30.40' }))).toBe('ip');
    expect(list.match(input({ ip: '2001:0db8:0:0::5' }))).toBe('ip');
    expect(list.match(input({ ip: '198.51.100.1' }))).toBeUndefined();
    expect(list.match(input({ ip: '192.0.2.1', tenant: 'evil' }))).toBe('tenant');
    expect(list.match(input({ ip: '192.0.2.1', subject: 'spammer' }))).toBe('subject');
    expect(list.match(input({ ip: '192.0.2.1', keyId: 'k_leaked' }))).toBe('apiKey');
    expect(list.match(input({ ip: '192.0.2.1' }))).toBeUndefined();
    expect(list.match(input({ ip: 'not-an-ip' }))).toBeUndefined();
  });
});

describe('file ban store', () => {
  it('portcullis bans add/list/remove edit the file; a running limiter follows', async () => {
    const file = path.join(dir, 'bans.json');
    const runtime = testRuntime();
    runtimes.push(runtime);
    const policy = compile(bansPolicy(`{ file: "${file}", refresh: 100ms }`), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    const attacker = () => input({ ip: '203.0.113.99', route: 'api' });
    expect(outcome(await limiter.evaluate(attacker()))).toBe('allow'); // a missing file is an empty list

    expect(await cli('add', 'ip:203.0.113.99', '--reason', 'credential stuffing', '--file', file)).toEqual({
      code: 0,
      out: 'banned ip:203.0.113.99 permanently\n',
      err: '',
    });
    expect(await eventually(limiter, attacker, 'banned')).toBe('banned');
    const denied = await limiter.evaluate(attacker());
    expect(denied.denial).toEqual({ reason: 'banned', detail: 'banned by ip' });
    // Bans apply on exempt routes too.
    expect(outcome(await limiterAt(policy, '/health').evaluate(input({ ip: '203.0.113.99', principal: null, route: 'health' })))).toBe('banned');

    const listed = await cli('list', '--file', file);
    expect(listed.code).toBe(0);
    expect(listed.out).toMatch(/^ip:203\.0\.113\.99\tpermanent\tsince \d{4}-\d\d-\d\dT[^\t]+ by ops\tcredential stuffing\n$/);
    const json = JSON.parse((await cli('list', '--json', '--file', file)).out);
    expect(json).toMatchObject([{ kind: 'ip', value: '203.0.113.99', reason: 'credential stuffing', createdBy: 'ops' }]);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ version: 1, bans: [{ kind: 'ip' }] });

    expect(await cli('remove', 'ip:203.0.113.99', '--file', file)).toMatchObject({ code: 0, out: 'removed the ban on ip:203.0.113.99\n' });
    expect(await eventually(limiter, attacker, 'allow')).toBe('allow');
    expect(await cli('remove', 'ip:203.0.113.99', '--file', file)).toMatchObject({ code: 1, err: 'ip:203.0.113.99 is not banned\n' });
  });

  it('lifts an expiring ban when its time is up', async () => {
    const file = path.join(dir, 'expiring.json');
    const runtime = testRuntime();
    runtimes.push(runtime);
    runtime.clock.set(Date.now());
    expect((await cli('add', 'tenant:trial', '--for', '1h', '--file', file)).out).toMatch(/^banned tenant:trial until \d{4}-/);
    const policy = compile(bansPolicy(`{ file: "${file}", refresh: 100ms }`), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    expect(outcome(await limiter.evaluate(input({ tenant: 'trial' })))).toBe('banned');
    runtime.clock.advance(3_600_000 + 1000);
    expect(await eventually(limiter, () => input({ tenant: 'trial' }), 'allow')).toBe('allow');
    // The CLI hides expired bans unless asked.
    const old = path.join(dir, 'old.json');
    writeFileSync(old, JSON.stringify({ version: 1, bans: [{ kind: 'tenant', value: 'gone', createdAt: '2020-01-01T00:00:00.000Z', expiresAt: '2020-02-01T00:00:00.000Z' }] }));
    expect((await cli('list', '--file', old)).out).toBe('no bans\n');
    expect((await cli('list', '--all', '--file', old)).out).toBe('tenant:gone\texpired 2020-02-01T00:00:00.000Z\tsince 2020-01-01T00:00:00.000Z\n');
  });

  it('keeps the last good list when the file turns invalid', async () => {
    const file = path.join(dir, 'broken.json');
    await cli('add', 'subject:bot', '--file', file);
    const runtime = testRuntime();
    runtimes.push(runtime);
    const policy = compile(bansPolicy(`{ file: "${file}", refresh: 100ms }`), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    expect(outcome(await limiter.evaluate(input({ subject: 'bot' })))).toBe('banned');
    writeFileSync(file, '{"bans": [ {"kind": "ip"');
    await new Promise((r) => setTimeout(r, 300));
    expect(outcome(await limiter.evaluate(input({ subject: 'bot' })))).toBe('banned');
  });

  it('reports usage errors with exit code 2', async () => {
    expect((await cli('add', 'ip:1.2.3.4')).code).toBe(2);
    expect((await cli('add', 'ip:1.2.3.4', '--file', 'a', '--postgres', 'b')).code).toBe(2);
    expect(await cli('add', 'nonsense', '--file', path.join(dir, 'x.json'))).toMatchObject({ code: 2, err: expect.stringContaining('invalid ban target "nonsense"') });
    expect((await cli('list', 'ip:1.2.3.4', '--file', 'x')).code).toBe(2);
    expect((await cli('frobnicate', '--file', 'x')).code).toBe(2);
    expect((await cli('add', 'ip:1.2.3.4', '--for', 'soon', '--file', path.join(dir, 'y.json'))).code).toBe(2);
    expect((await cli('--help')).code).toBe(0);
  });

  it('finds the store through the policy file (--config)', async () => {
    const file = path.join(dir, 'from-config.json');
    const policyFile = path.join(dir, 'policy.yaml');
    writeFileSync(policyFile, `rateLimits:\n  bans: { file: "${file}" }\n`);
    expect((await cli('add', 'apiKey:k_1', '--config', policyFile)).code).toBe(0);
    expect((await cli('list', '--config', policyFile)).out).toMatch(/^apiKey:k_1\tpermanent/);
    writeFileSync(policyFile, `rateLimits:\n  policies: []\n`);
    expect(await cli('list', '--config', policyFile)).toMatchObject({ code: 2, err: expect.stringContaining('has no rateLimits.bans section') });
  });
});

describe.skipIf(!(await postgresAvailable()))('postgres ban store', () => {
  const schema = `rl_bans_${process.pid}_${randomBytes(3).toString('hex')}`;

  afterAll(async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.end();
  });

  it('portcullis bans writes the table (created on first add); a running limiter follows', async () => {
    const runtime = testRuntime();
    runtimes.push(runtime);
    // Before the table exists the list is simply empty.
    const policy = compile(bansPolicy(`{ postgres: { url: "${DATABASE_URL}", schema: ${schema} }, refresh: 100ms }`), runtime);
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    const caller = () => input({ ip: '192.0.2.200', route: 'api' });
    expect(outcome(await limiter.evaluate(caller()))).toBe('allow');

    const store = ['--postgres', DATABASE_URL, '--schema', schema];
    expect(await cli('add', 'ip:192.0.2.0/24', '--reason', 'repeat offender', ...store)).toMatchObject({ code: 0, out: 'banned ip:192.0.2.0/24 permanently\n' });
    expect(await eventually(limiter, caller, 'banned')).toBe('banned');
    // Re-adding replaces the entry.
    expect((await cli('add', 'ip:192.0.2.0/24', '--reason', 'still at it', ...store)).code).toBe(0);
    const rows = JSON.parse((await cli('list', '--json', ...store)).out);
    expect(rows).toMatchObject([{ kind: 'ip', value: '192.0.2.0/24', reason: 'still at it', createdBy: 'ops' }]);

    expect((await cli('remove', 'ip:192.0.2.0/24', ...store)).code).toBe(0);
    expect(await eventually(limiter, caller, 'allow')).toBe('allow');
    expect((await cli('remove', 'ip:192.0.2.0/24', ...store)).code).toBe(1);
  });

  it('fails closed while the ban list could never be read; fail open lets requests through', async () => {
    const url = `postgres://postgres@127.0.0.1:${await freePort()}/test`;
    const closed = testRuntime();
    const open = testRuntime();
    runtimes.push(closed, open);
    const closedPolicy = compile(bansPolicy(`{ postgres: { url: "${url}" } }`), closed);
    await closedPolicy.ready;
    expect((await limiterAt(closedPolicy, '/x').evaluate(input())).denial).toMatchObject({ reason: 'ratelimit_unavailable' });
    const openPolicy = compile(bansPolicy(`{ postgres: { url: "${url}" } }`, 'open'), open);
    await openPolicy.ready;
    expect(outcome(await limiterAt(openPolicy, '/x').evaluate(input()))).toBe('allow');
  });
});
