import { describe, expect, it } from 'vitest';
import type { CredentialSource } from '../../src/identity/source.js';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import type { Decision, Principal } from '../../src/types.js';
import { request } from '../support/request.js';
import { compileYaml } from '../support/runtime.js';

const SECRET = 'a-long-enough-shared-secret';

async function run(policy: CompiledPolicy, init: Parameters<typeof request>[0]): Promise<Decision> {
  return authorize(policy, request(init));
}

const policy = compileYaml(`
requireTenant: true
identity:
  - sharedSecret: { header: x-internal, secret: "${SECRET}", subject: billing, scopes: [billing:read] }
  - host:
      domains:
        shop.example.com: { tenant: acme, scopes: [storefront] }
        disabled.example.com: { tenant: gone, scopes: [storefront] }
tenants:
  gone: { disabled: true }
routes:
  - { name: public, match: { path: /health }, public: true, removeHeaders: [x-debug] }
  - { name: store, match: { pathPrefix: /v1/products }, require: { anyOf: [storefront, admin] } }
  - { name: both, match: { pathPrefix: /v1/both }, require: { allOf: [storefront, admin] } }
  - { name: no-tenant-ok, match: { pathPrefix: /v1/billing }, requireTenant: false, require: { allOf: [billing:read] } }
  - { name: host-only, match: { pathPrefix: /v1/cart }, credentials: [host] }
`);

describe('authorize', () => {
  it('allows public routes without identification and strips owned + route headers', async () => {
    const d = await run(policy, { path: '/health', headers: { 'x-internal': 'wrong-secret-here-wrong' } });
    expect(d.allowed).toBe(true);
    if (!d.allowed) return;
    expect(d.principal).toBeUndefined();
    // x-internal: the shared-secret header is stripped on every allow, public routes included
    expect(d.removeHeaders).toEqual(['x-tenant-id', 'x-auth-subject', 'x-auth-scopes', 'x-auth-method', 'x-auth-key-id', 'x-auth-email', 'x-debug', 'x-internal']);
  });

  it('the first source that finds a credential decides, even when a later one would allow', async () => {
    const d = await run(policy, { path: '/v1/products', host: 'shop.example.com', headers: { 'x-internal': 'not-the-secret-at-all' } });
    expect(d).toMatchObject({ allowed: false, reason: 'invalid_shared_secret', status: 401 });
  });

  it('anyOf needs one scope, allOf needs all', async () => {
    expect((await run(policy, { path: '/v1/products', host: 'shop.example.com' })).allowed).toBe(true);
    expect(await run(policy, { path: '/v1/both', host: 'shop.example.com' })).toMatchObject({ allowed: false, reason: 'insufficient_scope', status: 403 });
  });

  it('refuses a caller without tenant unless the route says requireTenant: false', async () => {
    expect(await run(policy, { path: '/v1/products', headers: { 'x-internal': SECRET } })).toMatchObject({ allowed: false, reason: 'missing_tenant' });
    const d = await run(policy, { path: '/v1/billing/invoices', headers: { 'x-internal': SECRET } });
    expect(d.allowed).toBe(true);
    if (d.allowed) expect(d.upstreamHeaders.map((h) => h.name)).not.toContain('x-tenant-id');
    if (d.allowed) expect(d.removeHeaders).toContain('x-tenant-id');
  });

  it('refuses disabled tenants and credential kinds the route does not accept', async () => {
    expect(await run(policy, { path: '/v1/products', host: 'disabled.example.com' })).toMatchObject({ reason: 'tenant_disabled', status: 403 });
    expect(await run(policy, { path: '/v1/cart', headers: { 'x-internal': SECRET } })).toMatchObject({ reason: 'credential_not_allowed' });
    expect((await run(policy, { path: '/v1/cart', host: 'shop.example.com' })).allowed).toBe(true);
  });

  it('denies paths that are not paths', async () => {
    expect(await run(policy, { path: 'v1/products', host: 'shop.example.com' })).toMatchObject({ reason: 'invalid_path', status: 400 });
  });

  it('turns a throwing or rejecting source into 503 internal_error, never an allow', async () => {
    const throwing: CredentialSource = { method: 'jwt', name: 'boom', identify: () => { throw new Error('kaboom'); } };
    const rejecting: CredentialSource = { method: 'jwt', name: 'boom', identify: () => Promise.reject(new Error('async kaboom')) };
    for (const source of [throwing, rejecting]) {
      const route = { ...policy.defaultRoute, kind: 'route' as const, name: 'x', chain: [source] };
      const broken: CompiledPolicy = { ...policy, routes: { match: () => route } as never };
      const d = await run(broken, { path: '/anything' });
      expect(d).toMatchObject({ allowed: false, status: 503, reason: 'internal_error' });
    }
  });

  it('awaits asynchronous sources in order and continues past ones that find nothing', async () => {
    const principal: Principal = { method: 'api-key', tenant: 't', scopes: [], keyId: 'k1' };
    const none: CredentialSource = { method: 'jwt', name: 'none', identify: () => Promise.resolve({ kind: 'none' }) };
    const found: CredentialSource = { method: 'api-key', name: 'found', identify: () => Promise.resolve({ kind: 'principal', principal, removeHeaders: ['x-api-key'] }) };
    const route = { ...policy.defaultRoute, kind: 'route' as const, name: 'x', chain: [none, found] };
    const d = await run({ ...policy, routes: { match: () => route } as never }, { path: '/x' });
    expect(d.allowed).toBe(true);
    if (d.allowed) {
      expect(d.upstreamHeaders).toContainEqual({ name: 'x-auth-key-id', value: 'k1' });
      expect(d.removeHeaders).toContain('x-api-key');
    }
  });

  it('refuses identities that would break header framing', async () => {
    const principal: Principal = { method: 'jwt', tenant: 'acme\r\nx-admin: 1', scopes: [] };
    const source: CredentialSource = { method: 'jwt', name: 'evil', identify: () => ({ kind: 'principal', principal }) };
    const route = { ...policy.defaultRoute, kind: 'route' as const, name: 'x', chain: [source] };
    expect(await run({ ...policy, routes: { match: () => route } as never }, { path: '/x' })).toMatchObject({ allowed: false, reason: 'invalid_identity' });
  });

  it('refuses identity values the upstream would read differently (whitespace at either end, a TAB anywhere) or that are too long', async () => {
    const base: Principal = { method: 'jwt', tenant: 'acme', subject: 'u1', email: 'u1@acme.test', keyId: 'k1', scopes: ['read'] };
    const variants: Partial<Principal>[] = [
      { tenant: 'acme ' }, { tenant: ' acme' }, { tenant: 'ac\tme' }, { tenant: 'acme\t' },
      { subject: 'u1 ' }, { email: ' u1@acme.test' }, { keyId: 'k1\t' }, { scopes: ['read\t'] },
      // Too long: each value would be held by caches of encoded allows, and be a metric label.
      { tenant: 't'.repeat(257) }, { subject: 's'.repeat(2049) }, { email: `${'e'.repeat(320)}@x.io` }, { keyId: 'k'.repeat(257) },
      { scopes: ['s'.repeat(257)] }, { scopes: Array.from({ length: 257 }, (_, i) => `s${i}`) },
    ];
    const decide = (principal: Principal) => {
      const source: CredentialSource = { method: 'jwt', name: 'claims', identify: () => ({ kind: 'principal', principal }) };
      const route = { ...policy.defaultRoute, kind: 'route' as const, name: 'x', chain: [source] };
      return run({ ...policy, routes: { match: () => route } as never }, { path: '/x' });
    };
    expect((await decide(base)).allowed).toBe(true);
    expect((await decide({ ...base, tenant: 'acme corp' })).allowed).toBe(true); // inner spaces travel unchanged
    for (const variant of variants) expect(await decide({ ...base, ...variant }), JSON.stringify(variant)).toMatchObject({ allowed: false, reason: 'invalid_identity' });
  });
});

describe('default for unmatched requests', () => {
  const base = `
identity:
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [storefront] } } }
routes:
  - { match: { path: /health }, public: true }
`;
  it('deny: 401 for anonymous callers (no route enumeration), 403 route_not_allowed for identified ones', async () => {
    const p = compileYaml(base);
    expect(await run(p, { path: '/nope' })).toMatchObject({ reason: 'missing_credential', status: 401 });
    expect(await run(p, { path: '/nope', host: 'shop.example.com' })).toMatchObject({ reason: 'route_not_allowed', status: 403 });
  });
  it('authenticated: any identified caller passes', async () => {
    const p = compileYaml(base + 'default: authenticated\n');
    expect((await run(p, { path: '/nope', host: 'shop.example.com' })).allowed).toBe(true);
    expect(await run(p, { path: '/nope' })).toMatchObject({ reason: 'missing_credential' });
  });
});

describe('dev mode', () => {
  it('allows every request as the dev principal with x-auth-method: dev', async () => {
    const p = compileYaml(`
mode: dev
dev: { tenant: dev-tenant, subject: dev-user, scopes: ["inventory:read"] }
routes:
  - { match: { pathPrefix: /v1/admin } }
`);
    expect(p.warnings.join('\n')).toMatch(/mode is dev: EVERY request is allowed/);
    const d = await run(p, { path: '/v1/admin/x', headers: { 'x-tenant-id': 'other' } });
    expect(d.allowed).toBe(true);
    if (d.allowed) {
      expect(d.upstreamHeaders).toEqual([
        { name: 'x-tenant-id', value: 'dev-tenant' },
        { name: 'x-auth-subject', value: 'dev-user' },
        { name: 'x-auth-scopes', value: 'inventory:read' },
        { name: 'x-auth-method', value: 'dev' },
      ]);
    }
  });
});
