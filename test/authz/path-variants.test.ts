// Path confusion (issue 13 §1): every variant an upstream may read as a protected route is either
// refused (400 invalid_path, the default) or, where the policy opts in, judged by that protected
// route. Never allowed on a weaker rule.
import { describe, expect, it } from 'vitest';
import { classifyPath, isSimplePath, PathShape, pathReadings } from '../../src/authz/path.js';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import type { Decision } from '../../src/types.js';
import { request } from '../support/request.js';
import { compileYaml } from '../support/runtime.js';

const SECRET = 'admin-secret-long-enough-1234';

function policyYaml(paths: string): string {
  return `
${paths}
identity:
  - sharedSecret: { header: x-admin-secret, secret: "${SECRET}", tenant: ops, scopes: [admin, customers:read] }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: catalog, match: { pathPrefix: /v1/products }, public: true }
  - { name: docs, match: { pathPrefix: /docs }, public: true }
  - { name: static, match: { pathGlob: "/static/**" }, public: true }
  - { name: admin, match: { pathPrefix: /v1/admin }, require: { anyOf: [admin] } }
  - { name: customer, match: { path: "/api/v1/customers/{id}" }, require: { anyOf: [customers:read] } }
  - { name: api-public, match: { pathPrefix: /api/v1 }, public: true }
  - { name: settings, match: { path: /v1/settings }, require: { anyOf: [admin] } }
  - { name: v1-public, match: { pathPrefix: /v1 }, public: true }
  - { name: everything, match: { pathPrefix: / }, require: { anyOf: [admin] } }
`;
}

const refuse = compileYaml(policyYaml(''));
const strictest = compileYaml(policyYaml('paths: { nonCanonical: strictest }'));

const PROTECTED = ['admin', 'customer', 'settings', 'everything'];

/** Denied as an unauthenticated caller by a protected route (the first candidate that denies). */
function deniedByProtected(d: Decision): void {
  expect(d).toMatchObject({ allowed: false, reason: 'missing_credential', status: 401 });
  expect(PROTECTED).toContain(d.route);
}

async function check(policy: CompiledPolicy, path: string, headers: Record<string, string> = {}): Promise<Decision> {
  return authorize(policy, request({ path, headers }));
}

// [raw path, the protected route an upstream may serve it as]
const NON_CANONICAL: [string, string][] = [
  // ";" path parameters (Tomcat/Jetty/Spring drop them)
  ['/v1/products/..;/admin/users', 'admin'],
  ['/v1/products/..;x=1/admin/users', 'admin'],
  ['/v1/products;/../admin', 'admin'],
  ['/v1/admin;jsessionid=x/users', 'admin'],
  ['/api/v1/customers;jsessionid=x/123', 'customer'],
  ['/v1/settings;a=b', 'settings'],
  ['/docs/..;/secret', 'everything'],
  // raw dot segments (Envoy normalize_path off; Express serves them resolved by the client or not)
  ['/v1/admin/users/../../../health', 'admin'],
  ['/v1/products/../admin/users', 'admin'],
  ['/v1/products/./../admin', 'admin'],
  ['/docs/../v1/admin', 'admin'],
  ['/health/../v1/settings', 'settings'],
  ['/static/../private', 'everything'],
  ['/v1/admin/.', 'admin'],
  ['/v1/admin/..', 'admin'],
  // encoded dots
  ['/v1/products/%2e%2e/admin/users', 'admin'],
  ['/v1/products/%2E%2E/admin', 'admin'],
  ['/v1/products/.%2e/admin', 'admin'],
  ['/docs/%2e%2e/secret', 'everything'],
  // encoded separators (WSGI decodes %2F; IIS/ASP.NET %5C)
  ['/api/v1/customers%2F123', 'customer'],
  ['/api/v1/customers%2f123', 'customer'],
  ['/api/v1/customers%5C123', 'customer'],
  ['/v1/products%2F..%2Fadmin', 'admin'],
  ['/docs%2F..%2Fv1%2Fadmin', 'admin'],
  // raw backslashes
  ['/api/v1/customers\\123', 'customer'],
  ['/v1/products\\..\\admin', 'admin'],
  // double slashes (Tomcat merges them)
  ['//v1/admin', 'admin'],
  ['/v1//admin', 'admin'],
  ['/docs//../v1/admin', 'admin'],
  // encoded unreserved characters (decoded by every upstream)
  ['/v1/%61dmin/users', 'admin'],
  ['/v1/adm%69n', 'admin'],
  ['/api/v1/%63ustomers/1', 'customer'],
  ['/v1/setting%73', 'settings'],
  // double encoding (an upstream that decodes twice)
  ['/v1/products%252F..%252Fadmin', 'admin'],
  ['/api/v1/customers%252F123', 'customer'],
  // encoded ";"
  ['/v1/products/..%3B/admin', 'admin'],
];

// Refused whatever the policy says: no reading of them can be trusted.
const INVALID: string[] = [
  'v1/admin',
  '',
  '*',
  '/v1/admin%zz',
  '/v1/admin%4',
  '/v1/admin%00',
  '/v1/admin%0a',
  '/v1/admin%7F',
  '/v1/admin\u0000',
  '/v1/ad min',
  '/v1/admin\t',
  '/v1/adm\u00efn',
  '/v1/adm%C4%B1n', // ı: ASP.NET's OrdinalIgnoreCase reads ADMIN
  '/v1/%E2%84%AAey', // Kelvin sign K folds to k
  '/v1/s%C5%BFettings', // ſ upper-cases to S
  '/v1/admin%C3', // not UTF-8
  '/v1/admin%C2%85', // C1 control
  '/v1/<admin>',
  '/v1/admin"',
];

// Canonical, but case-insensitive upstreams (Express, ASP.NET) serve them as the protected route.
const CASE: [string, string][] = [
  ['/V1/ADMIN/users', 'admin'],
  ['/v1/Admin', 'admin'],
  ['/API/V1/CUSTOMERS/123', 'customer'],
  ['/api/v1/CUSTOMERS/123', 'customer'],
  ['/v1/SETTINGS', 'settings'],
  ['/V1/Settings', 'settings'],
  // a public prefix must not open the protected catch-all of a case-sensitive upstream
  ['/DOCS/x', 'everything'],
  ['/Health', 'everything'],
  ['/V1/products', 'everything'],
];

// Trailing slash: Express (non-strict) serves /v1/settings/ as /v1/settings.
const TRAILING: [string, string][] = [['/v1/settings/', 'settings']];

describe('path variants (issue 13 §1)', () => {
  it('has at least 40 variants', () => {
    expect(NON_CANONICAL.length + INVALID.length + CASE.length + TRAILING.length).toBeGreaterThanOrEqual(40);
  });

  describe('default (paths.nonCanonical: refuse)', () => {
    it.each(NON_CANONICAL)('%s → 400 invalid_path', async (path) => {
      const d = await check(refuse, path);
      expect(d).toMatchObject({ allowed: false, status: 400, code: 'BAD_REQUEST', reason: 'invalid_path' });
    });
    it.each(INVALID)('%j → 400 invalid_path', async (path) => {
      expect(await check(refuse, path)).toMatchObject({ allowed: false, status: 400, reason: 'invalid_path' });
    });
    it.each([...CASE, ...TRAILING])('%s is judged by the stricter reading (%s)', async (path, route) => {
      deniedByProtected(await check(refuse, path));
      // and with the credential the protected route wants, it is that route's allow
      expect(await check(refuse, path, { 'x-admin-secret': SECRET })).toMatchObject({ allowed: true });
      void route;
    });
  });

  describe('opt-in (paths.nonCanonical: strictest)', () => {
    it.each(NON_CANONICAL)('%s → denied by a protected route (%s)', async (path, route) => {
      deniedByProtected(await check(strictest, path));
      // the protected route the upstream may serve is among what any reading reaches
      const reached = new Set((pathReadings(path) ?? []).map((r) => strictest.routes.match('api.example.com', 'GET', r)?.name));
      expect(reached).toContain(route);
    });
    it.each(INVALID)('%j → still 400 invalid_path', async (path) => {
      expect(await check(strictest, path)).toMatchObject({ allowed: false, status: 400, reason: 'invalid_path' });
    });
    it('allows a non-canonical path when every route any reading reaches allows it, with all their removals', async () => {
      const d = await check(strictest, '/v1/admin/..;/admin/users', { 'x-admin-secret': SECRET });
      expect(d).toMatchObject({ allowed: true, route: 'admin' });
      const e = await check(strictest, '/v1/products/./a;b=c', {});
      expect(e).toMatchObject({ allowed: true, route: 'catalog' });
    });
    it('refuses when the routes reached identify the caller differently', async () => {
      const policy = compileYaml(`
paths: { nonCanonical: strictest }
identity:
  - sharedSecret: { header: x-admin-secret, secret: "${SECRET}", tenant: ops, scopes: [admin] }
routes:
  - name: hook
    match: { pathPrefix: /hook }
    identity: [{ sharedSecret: { header: x-hook-secret, secret: "${SECRET}-hook", tenant: pay, scopes: [admin] } }]
  - { name: rest, match: { pathPrefix: / }, require: { anyOf: [admin] } }
`);
      const headers = { 'x-admin-secret': SECRET, 'x-hook-secret': `${SECRET}-hook` };
      expect(await check(policy, '/hook/x', headers)).toMatchObject({ allowed: true, principal: { tenant: 'pay' } });
      expect(await check(policy, '/x/..;/hook/x', headers)).toMatchObject({ allowed: false, status: 400, reason: 'invalid_path' });
    });

    it('a route can opt in for itself while the top level refuses', async () => {
      const policy = compileYaml(
        policyYaml('').replace(
          '{ name: catalog, match: { pathPrefix: /v1/products }, public: true }',
          '{ name: catalog, match: { pathPrefix: /v1/products }, public: true, paths: { nonCanonical: strictest } }',
        ),
      );
      expect(await check(policy, '/v1/products/./a;b=c')).toMatchObject({ allowed: true, route: 'catalog' });
      expect(await check(policy, '/v1/products/..;/admin/users')).toMatchObject({ allowed: false, status: 400, reason: 'invalid_path' });
      expect(await check(policy, '/docs/./a')).toMatchObject({ allowed: false, status: 400, reason: 'invalid_path' });
    });

    it('a route can refuse non-canonical paths for itself', async () => {
      const policy = compileYaml(
        policyYaml('paths: { nonCanonical: strictest }').replace(
          '{ name: admin, match: { pathPrefix: /v1/admin }, require: { anyOf: [admin] } }',
          '{ name: admin, match: { pathPrefix: /v1/admin }, require: { anyOf: [admin] }, paths: { nonCanonical: refuse } }',
        ),
      );
      expect(await check(policy, '/v1/products/..;/admin/users', { 'x-admin-secret': SECRET })).toMatchObject({ reason: 'invalid_path' });
      expect(await check(policy, '/v1/products/./a;b=c')).toMatchObject({ allowed: true, route: 'catalog' });
    });
  });

  it('canonical paths keep their route and verdict', async () => {
    for (const [path, route] of [
      ['/health', 'health'],
      ['/v1/products/42', 'catalog'],
      ['/docs/intro', 'docs'],
      ['/static/a/b.css', 'static'],
      ['/api/v1/orders', 'api-public'],
      ['/v1/files/a%20b', 'v1-public'],
      ['/v1/files/caf%C3%A9', 'v1-public'],
      ['/v1/files/x:y@z', 'v1-public'],
    ] as const) {
      expect(await check(refuse, path)).toMatchObject({ allowed: true, route });
    }
    expect(await check(refuse, '/api/v1/customers/AbC123', { 'x-admin-secret': SECRET })).toMatchObject({ allowed: true, route: 'customer' });
    expect(await check(refuse, '/V1/ADMIN/users', { 'x-admin-secret': SECRET })).toMatchObject({ allowed: true });
  });

  describe('upstream case declared', () => {
    it('insensitive: the case-folded reading alone decides', async () => {
      const policy = compileYaml(policyYaml('paths: { upstreamCase: insensitive }'));
      expect(await check(policy, '/DOCS/x')).toMatchObject({ allowed: true, route: 'docs' });
      expect(await check(policy, '/V1/ADMIN')).toMatchObject({ allowed: false, route: 'admin' });
    });
    it('sensitive: the path as written alone decides', async () => {
      const policy = compileYaml(policyYaml('paths: { upstreamCase: sensitive }'));
      expect(await check(policy, '/V1/ADMIN')).toMatchObject({ allowed: false, route: 'everything' });
      expect(await check(policy, '/api/v1/CUSTOMERS/1')).toMatchObject({ allowed: true, route: 'api-public' });
    });
    it('per host', async () => {
      const policy = compileYaml(policyYaml('paths: { hosts: { "*.example.com": { upstreamCase: insensitive } } }'));
      expect(await authorize(policy, request({ path: '/DOCS/x', host: 'api.example.com' }))).toMatchObject({ allowed: true, route: 'docs' });
      expect(await authorize(policy, request({ path: '/DOCS/x', host: 'api.example.org' }))).toMatchObject({ allowed: false, route: 'everything' });
    });
    it('upper-case patterns protect lower-case paths on case-insensitive upstreams', async () => {
      const policy = compileYaml(`
identity:
  - sharedSecret: { header: x-admin-secret, secret: "${SECRET}", tenant: ops, scopes: [admin] }
routes:
  - { name: Admin, match: { pathPrefix: /Admin }, require: { anyOf: [admin] } }
  - { name: rest, match: { pathPrefix: / }, public: true }
`);
      expect(await check(policy, '/admin/x')).toMatchObject({ allowed: false, route: 'Admin' });
      expect(await check(policy, '/other')).toMatchObject({ allowed: true, route: 'rest' });
    });
  });

  it('a route written with a trailing slash also protects the path without it', async () => {
    const policy = compileYaml(`
identity:
  - sharedSecret: { header: x-admin-secret, secret: "${SECRET}", tenant: ops, scopes: [admin] }
routes:
  - { name: panel, match: { path: /panel/ }, require: { anyOf: [admin] } }
  - { name: rest, match: { pathPrefix: / }, public: true }
`);
    expect(await check(policy, '/panel')).toMatchObject({ allowed: false, route: 'panel' });
    expect(await check(policy, '/panel', { 'x-admin-secret': SECRET })).toMatchObject({ allowed: true });
    expect(await check(policy, '/other')).toMatchObject({ allowed: true, route: 'rest' });
  });

  it('so does a glob written with a trailing slash (attacker review: only exact paths were)', async () => {
    const policy = compileYaml(`
identity:
  - sharedSecret: { header: x-admin-secret, secret: "${SECRET}", tenant: ops, scopes: [admin] }
routes:
  - { name: settings, match: { pathGlob: "/settings/*/" }, require: { anyOf: [admin] } }
  - { name: rest, match: { pathPrefix: / }, public: true }
`);
    expect(await check(policy, '/settings/x/')).toMatchObject({ allowed: false, route: 'settings' });
    expect(await check(policy, '/settings/x')).toMatchObject({ allowed: false, route: 'settings' });
    expect(await check(policy, '/settings/x', { 'x-admin-secret': SECRET })).toMatchObject({ allowed: true });
    expect(await check(policy, '/other')).toMatchObject({ allowed: true, route: 'rest' });
  });

  it('classification and readings', () => {
    expect(isSimplePath('/v1/items/42')).toBe(true);
    expect(isSimplePath('/')).toBe(true);
    for (const p of ['/v1/Items', '/v1/items/', '/a%20b', '/a;b', '//a', '/a/./b', '/a/..']) expect(isSimplePath(p)).toBe(false);
    expect(classifyPath('/a%20b')).toBe(PathShape.Canonical);
    expect(classifyPath('/a/%2e%2e/b')).toBe(PathShape.NonCanonical);
    expect(pathReadings('/v1/products/..;/admin/users')).toContain('/v1/admin/users');
    expect(pathReadings('/api/v1/customers%252F123')).toContain('/api/v1/customers/123');
    expect(pathReadings('/a;b' + '/x'.repeat(3000))).toBeUndefined();
  });
});
