// Review of issue 13 §1's class ("the judged request is the served request"), for the method:
// Express, Spring, Tomcat's HttpServlet, Flask and Django serve HEAD with the GET handler (the
// handler runs; only the body is dropped). A rule written `methods: [GET]` did not match HEAD, so
// HEAD fell through to a weaker route — e.g. a public catch-all — and the upstream ran the
// protected GET handler. A HEAD request is now judged by the route a GET of the same path reaches
// as well; where the two differ, both must allow.
import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import { request } from '../support/request.js';
import { compileYaml } from '../support/runtime.js';

const SECRET = 'reader-secret-long-enough-1234';
const policy = compileYaml(`
identity:
  - sharedSecret: { header: x-secret, secret: "${SECRET}", tenant: t, scopes: [read] }
routes:
  - { name: items-read, match: { pathPrefix: /v1/items, methods: [GET] }, require: { anyOf: [read] } }
  - { name: orders-read, match: { path: "/v1/orders/{id}", methods: [GET, POST] }, require: { anyOf: [read] } }
  - { name: probe, match: { path: /v1/status, methods: [HEAD] }, public: true }
  - { name: status, match: { path: /v1/status, methods: [GET] }, require: { anyOf: [read] } }
  - { name: public-get, match: { path: /v1/catalog, methods: [GET] }, public: true }
  - { name: rest, match: { pathPrefix: / }, public: true }
`);

const check = (method: string, path: string, headers: Record<string, string> = {}) => authorize(policy, request({ method, path, headers }));

describe('HEAD is judged as the GET the upstream serves', () => {
  it.each([
    ['/v1/items/1', 'items-read'],
    ['/v1/items', 'items-read'],
    ['/v1/orders/7', 'orders-read'],
    ['/v1/Items/1', 'items-read'], // with the case readings too
    ['/v1/items/1/', 'items-read'], // and the trailing-slash reading
  ])('HEAD %s without credential → 401 from %s', async (path, route) => {
    expect(await check('HEAD', path)).toMatchObject({ allowed: false, status: 401, reason: 'missing_credential', route });
    expect(await check('HEAD', path, { 'x-secret': SECRET })).toMatchObject({ allowed: true });
  });

  it('a route written for HEAD is still judged, and the GET route too', async () => {
    expect(await check('HEAD', '/v1/status')).toMatchObject({ allowed: false, status: 401, route: 'status' });
    expect(await check('HEAD', '/v1/status', { 'x-secret': SECRET })).toMatchObject({ allowed: true });
  });

  it('nothing changes where HEAD and GET reach the same route, or for other methods', async () => {
    expect(await check('HEAD', '/v1/catalog')).toMatchObject({ allowed: true, route: 'public-get' });
    expect(await check('HEAD', '/anything')).toMatchObject({ allowed: true, route: 'rest' });
    expect(await check('GET', '/v1/items/1')).toMatchObject({ allowed: false, status: 401, route: 'items-read' });
    expect(await check('DELETE', '/v1/items/1')).toMatchObject({ allowed: true, route: 'rest' });
  });
});
