// Attacker review: a port no host rule names escaped every rule written for the host's name.
// "admin.example.com:1" was judged only by the routes without a host, while nginx (server_name),
// Traefik (Host()), Caddy and Istio (its "name:*" domains) serve it as admin.example.com. Such a
// request is now judged by both readings, the host as sent and its name, and every route they
// reach must allow. A port a rule names keeps its own rules (Envoy-style virtual hosts per port).
import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import type { Decision } from '../../src/types.js';
import { request } from '../support/request.js';
import { compileYaml } from '../support/runtime.js';

const policy = compileYaml(`
identity:
  - apiKey: { headers: [x-api-key] }
  - host:
      domains:
        shop.example.com: { tenant: shop, scopes: [storefront] }
keyStore:
  file: { path: examples/keys/quickstart.yaml }
routes:
  - { name: admin, match: { host: admin.example.com, pathPrefix: / }, require: { allOf: [superuser] } }
  - { name: corp, match: { host: "*.corp.example.com", pathPrefix: / }, require: { allOf: [superuser] } }
  - { name: docs-alt, match: { host: "docs.example.com:8080", pathPrefix: / }, public: true }
  - { name: docs-status, match: { host: "docs.example.com:9090", pathPrefix: /status }, public: true }
  - { name: edge-health, match: { host: "*.example.com:8443", pathPrefix: /health }, public: true }
  - { name: docs, match: { host: docs.example.com, pathPrefix: / }, require: { allOf: [superuser] } }
  - { name: shop, match: { host: shop.example.com, pathPrefix: /cart }, require: { allOf: [storefront] } }
  - { name: site, match: { pathPrefix: /site }, public: true }
`);

const check = (host: string, path: string, method = 'GET', scheme = 'https'): Promise<Decision> =>
  Promise.resolve(authorize(policy, { ...request({ host, path, method }), scheme }));

describe('a port no host rule names', () => {
  it.each([
    ['admin.example.com:1'],
    ['admin.example.com:8444'],
    ['ADMIN.example.com:8080'],
    ['admin.example.com:80'], // over https 80 is not the default port
    ['x.corp.example.com:9443'],
  ])('%s does not escape the rules of its name', async (host) => {
    expect(await check(host.replace(/:\d+$/, ''), '/site/x')).toMatchObject({ allowed: false, status: 401 });
    expect(await check(host, '/site/x')).toMatchObject({ allowed: false, status: 401 });
    expect(await check(host, '/site/x', 'HEAD')).toMatchObject({ allowed: false, status: 401 });
  });

  it('leaves hosts without rules of their own alone', async () => {
    expect(await check('www.example.com:8080', '/site/x')).toMatchObject({ allowed: true, route: 'site' });
    expect(await check('[2001:db8::1]:8443', '/site/x')).toMatchObject({ allowed: true, route: 'site' });
    expect(await check('www.example.com:8080', '/other')).toMatchObject({ allowed: false, reason: 'missing_credential' }); // unmatched: default deny
  });

  it('keeps a port a rule names, and the default port, to their own rules', async () => {
    expect(await check('docs.example.com:8080', '/x')).toMatchObject({ allowed: true, route: 'docs-alt' });
    expect(await check('docs.example.com:8081', '/x')).toMatchObject({ allowed: false, status: 401 });
    expect(await check('admin.example.com:443', '/site/x')).toMatchObject({ allowed: false, status: 401, route: 'admin' });
    expect(await check('www.example.com:443', '/site/x')).toMatchObject({ allowed: true, route: 'site' });
  });

  it('a rule naming the port covers only what it matches: the rest of that port is judged by the name too (review)', async () => {
    expect(await check('docs.example.com:9090', '/status')).toMatchObject({ allowed: true, route: 'docs-status' });
    expect(await check('docs.example.com:9090', '/site/x')).toMatchObject({ allowed: false, status: 401 });
    // A wildcard naming the port does not outrank the exact name's rules (review).
    expect(await check('admin.example.com:8443', '/health')).toMatchObject({ allowed: false, status: 401 });
    expect(await check('x.example.com:8443', '/site/x')).toMatchObject({ allowed: true, route: 'site' });
    expect(await check('admin.example.com:8443', '/site/x')).toMatchObject({ allowed: false, status: 401 });
    expect(await check('admin.example.com:8443', '/site/x', 'HEAD')).toMatchObject({ allowed: false, status: 401 });
  });

  it('never gives a host identity to a host:port its domains do not name', async () => {
    expect(await check('shop.example.com', '/cart')).toMatchObject({ allowed: true, principal: { tenant: 'shop' } });
    expect(await check('shop.example.com:8443', '/cart')).toMatchObject({ allowed: false, status: 401 });
  });
});

describe('a request judged by two routes is charged once per counter (review)', () => {
  const limited = compileYaml(`
rateLimits:
  backend: memory
  policies:
    - { name: per-ip, key: [ip], window: 1m, limit: 4 }
    - { name: per-ip-route, key: [ip, route], window: 1m, limit: 3 }
routes:
  - { name: shop-site, match: { host: shop.example.com, pathPrefix: /site }, public: true }
  - { name: site, match: { pathPrefix: /site }, public: true }
  - { name: panel, match: { path: /panel/ }, public: true }
  - { name: rest, match: { pathPrefix: / }, public: true }
`);
  const outcomes = async (host: string, path: string, n: number, ip: string) => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const d = await Promise.resolve(authorize(limited, { ...request({ host, path, sourceAddress: ip }), scheme: 'https' }));
      out.push(d.allowed ? 'allow' : d.reason);
    }
    return out;
  };

  it('a port reading: the shared per-ip counter counts each request once; per-route counters each count it', async () => {
    // Two routes (site, shop-site): per-ip 4 allows, not 2; per-ip-route (3 per route) holds at 3.
    expect(await outcomes('shop.example.com:8443', '/site/x', 5, '192.0.2.1')).toEqual(['allow', 'allow', 'allow', 'rate_limited', 'rate_limited']);
    expect(await outcomes('shop.example.com', '/site/x', 4, '192.0.2.2')).toEqual(['allow', 'allow', 'allow', 'rate_limited']);
  });

  it('at the highest cost of the routes: a cheap route reached first does not dodge an expensive one\'s cost (review)', async () => {
    const costly = compileYaml(`
rateLimits:
  backend: memory
  policies:
    - { name: per-ip, key: [ip], window: 1m, limit: 20 }
routes:
  - { name: export, match: { host: api.example.com, path: /v1/export }, public: true, rateLimits: { cost: 10 } }
  - { name: rest, match: { pathPrefix: / }, public: true }
`);
    const run = async (host: string, path: string, ip: string) => {
      const out: string[] = [];
      for (let i = 0; i < 4; i++) {
        const d = await Promise.resolve(authorize(costly, { ...request({ host, path, sourceAddress: ip }), scheme: 'https' }));
        out.push(d.allowed ? 'allow' : d.reason);
      }
      return out;
    };
    const twice = ['allow', 'allow', 'rate_limited', 'rate_limited'];
    expect(await run('api.example.com', '/v1/export', '192.0.2.10')).toEqual(twice);
    expect(await run('api.example.com', '/v1/export/', '192.0.2.11')).toEqual(twice); // readings: rest (cost 1), export (10)
    expect(await run('api.example.com:8443', '/v1/export', '192.0.2.12')).toEqual(twice); // host readings
  });

  it('a path reading (trailing slash): the same', async () => {
    expect(await outcomes('www.example.com', '/panel', 5, '192.0.2.3')).toEqual(['allow', 'allow', 'allow', 'rate_limited', 'rate_limited']);
  });
});
