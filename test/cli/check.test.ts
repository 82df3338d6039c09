// `portcullis check` as a child process: the real pipeline on one request, its exit codes, the
// JSON shape and the explanation (route choice, identity source, the rule that denied, limits).

import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { portcullis, tempDir, tempFile } from './helpers.js';

const POLICY = `realm: shop
identity:
  - jwt: { issuers: [auth0] }
issuers:
  auth0:
    issuer: https://acme.auth0.example/
    jwksUri: https://acme.auth0.example/.well-known/jwks.json
    audiences: [https://api.example.com]
    claims: { tenant: org_id, scopes: [permissions] }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: items-read, match: { path: "/v1/items/{id}", methods: [GET] }, require: { allOf: ["items:read"] } }
  - { name: items-any, match: { pathPrefix: /v1/items } , require: { allOf: ["items:write"] } }
default: deny
rateLimits:
  backend: memory
  policies:
    - { name: per-tenant, key: [tenant], rate: 10/min, burst: 5 }
`;

let dir: string;
let policy: string;
let jwks: string;
let token: (claims: Record<string, unknown>, expSeconds?: number) => Promise<string>;

beforeAll(async () => {
  dir = tempDir();
  policy = tempFile('policy.yaml', POLICY, dir);
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  jwks = path.join(dir, 'jwks.json');
  writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] }));
  token = (claims, expSeconds = 3600) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setIssuer('https://acme.auth0.example/')
      .setAudience('https://api.example.com')
      .setSubject('user-1')
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + expSeconds)
      .sign(privateKey);
});

const check = (...args: string[]) => portcullis(['check', '--config', policy, '--offline', '--jwks', `auth0=${jwks}`, ...args]);

describe('portcullis check', () => {
  it('allows a caller with the scope: exit 0, identity headers, route choice, source and rules explained', async () => {
    const t = await token({ org_id: 'acme', permissions: ['items:read'] });
    const run = await check('--json', '-H', `authorization: Bearer ${t}`, '-H', 'x-tenant-id: evil', 'GET', 'https://api.example.com/v1/items/42?full=1');
    expect(run.code).toBe(0);
    const r = JSON.parse(run.stdout);
    for (const key of ['decision', 'status', 'reason', 'route', 'upstreamHeaders', 'removedHeaders', 'responseHeaders', 'body', 'explain']) expect(r).toHaveProperty(key);
    expect(r).toMatchObject({ decision: 'allow', status: 200, route: 'items-read', body: null });
    expect(r.upstreamHeaders).toMatchObject({ 'x-tenant-id': 'acme', 'x-auth-subject': 'user-1', 'x-auth-scopes': 'items:read', 'x-auth-method': 'jwt' });
    expect(r.removedHeaders).toContain('x-auth-key-id');
    const considered = r.explain.route.considered;
    expect(considered.find((c: { name: string }) => c.name === 'items-read')).toMatchObject({ matched: true });
    expect(considered.find((c: { name: string }) => c.name === 'items-any')).toMatchObject({ matched: false, why: 'matches, but a more specific route was chosen first' });
    expect(considered.find((c: { name: string }) => c.name === 'health')).toMatchObject({ matched: false });
    expect(r.explain.identity).toEqual([{ source: 'jwt:auth0', outcome: 'principal', detail: 'proved jwt caller user-1' }]);
    expect(r.explain.principal).toMatchObject({ method: 'jwt', tenant: 'acme', issuer: 'auth0', scopes: ['items:read'] });
    expect(r.explain.checks).toContainEqual({ check: 'require.allOf', ok: true, detail: 'has items:read' });
    expect(r.explain.limits).toEqual([expect.objectContaining({ policy: 'per-tenant', outcome: 'allowed', remaining: 4, shadow: false })]);
  });

  it('names the rule that denied: insufficient scope is exit 3 with a 403 body', async () => {
    const t = await token({ org_id: 'acme', permissions: ['items:list'] });
    const run = await check('--json', '-H', `authorization: Bearer ${t}`, 'GET', 'https://api.example.com/v1/items/42');
    expect(run.code).toBe(3);
    const r = JSON.parse(run.stdout);
    expect(r).toMatchObject({ decision: 'deny', status: 403, reason: 'insufficient_scope', route: 'items-read', upstreamHeaders: {} });
    expect(r.body).toMatchObject({ code: 'FORBIDDEN', status: 403, reason: 'insufficient_scope' });
    expect(r.responseHeaders['www-authenticate']).toBe('Bearer realm="shop", error="insufficient_scope", scope="items:read"');
    expect(r.explain.checks).toContainEqual({ check: 'insufficient_scope', ok: false, detail: 'missing items:read' });
    expect(r.explain.deniedBy).toBe('permission');
  });

  it('explains each deny class: no credential, expired token, unknown route, method not listed', async () => {
    const none = await check('GET', 'https://api.example.com/v1/items/42');
    expect(none.code).toBe(3);
    expect(none.stdout).toContain('DENY 401 missing_credential  (route items-read)');
    expect(none.stdout).toContain('jwt:auth0: nothing found');

    const expired = await check('-H', `authorization: Bearer ${await token({ org_id: 'acme' }, -600)}`, 'GET', 'https://api.example.com/v1/items/1');
    expect(expired.code).toBe(3);
    expect(expired.stdout).toContain('DENY 401 token_expired');
    expect(expired.stdout).toContain('jwt:auth0: refused: token_expired');

    const t = await token({ org_id: 'acme', permissions: ['items:read'] });
    const other = await check('--json', '-H', `authorization: Bearer ${t}`, 'GET', 'https://api.example.com/v2/else');
    expect(other.code).toBe(3);
    expect(JSON.parse(other.stdout)).toMatchObject({ status: 403, reason: 'route_not_allowed', route: 'default' });

    const post = await check('--json', '-H', `authorization: Bearer ${t}`, 'POST', 'https://api.example.com/v1/items/42');
    const r = JSON.parse(post.stdout);
    expect(r.route).toBe('items-any');
    expect(r.explain.route.considered.find((c: { name: string }) => c.name === 'items-read').why).toBe('method POST is not one of GET');
  });

  it('public routes allow without a credential and still strip identity headers', async () => {
    const run = await check('--json', 'GET', 'https://api.example.com/health');
    expect(run.code).toBe(0);
    const r = JSON.parse(run.stdout);
    expect(r).toMatchObject({ decision: 'allow', route: 'health', upstreamHeaders: {} });
    expect(r.removedHeaders).toEqual(expect.arrayContaining(['x-tenant-id', 'x-auth-scopes']));
    expect(r.explain.route.kind).toBe('public');
  });

  it('--offline without keys refuses JWKS tokens and says why', async () => {
    const t = await token({ org_id: 'acme', permissions: ['items:read'] });
    const run = await portcullis(['check', '--config', policy, '--offline', '-H', `authorization: Bearer ${t}`, 'GET', 'https://api.example.com/v1/items/42']);
    expect(run.code).toBe(3);
    expect(run.stdout).toContain('DENY 503 jwks_unavailable');
    expect(run.stdout).toContain('--offline: the JWKS of issuer auth0 was not fetched, so its tokens are refused (give its keys with --jwks auth0=FILE)');
  });

  it('never spends shared quota: a Redis backend is replaced by memory for the check, and says so', async () => {
    // Nothing listens on port 1: contacting Redis would be ratelimit_unavailable (or fail-open).
    const file = tempFile('redis.yaml', `routes:\n  - { name: login, match: { path: /login }, public: true }\nrateLimits:\n  backend: { redis: { url: "redis://127.0.0.1:1" } }\n  policies:\n    - { name: per-ip, key: [ip], window: 60s, limit: 20 }\n`);
    const run = await portcullis(['check', '--json', '--config', file, 'POST', 'https://a.example/login']);
    expect(run.code).toBe(0);
    const r = JSON.parse(run.stdout);
    expect(r.explain.limits).toEqual([expect.objectContaining({ policy: 'per-ip', outcome: 'allowed', remaining: 19, phase: 'all' })]);
    expect(r.explain.notes).toContain('rate limits are counted in memory for this check (Redis is not contacted): remaining quota is what a caller starts with');
  });

  it('exit 1 for an invalid policy, 2 for usage errors, --help prints the usage', async () => {
    const bad = tempFile('bad.yaml', 'routes:\n  - match: { path: /x }\n    pubic: true\n');
    const invalid = await portcullis(['check', '--config', bad, 'GET', 'https://a.example/x']);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toContain('unknown key "pubic"');
    const usage = await portcullis(['check', '--config', policy, 'GET']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('check needs METHOD and URL');
    expect(usage.stderr).toContain('Usage: portcullis check');
    const badUrl = await portcullis(['check', '--config', policy, 'GET', '/relative']);
    expect(badUrl.code).toBe(2);
    const help = await portcullis(['check', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: portcullis check');
  });
});
