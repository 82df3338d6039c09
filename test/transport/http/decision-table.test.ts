// One decision table through both transports: gRPC ext_authz and each HTTP shape (Envoy
// http_service, nginx auth_request, Traefik/Caddy forward-auth) must give identical decisions,
// statuses, reasons, client headers and upstream headers — one authorize() pipeline, thin adapters.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { askGrpc, askShape, closeAgent, outcomeOfHttp, SHAPES, type OriginalInit, type Outcome } from '../../support/authz-http.js';
import { startTestServer, type TestServer } from '../../support/server.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const DEMO_KEY = /#\s+(pc_demo_\w+)/.exec(readFileSync(path.join(ROOT, 'examples/keys/quickstart.yaml'), 'utf8'))![1]!;
const SECRET = 'decision-table-secret-0123456789-abcdefgh';

const POLICY = `
realm: table
server: { authzHttp: { port: 0 } }
clientIp: { xffTrustedHops: 0 }
identity:
  - apiKey: { headers: [x-api-key], bearerPrefixes: [pc_demo_] }
  - jwt: { issuers: [local] }
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [storefront] } } }
issuers:
  local: { issuer: https://issuer.test/, audiences: [api], secret: "\${TABLE_JWT_SECRET}", claims: { tenant: tenant } }
keyStore: { type: file, file: { path: ${JSON.stringify(path.join(ROOT, 'examples/keys/quickstart.yaml'))} }, maxExpiry: 3650d }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: login, match: { path: /v1/login, methods: [POST] }, public: true }
  - { name: catalog, match: { pathPrefix: /v1/products, methods: [GET, HEAD] }, require: { anyOf: [storefront, "catalog:read"] } }
  - { name: admin, match: { pathPrefix: /v1/admin/ }, require: { allOf: [admin] } }
default: deny
rateLimits:
  backend: memory
  policies:
    - { name: per-ip, key: [ip, route], window: 60s, limit: 3 }
`;

let dir: string;
let running: TestServer;
let port: number;
const tokens: Record<string, string> = {};

async function token(claims: Record<string, unknown>, expiresIn: string | number = '5m'): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer('https://issuer.test/')
    .setAudience('api')
    .setSubject('user-1')
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(SECRET));
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'portcullis-table-'));
  writeFileSync(path.join(dir, 'policy.yaml'), POLICY);
  running = await startTestServer(path.join(dir, 'policy.yaml'), { TABLE_JWT_SECRET: SECRET });
  port = running.server.authzHttpPort!;
  tokens.reader = await token({ tenant: 'acme', scope: 'catalog:read' });
  tokens.expired = await token({ tenant: 'acme', scope: 'catalog:read' }, Math.floor(Date.now() / 1000) - 3600);
  tokens.latin1 = await token({ tenant: 'globéx', scope: 'catalog:read' });
  tokens.cjk = await token({ tenant: '日本', scope: 'catalog:read' });
});

afterAll(async () => {
  closeAgent();
  await running?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Rows of the table; `ip` makes each (transport, row) its own client for the per-IP limit. */
function rows(ip: (row: number) => string): [string, OriginalInit][] {
  const xff = (row: number) => ip(row);
  return [
    ['public route, smuggled identity header', { path: '/health', headers: { 'x-tenant-id': 'evil', 'x-auth-scopes': 'admin' }, xff: xff(1) }],
    ['no credential', { path: '/v1/products', xff: xff(2) }],
    ['API key header', { path: '/v1/admin/users', headers: { 'x-api-key': DEMO_KEY, 'x-tenant-id': 'evil' }, xff: xff(3) }],
    ['API key as Bearer', { path: '/v1/admin/users', headers: { authorization: `Bearer ${DEMO_KEY}` }, xff: xff(4) }],
    ['wrong API key', { path: '/v1/products', headers: { 'x-api-key': DEMO_KEY.slice(0, -1) + (DEMO_KEY.endsWith('a') ? 'b' : 'a') }, xff: xff(5) }],
    ['JWT with the scope', { path: '/v1/products/42?expand=1', headers: { authorization: `Bearer ${tokens.reader}` }, xff: xff(6) }],
    ['JWT without the scope', { path: '/v1/admin/users', headers: { authorization: `Bearer ${tokens.reader}` }, xff: xff(7) }],
    ['expired JWT', { path: '/v1/products', headers: { authorization: `Bearer ${tokens.expired}` }, xff: xff(8) }],
    ['JWT on a method the route does not take', { method: 'POST', path: '/v1/products', headers: { authorization: `Bearer ${tokens.reader}` }, xff: xff(9) }],
    ['storefront host, upper case and default port', { path: '/v1/products', host: 'SHOP.Example.com:443', xff: xff(10) }],
    ['storefront host on an admin route', { path: '/v1/admin/users', host: 'shop.example.com', xff: xff(11) }],
    ['two Authorization headers', { path: '/v1/products', headers: { authorization: [`Bearer ${tokens.reader}`, `Bearer ${DEMO_KEY}`] }, xff: xff(12) }],
    ['dot segments', { path: '/v1/products/../admin/users', headers: { authorization: `Bearer ${tokens.reader}` }, xff: xff(13) }],
    ['encoded slash', { path: '/v1/admin%2Fusers', headers: { 'x-api-key': DEMO_KEY }, xff: xff(14) }],
    ['http scheme', { path: '/v1/products', scheme: 'http', headers: { authorization: `Bearer ${tokens.reader}` }, xff: xff(15) }],
    ['host with a trailing dot', { path: '/v1/products', host: 'shop.example.com.', xff: xff(17) }],
    ['host with a non-default port', { path: '/v1/products', host: 'shop.example.com:8443', xff: xff(18) }],
    ['underscore variant of an owned header', { path: '/health', headers: { x_tenant_id: 'evil' }, xff: xff(19) }],
    ['"#" before the query', { path: '/health#/../v1/admin/users?x=1', headers: { 'x-api-key': DEMO_KEY }, xff: xff(20) }],
    ['HEAD', { method: 'HEAD', path: '/v1/products', headers: { authorization: `Bearer ${tokens.reader}` }, xff: xff(16) }],
    // Identity values travel as the same (UTF-8) bytes over every transport.
    ['tenant with a Latin-1 letter', { path: '/v1/products', headers: { authorization: `Bearer ${tokens.latin1}` }, xff: xff(21) }],
    ['tenant beyond Latin-1', { path: '/v1/products', headers: { authorization: `Bearer ${tokens.cjk}` }, xff: xff(22) }],
  ];
}

/** Retry-After and RateLimit values move with the clock: compare that they are there. */
function stable(o: Outcome): Outcome {
  const client: Record<string, string> = {};
  for (const [k, v] of Object.entries(o.client)) client[k] = k === 'content-type' || k === 'www-authenticate' ? v : 'present';
  return { ...o, client };
}

describe('one decision table through gRPC and every HTTP shape', () => {
  it('gives identical decisions, statuses, reasons and headers', async () => {
    const transports = ['grpc', ...SHAPES] as const;
    const results = new Map<string, Outcome[]>();
    for (const [t, transport] of transports.entries()) {
      const outcomes: Outcome[] = [];
      for (const [, init] of rows((row) => `203.0.${t}.${row}`)) {
        outcomes.push(stable(transport === 'grpc' ? await askGrpc(running.client, init) : outcomeOfHttp(transport, await askShape(port, transport, init))));
      }
      // The per-IP limit: three requests pass, the fourth is refused with Retry-After.
      for (let i = 0; i < 4; i++) {
        const init: OriginalInit = { method: 'POST', path: '/v1/login', xff: `203.0.${t}.200` };
        outcomes.push(stable(transport === 'grpc' ? await askGrpc(running.client, init) : outcomeOfHttp(transport, await askShape(port, transport, init))));
      }
      results.set(transport, outcomes);
    }
    const grpc = results.get('grpc')!;
    const names = [...rows(() => '0.0.0.0').map(([name]) => name), 'login 1', 'login 2', 'login 3', 'login 4 (limited)'];
    for (const shape of SHAPES) {
      const http = results.get(shape)!;
      for (let i = 0; i < grpc.length; i++) expect(http[i], `${shape}: ${names[i]}`).toEqual(grpc[i]);
    }
    // The table means something: spot-check what gRPC said.
    expect(grpc[20]).toMatchObject({ allowed: true, upstream: { 'x-tenant-id': 'globéx' } });
    expect(grpc[21]).toMatchObject({ allowed: true, upstream: { 'x-tenant-id': '日本' } });
    expect(grpc[0]).toMatchObject({ allowed: true });
    expect(grpc[0]!.removed).toContain('x-tenant-id');
    expect(grpc[1]).toMatchObject({ allowed: false, status: 401, reason: 'missing_credential', client: { 'www-authenticate': 'Bearer realm="table"' } });
    expect(grpc[2]).toMatchObject({ allowed: true, upstream: { 'x-tenant-id': 'acme', 'x-auth-method': 'api-key' } });
    expect(grpc[2]!.removed).toContain('x-api-key');
    expect(grpc[5]).toMatchObject({ allowed: true, upstream: { 'x-auth-method': 'jwt', 'x-tenant-id': 'acme' } });
    expect(grpc[6]).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    expect(grpc[7]).toMatchObject({ status: 401, reason: 'token_expired' });
    expect(grpc[9]).toMatchObject({ allowed: true, upstream: { 'x-auth-scopes': 'storefront' } });
    expect(grpc[11]).toMatchObject({ allowed: false, status: 401 });
    expect(grpc[12]).toMatchObject({ allowed: false, status: 400, reason: 'invalid_path' });
    expect(grpc[13]).toMatchObject({ allowed: false, status: 400, reason: 'invalid_path' });
    expect(grpc[15]).toMatchObject({ allowed: false, status: 400, reason: 'invalid_host' });
    expect(grpc[16]).toMatchObject({ allowed: false, status: 401, reason: 'missing_credential' });
    expect(grpc[17]!.removed).toContain('x_tenant_id');
    expect(grpc[18]).toMatchObject({ allowed: false, status: 400, reason: 'invalid_path' });
    expect(grpc.at(-2)).toMatchObject({ allowed: true });
    expect(grpc.at(-1)).toMatchObject({ allowed: false, status: 429, reason: 'rate_limited', client: { 'retry-after': 'present' } });
  });
});
