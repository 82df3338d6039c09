// End to end through parsePolicy + compilePolicy + authorize: the rate-limit parts of seeds 003
// (Supabase HS256 JWTs, 100/min per company, burst 200) and 004 (20 per 60 s per IP per
// endpoint, lockout 15 min after 10 violations, bans, /health exempt), with real signed tokens.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { runBansCommand } from '../../src/ratelimit/bans-cli.js';
import type { Decision } from '../../src/types.js';
import { request, type RequestInit } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const SUPABASE_SECRET = 'super-secret-jwt-token-with-at-least-32-characters';
const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-rl-e2e-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SEED_003 = `
identity:
  - jwt: { issuers: [supabase] }
issuers:
  supabase:
    issuer: https://xyz.supabase.co/auth/v1
    secret: "${SUPABASE_SECRET}"
    claims: { tenant: user_metadata.company_id }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: root, match: { path: / }, public: true }
  - { name: api, match: { pathPrefix: /api/ } }
rateLimits:
  policies:
    - { name: per-company, key: [tenant], rate: 100/min, burst: 200 }
tenants:
  enterprise-co: { limits: { per-company: { rate: 1000/min, burst: 2000 } } }
`;

const seed004 = (bansFile: string) => `
identity:
  - jwt: { issuers: [tronexus] }
issuers:
  tronexus:
    secret: "${SUPABASE_SECRET}"
    claims: { tenant: app_id, scopes: [roles] }
clientIp: { xffTrustedHops: 1 }
requireTenant: false
routes:
  - { name: health, match: { path: /health }, public: true, rateLimits: { exempt: true } }
  - { name: oauth, match: { pathPrefix: /oauth/ }, public: true }
  - { name: refresh, match: { path: /auth/refresh, methods: [POST] }, public: true }
  - { name: me, match: { path: /auth/me } }
rateLimits:
  headers: legacy
  bans: { file: "${bansFile}", refresh: 100ms }
  policies:
    - name: per-ip-endpoint
      key: [ip, route]
      window: 60s
      limit: 20
      lockout: { after: 10, for: 15m }
`;

async function token(claims: Record<string, unknown>, issuer?: string): Promise<string> {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject('user-1').setIssuedAt().setExpirationTime('1h');
  if (issuer) jwt.setIssuer(issuer);
  return jwt.sign(new TextEncoder().encode(SUPABASE_SECRET));
}

async function check(policy: CompiledPolicy, init: RequestInit): Promise<Decision> {
  return authorize(policy, request(init));
}

function headerOf(decision: Decision, name: string): string | undefined {
  const headers = decision.allowed ? decision.responseHeaders : decision.headers;
  return headers.find((h) => h.name === name)?.value;
}

describe('seed 003 through authorize', () => {
  it('100/min per company with burst 200: the 201st request is a 429 with Retry-After and RateLimit headers', async () => {
    const runtime = testRuntime();
    const policy = compileYaml(SEED_003, runtime);
    const acme = `Bearer ${await token({ user_metadata: { company_id: 'acme' } }, 'https://xyz.supabase.co/auth/v1')}`;
    for (let i = 0; i < 200; i++) {
      expect((await check(policy, { path: '/api/vehicles', headers: { authorization: acme } })).allowed).toBe(true);
    }
    const denied = await check(policy, { path: '/api/vehicles', headers: { authorization: acme } });
    expect(denied).toMatchObject({ allowed: false, status: 429, code: 'RATE_LIMITED', reason: 'rate_limited' });
    expect(headerOf(denied, 'retry-after')).toBe('1');
    expect(headerOf(denied, 'ratelimit-policy')).toBe('"per-company";q=200;w=120');
    expect(headerOf(denied, 'ratelimit')).toBe('"per-company";r=0;t=120');
    expect(denied.allowed ? '' : denied.body).toContain('"reason":"rate_limited"');

    // Another company has its own bucket; public routes are never limited by a per-company key.
    const globex = `Bearer ${await token({ user_metadata: { company_id: 'globex' } }, 'https://xyz.supabase.co/auth/v1')}`;
    expect((await check(policy, { path: '/api/vehicles', headers: { authorization: globex } })).allowed).toBe(true);
    for (let i = 0; i < 300; i++) expect((await check(policy, { path: '/health' })).allowed).toBe(true);

    runtime.clock.advance(600);
    expect((await check(policy, { path: '/api/vehicles', headers: { authorization: acme } })).allowed).toBe(true);
  });
});

describe('seed 004 through authorize', () => {
  it('20 per 60 s per IP per endpoint, lockout after 10 violations, /health exempt, bans from the CLI', async () => {
    const bansFile = path.join(dir, 'bans.json');
    const runtime = testRuntime();
    const policy = compileYaml(seed004(bansFile), runtime);
    await policy.ready;
    // What the example Envoy (use_remote_address: true) sends behind one load balancer at
    // 10.0.0.1: the peer is the load balancer, and Envoy has appended it to x-forwarded-for.
    const from = (ip: string, extra: RequestInit = {}): RequestInit => ({ sourceAddress: '10.0.0.1', ...extra, headers: { 'x-forwarded-for': `${ip}, 10.0.0.1`, ...extra.headers } });

    for (let i = 0; i < 20; i++) expect((await check(policy, { method: 'POST', path: '/auth/refresh', ...from('198.51.100.4') })).allowed).toBe(true);
    const limited = await check(policy, { method: 'POST', path: '/auth/refresh', ...from('198.51.100.4') });
    expect(limited).toMatchObject({ status: 429, reason: 'rate_limited' });
    expect(headerOf(limited, 'retry-after')).toBe('60');
    expect(headerOf(limited, 'x-ratelimit-limit')).toBe('20');
    expect(headerOf(limited, 'x-ratelimit-remaining')).toBe('0');

    // Same IP, other endpoint: its own window (authenticated with a real token).
    const bearer = `Bearer ${await token({ app_id: 'app-1', roles: ['user'] })}`;
    expect((await check(policy, { path: '/auth/me', ...from('198.51.100.4', { headers: { authorization: bearer } }) })).allowed).toBe(true);

    for (let i = 0; i < 8; i++) expect(await check(policy, { method: 'POST', path: '/auth/refresh', ...from('198.51.100.4') })).toMatchObject({ reason: 'rate_limited' });
    const locked = await check(policy, { method: 'POST', path: '/auth/refresh', ...from('198.51.100.4') });
    expect(locked).toMatchObject({ status: 429, reason: 'locked_out' });
    expect(headerOf(locked, 'retry-after')).toBe('900');

    for (let i = 0; i < 50; i++) expect((await check(policy, { path: '/health', ...from('198.51.100.4') })).allowed).toBe(true);

    runtime.clock.advance(15 * 60_000);
    expect((await check(policy, { method: 'POST', path: '/auth/refresh', ...from('198.51.100.4') })).allowed).toBe(true);

    // A permanent ban, added with the CLI, refuses the address everywhere.
    const io = { out: () => {}, err: () => {}, env: {} };
    expect(await runBansCommand(['add', 'ip:198.51.100.4', '--reason', 'repeat offender', '--file', bansFile], io)).toBe(0);
    let banned: Decision | undefined;
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      banned = await check(policy, { path: '/oauth/google', ...from('198.51.100.4') });
      if (!banned.allowed) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(banned).toMatchObject({ allowed: false, status: 429, reason: 'banned' });
    expect(await check(policy, { path: '/health', ...from('198.51.100.4') })).toMatchObject({ reason: 'banned' });
    expect((await check(policy, { path: '/oauth/google', ...from('198.51.100.5') })).allowed).toBe(true);
    await runtime.resources.closeAll();
  });
});
