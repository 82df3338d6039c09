// Per-IP limits, lockouts and bans through authorize(), with the attributes Envoy really sends
// (source.address = the connection's peer, x-forwarded-for after Envoy appended that peer), and
// keyed on the client's network: IPv6 by /64, IPv4 by address, IPv4-mapped IPv6 as IPv4.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { BanList } from '../../src/ratelimit/bans.js';
import type { Runtime } from '../../src/runtime.js';
import type { Decision } from '../../src/types.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { input } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-client-net-'));
const runtimes: Runtime[] = [];
afterAll(async () => {
  for (const runtime of runtimes) await runtime.resources.closeAll();
  rmSync(dir, { recursive: true, force: true });
});

const LB = '10.0.0.5';

function policyYaml(clientIp: string, bansFile?: string): string {
  return `
identity:
  - host: { domains: { acme.example.com: { tenant: acme, scopes: [read] } } }
clientIp: ${clientIp}
routes:
  - { name: refresh, match: { path: /auth/refresh, methods: [POST] }, public: true }
rateLimits:
  headers: legacy
${bansFile ? `  bans: { file: "${bansFile}", refresh: 100ms }\n` : ''}  policies:
    - { name: per-ip-endpoint, key: [ip, route], window: 60s, limit: 20, lockout: { after: 10, for: 15m } }
`;
}

function load(clientIp: string, bansFile?: string): CompiledPolicy {
  const runtime = testRuntime();
  runtimes.push(runtime);
  return compileYaml(policyYaml(clientIp, bansFile), runtime);
}

/** A POST /auth/refresh from `client` through one load balancer and an Envoy with use_remote_address. */
async function viaLoadBalancer(policy: CompiledPolicy, client: string, forged?: string): Promise<Decision> {
  const xff = `${forged ? `${forged}, ` : ''}${client}, ${LB}`;
  return authorize(policy, request({ method: 'POST', path: '/auth/refresh', sourceAddress: LB, headers: { 'x-forwarded-for': xff } }));
}

const reason = (d: Decision) => (d.allowed ? 'allow' : d.reason);

async function tally(n: number, send: (i: number) => Promise<Decision>): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = reason(await send(i));
    counts[r] = (counts[r] ?? 0) + 1;
  }
  return counts;
}

describe('per-IP limits behind one load balancer (xffTrustedHops: 1, Envoy appends the peer)', () => {
  it('one client locked out does not lock out the others behind the same load balancer', async () => {
    const policy = load('{ xffTrustedHops: 1 }');
    expect(await tally(20, () => viaLoadBalancer(policy, '198.51.100.4'))).toEqual({ allow: 20 });
    expect(await tally(10, () => viaLoadBalancer(policy, '198.51.100.4'))).toEqual({ rate_limited: 9, locked_out: 1 });
    expect(reason(await viaLoadBalancer(policy, '198.51.100.4'))).toBe('locked_out');
    // Forging entries in front changes nothing for the attacker ...
    expect(reason(await viaLoadBalancer(policy, '198.51.100.4', '192.0.2.200'))).toBe('locked_out');
    // ... and everyone else keeps their own quota.
    expect(await tally(20, () => viaLoadBalancer(policy, '198.51.100.5'))).toEqual({ allow: 20 });
    expect(reason(await viaLoadBalancer(policy, '203.0.113.9'))).toBe('allow');
  });

  it('50 addresses of one IPv6 /64 share one counter; another /64 has its own', async () => {
    const policy = load('{ xffTrustedHops: 1 }');
    expect(await tally(50, (i) => viaLoadBalancer(policy, `2001:db8:1:2::${(i + 1).toString(16)}`))).toEqual({ allow: 20, rate_limited: 9, locked_out: 21 });
    expect(reason(await viaLoadBalancer(policy, '2001:db8:1:2:ffff:ffff:ffff:ffff'))).toBe('locked_out');
    expect(reason(await viaLoadBalancer(policy, '2001:db8:1:3::1'))).toBe('allow');
  });

  it('the prefix is configurable: ipv6Prefix 128 keys each address, ipv4Prefix 24 keys a /24', async () => {
    const perAddress = load('{ xffTrustedHops: 1, ipv6Prefix: 128 }');
    expect(await tally(50, (i) => viaLoadBalancer(perAddress, `2001:db8:1:2::${(i + 1).toString(16)}`))).toEqual({ allow: 50 });
    const perBlock = load('{ xffTrustedHops: 1, ipv4Prefix: 24 }');
    expect(await tally(25, (i) => viaLoadBalancer(perBlock, `198.51.100.${i + 1}`))).toEqual({ allow: 20, rate_limited: 5 });
    expect(reason(await viaLoadBalancer(perBlock, '198.51.101.1'))).toBe('allow');
  });

  it('IPv4-mapped IPv6 is the IPv4 client', async () => {
    const policy = load('{}');
    const from = async (peer: string) => authorize(policy, request({ method: 'POST', path: '/auth/refresh', sourceAddress: peer }));
    expect(await tally(20, (i) => from(i % 2 ? '::ffff:198.51.100.4' : '198.51.100.4'))).toEqual({ allow: 20 });
    expect(reason(await from('::ffff:198.51.100.4'))).toBe('rate_limited');
  });

  it('bans ip:<attacker> match the attacker behind the load balancer, and only the attacker', async () => {
    const file = path.join(dir, 'bans-lb.json');
    const at = new Date().toISOString();
    writeFileSync(file, JSON.stringify({ version: 1, bans: [{ kind: 'ip', value: '198.51.100.66', createdAt: at }, { kind: 'ip', value: '2001:db8:6:6::1', createdAt: at }] }));
    const policy = load('{ xffTrustedHops: 1 }', file);
    await policy.ready;
    expect(reason(await viaLoadBalancer(policy, '198.51.100.66'))).toBe('banned');
    expect(reason(await viaLoadBalancer(policy, '198.51.100.66', '192.0.2.1'))).toBe('banned');
    expect(reason(await viaLoadBalancer(policy, '198.51.100.67'))).toBe('allow');
    // The banned IPv6 address's whole /64, as its limits.
    expect(reason(await viaLoadBalancer(policy, '2001:db8:6:6::abcd'))).toBe('banned');
    expect(reason(await viaLoadBalancer(policy, '2001:db8:6:7::1'))).toBe('allow');
  });
});

describe('IP bans on client networks', () => {
  it('an address or a block narrower than the client network bans the network; wider blocks as before', () => {
    const list = new BanList();
    const at = new Date().toISOString();
    list.replace(
      [
        { kind: 'ip', value: '2001:db8:1:2::5', createdAt: at },
        { kind: 'ip', value: '2001:db8:7:7:8000::/65', createdAt: at },
        { kind: 'ip', value: '2001:db8:9::/48', createdAt: at },
        { kind: 'ip', value: '203.0.113.7', createdAt: at },
        { kind: 'ip', value: '192.0.2.128/25', createdAt: at },
      ],
      Date.now(),
    );
    const v6 = { ipv4Prefix: 32, ipv6Prefix: 64 };
    expect(list.match(input({ ip: '2001:db8:1:2::5' }), v6)).toBe('ip');
    expect(list.match(input({ ip: '2001:db8:1:2::99' }), v6)).toBe('ip');
    expect(list.match(input({ ip: '2001:db8:1:3::5' }), v6)).toBeUndefined();
    expect(list.match(input({ ip: '2001:db8:7:7::1' }), v6)).toBe('ip');
    expect(list.match(input({ ip: '2001:db8:9:ffff::1' }), v6)).toBe('ip');
    expect(list.match(input({ ip: '203.0.113.7' }), v6)).toBe('ip');
    expect(list.match(input({ ip: '203.0.113.8' }), v6)).toBeUndefined();
    expect(list.match(input({ ip: '::ffff:192.0.2.200' }), v6)).toBe('ip');
    expect(list.match(input({ ip: '192.0.2.1' }), v6)).toBeUndefined();
    // Per address (ipv6Prefix 128) only the address itself; a /24 client network contains 203.0.113.7.
    expect(list.match(input({ ip: '2001:db8:1:2::99' }), { ipv4Prefix: 32, ipv6Prefix: 128 })).toBeUndefined();
    expect(list.match(input({ ip: '203.0.113.8' }), { ipv4Prefix: 24, ipv6Prefix: 64 })).toBe('ip');
  });
});
