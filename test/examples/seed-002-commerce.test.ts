// Seed 002 (Commerce API) through examples/seed-002-commerce.yaml: caller resolution in priority
// order (agent JWT → x-api-key → session cookie → Host storefront), storefront/admin scopes,
// payment webhooks with a shared secret, and the {"error","code","status"} error body.
// The agents' JWKS is served locally (the issuer origin is substituted in the policy text).
// DATABASE_URL points at a fresh schema of the machine's PostgreSQL holding Better Auth's apikey
// and member tables and tenant_domains; BETTER_AUTH_URL at a local get-session endpoint (the real
// Better Auth runs in test/lookup/better-auth.test.ts with the same lookups).
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JWTPayload } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { sign, signingKey, type SigningKey } from '../jwt/helpers.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { headerOf, httpStatusNumber } from '../support/grpc-client.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { startTestServer } from '../support/server.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import {
  allowed,
  denied,
  check,
  denialHeader,
  readExample,
  startIdp,
  substitute,
  tempDir,
  TEST_ENV,
  upstream,
  type LocalIdp,
} from './helpers.js';

const ORIGIN = 'https://commerce.example.com';
const API_HOST = 'api.commerce.example';
const SCHEMA = `seed002_${randomBytes(6).toString('hex')}`;
const available = await postgresAvailable();
const SESSION = 'better-auth.session_token';

/** Better Auth's key hashing: SHA-256, base64url without padding. */
const hashKey = (key: string) => createHash('sha256').update(key).digest('base64url');

describe.skipIf(!available)('seed 002: examples/seed-002-commerce.yaml', () => {
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  const sessions = new Map<string, unknown>();
  const tmp = tempDir('pc-seed002-');
  let auth: Server;
  let runtime: ReturnType<typeof testRuntime>;
  let idp: LocalIdp;
  let agentKey: SigningKey;
  let policy: CompiledPolicy;
  let adminKey: { key: string; id: string };
  let storefrontKey: { key: string; id: string };
  let revokedKey: { key: string; id: string };
  let policyFile: string;
  let serverEnv: Record<string, string>;
  const now = () => Math.floor(runtime.clock.now() / 1000);

  const agentToken = (claims: JWTPayload = {}) =>
    sign(agentKey, {
      iss: `${idp.url}/api/auth`,
      aud: 'https://api.commerce.example.com',
      sub: 'agent_7QxK',
      org_id: 'org_initech',
      grants: ['products:read', 'cart:write', 'orders:place'],
      iat: now(),
      exp: now() + 300,
      ...claims,
    });

  /** A key as Better Auth's apiKey() plugin stores it (hash, metadata as JSON text). */
  async function betterAuthKey(name: string, metadata: unknown, options: { enabled?: boolean; expiresAt?: Date } = {}) {
    const key = `pk_${randomBytes(24).toString('base64url')}`;
    const id = `key_${name}_${randomBytes(4).toString('hex')}`;
    await admin.query(`insert into ${SCHEMA}.apikey (id, key, "referenceId", metadata, enabled, "expiresAt") values ($1, $2, $3, $4, $5, $6)`, [
      id,
      hashKey(key),
      'user_owner',
      JSON.stringify(metadata),
      options.enabled ?? true,
      options.expiresAt ?? null,
    ]);
    return { key, id };
  }

  beforeAll(async () => {
    agentKey = await signingKey('EdDSA', 'agents-1');
    idp = await startIdp([agentKey.publicJwk], ['/api/auth/jwks']);

    await admin.query(`create schema ${SCHEMA}`);
    await admin.query(`create table ${SCHEMA}.apikey (id text primary key, key text not null, "referenceId" text, metadata text, enabled boolean, "expiresAt" timestamptz)`);
    await admin.query(`create table ${SCHEMA}.member (id serial, "userId" text, "organizationId" text, "createdAt" timestamptz default now())`);
    await admin.query(`create table ${SCHEMA}.tenant_domains (domain text primary key, tenant text not null, scopes text[] default '{}')`);
    await admin.query(`insert into ${SCHEMA}.member ("userId", "organizationId", "createdAt") values ('user_alice', 'org_first', now() - interval '1 day'), ('user_alice', 'org_later', now())`);
    await admin.query(`insert into ${SCHEMA}.tenant_domains values ('shop.initech.example', 'org_initech', '{storefront,admin}')`);
    adminKey = await betterAuthKey('admin', { organizationId: 'org_acme', scopes: ['admin'] });
    storefrontKey = await betterAuthKey('storefront', { organizationId: 'org_globex', scopes: ['storefront'] });
    revokedKey = await betterAuthKey('revoked', { organizationId: 'org_acme', scopes: ['admin'] }, { enabled: false });

    // Better Auth's GET /api/auth/get-session: the session named by the cookie, or null.
    auth = createServer((req, res) => {
      const token = new RegExp(`${SESSION}=([^;]*)`).exec(req.headers.cookie ?? '')?.[1];
      const found = req.url === '/api/auth/get-session' && token !== undefined ? sessions.get(token) : undefined;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(found ?? null));
    });
    await new Promise<void>((resolve) => auth.listen(0, '127.0.0.1', resolve));
    sessions.set('tok_dashboard.sig', {
      session: { id: 's1', userId: 'user_bob', activeOrganizationId: 'org_acme', expiresAt: new Date(Date.now() + 86_400_000).toISOString() },
      user: { id: 'user_bob', email: 'bob@acme.example' },
    });

    const databaseUrl = `${DATABASE_URL}?options=${encodeURIComponent(`-c search_path=${SCHEMA}`)}`;
    serverEnv = { ...TEST_ENV, COMMERCE_DATABASE_URL: databaseUrl, BETTER_AUTH_URL: `http://127.0.0.1:${(auth.address() as AddressInfo).port}` };
    runtime = testRuntime({ env: serverEnv });
    let text = readExample('seed-002-commerce.yaml');
    text = substitute(text, ORIGIN, idp.url);
    policyFile = path.join(tmp.dir, 'seed-002-commerce.yaml');
    writeFileSync(policyFile, text);
    policy = compileYaml(text, runtime);
    await policy.ready;
  });

  afterAll(async () => {
    await runtime?.resources.closeAll();
    await idp?.close();
    auth?.closeAllConnections();
    await new Promise<void>((resolve) => (auth ? auth.close(() => resolve()) : resolve()));
    await admin.query(`drop schema if exists ${SCHEMA} cascade`);
    await admin.end();
    tmp.cleanup();
  });

  describe('caller resolution priority', () => {
    it('1. an agent JWT wins over an API key and a storefront host; grants become scopes', async () => {
      const decision = await check(policy, {
        host: 'shop.acme.example',
        path: '/v1/cart/items',
        method: 'POST',
        headers: { authorization: `Bearer ${await agentToken()}`, 'x-api-key': adminKey.key },
      });
      expect(upstream(decision)).toEqual({ 'x-tenant-id': 'org_initech', 'x-auth-subject': 'agent_7QxK', 'x-auth-scopes': 'storefront', 'x-auth-method': 'jwt' });
    });

    it('2. without a JWT, the x-api-key decides (over the Host header); the key is stripped upstream', async () => {
      const decision = allowed(await check(policy, { host: 'store.globex.example', path: '/v1/admin/products', method: 'POST', headers: { 'x-api-key': adminKey.key } }));
      expect(upstream(decision)).toEqual({
        'x-tenant-id': 'org_acme',
        'x-auth-subject': 'user_owner',
        'x-auth-scopes': 'admin',
        'x-auth-method': 'api-key',
        'x-auth-key-id': adminKey.id,
      });
      expect(decision.removeHeaders).toContain('x-api-key');
    });

    it('4. the Host header alone: the storefront tenant with the storefront scope only', async () => {
      const decision = allowed(await check(policy, { host: 'shop.acme.example', path: '/v1/products/', headers: { 'x-tenant-id': 'org_globex' } }));
      expect(upstream(decision)).toEqual({ 'x-tenant-id': 'org_acme', 'x-auth-subject': 'host:shop.acme.example', 'x-auth-scopes': 'storefront', 'x-auth-method': 'host' });
      // The storefront can place orders and manage its cart.
      expect(upstream(await check(policy, { host: 'store.globex.example', path: '/v1/orders/', method: 'POST' }))['x-tenant-id']).toBe('org_globex');
      expect(upstream(await check(policy, { host: 'acme.shops.commerce.example', path: '/v1/cart/c-1', method: 'DELETE' }))['x-tenant-id']).toBe('org_acme');
    });

    it('a storefront request can never reach an admin endpoint (403 insufficient_scope)', async () => {
      const decision = await check(policy, { host: 'shop.acme.example', path: '/v1/admin/products', method: 'POST' });
      expect(decision).toMatchObject({ allowed: false, status: 403, reason: 'insufficient_scope' });
      // @prood/types' error body, exactly: {"error":"Insufficient scope","code":"FORBIDDEN","status":403}
      expect(denied(decision).body).toBe('{"error":"Insufficient scope","code":"FORBIDDEN","status":403}');
      expect(denialHeader(decision, 'www-authenticate')).toBe('Bearer realm="commerce", error="insufficient_scope", scope="admin"');
    });

    it('no caller resolved: 401 with {"error":"Unauthorized","code":"UNAUTHORIZED","status":401}', async () => {
      const decision = await check(policy, { host: API_HOST, path: '/v1/products/' });
      expect(decision).toMatchObject({ allowed: false, status: 401, reason: 'missing_credential' });
      expect(denied(decision).body).toBe('{"error":"Unauthorized","code":"UNAUTHORIZED","status":401}');
      expect(denialHeader(decision, 'content-type')).toBe('application/json');
      expect(denialHeader(decision, 'www-authenticate')).toBe('Bearer realm="commerce"');
    });

    it('3. a Better Auth session cookie: the active organization with admin and storefront (over the Host header)', async () => {
      const cookie = { cookie: `theme=dark; ${SESSION}=tok_dashboard.sig` };
      const decision = allowed(await check(policy, { host: 'shop.acme.example', path: '/v1/admin/orders', headers: cookie }));
      expect(upstream(decision)).toEqual({ 'x-tenant-id': 'org_acme', 'x-auth-subject': 'user_bob', 'x-auth-email': 'bob@acme.example', 'x-auth-scopes': 'admin storefront', 'x-auth-method': 'session' });
      // An unknown or signed-out session is a 401: it never falls back to the storefront Host caller.
      const unknown = await check(policy, { host: 'shop.acme.example', path: '/v1/products/', headers: { cookie: `${SESSION}=abc.def` } });
      expect(unknown).toMatchObject({ status: 401, reason: 'session_invalid' });
    });

    it('4. hosts beyond the listed ones: {tenant}.shops.commerce.example and the tenant_domains table', async () => {
      expect(upstream(await check(policy, { host: 'umbrella.shops.commerce.example', path: '/v1/products/' }))).toMatchObject({ 'x-tenant-id': 'org_umbrella', 'x-auth-scopes': 'storefront' });
      // A domain from the table gets storefront only, whatever the row says.
      expect(upstream(await check(policy, { host: 'shop.initech.example', path: '/v1/products/' }))).toMatchObject({ 'x-tenant-id': 'org_initech', 'x-auth-scopes': 'storefront' });
      expect(await check(policy, { host: 'shop.initech.example', path: '/v1/admin/products' })).toMatchObject({ status: 403, reason: 'insufficient_scope' });
      expect(await check(policy, { host: 'unknown.example', path: '/v1/products/' })).toMatchObject({ status: 401, reason: 'missing_credential' });
    });

    it("1b. an agent token without org_id gets the user's first org membership", async () => {
      const decision = allowed(await check(policy, { host: API_HOST, path: '/v1/products/', headers: { authorization: `Bearer ${await agentToken({ org_id: undefined, sub: 'user_alice' })}` } }));
      expect(upstream(decision)['x-tenant-id']).toBe('org_first');
    });

    it('a bad credential is a 401; it never falls through to a weaker source', async () => {
      const unknown = await check(policy, { host: 'shop.acme.example', path: '/v1/products/', headers: { 'x-api-key': `${adminKey.key.slice(0, -1)}${adminKey.key.endsWith('x') ? 'y' : 'x'}` } });
      expect(unknown).toMatchObject({ status: 401, reason: 'invalid_api_key' });
      expect(denialHeader(unknown, 'www-authenticate')).toBe('Bearer realm="commerce", error="invalid_token"');
      const expiredAgent = await check(policy, { host: 'shop.acme.example', path: '/v1/products/', headers: { authorization: `Bearer ${await agentToken({ exp: now() - 60 })}` } });
      expect(expiredAgent).toMatchObject({ status: 401, reason: 'token_expired' });
      // A Bearer value that is not a JWT (e.g. an API key sent the wrong way) is refused outright.
      const keyAsBearer = await check(policy, { host: 'shop.acme.example', path: '/v1/products/', headers: { authorization: `Bearer ${adminKey.key}` } });
      expect(keyAsBearer).toMatchObject({ status: 401, reason: 'invalid_token' });
      expect(await check(policy, { host: API_HOST, path: '/v1/admin/products', headers: { 'x-api-key': revokedKey.key } })).toMatchObject({ status: 401, reason: 'invalid_api_key' });
    });
  });

  describe('scopes', () => {
    it('agents: storefront grants do not open admin endpoints, admin grants do', async () => {
      const storefront = await check(policy, { host: API_HOST, path: '/v1/admin/stats', headers: { authorization: `Bearer ${await agentToken()}` } });
      expect(storefront).toMatchObject({ status: 403, reason: 'insufficient_scope' });
      const admin = await check(policy, { host: API_HOST, path: '/v1/admin/stats', headers: { authorization: `Bearer ${await agentToken({ grants: ['stats:read', 'products:read'] })}` } });
      expect(upstream(admin)['x-auth-scopes']).toBe('admin storefront');
      const unknownGrant = await check(policy, { host: API_HOST, path: '/v1/products/', headers: { authorization: `Bearer ${await agentToken({ grants: ['everything'] })}` } });
      expect(unknownGrant).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    });

    it('an agent token without its organization and without a membership is refused (403 missing_tenant)', async () => {
      const decision = await check(policy, { host: API_HOST, path: '/v1/products/', headers: { authorization: `Bearer ${await agentToken({ org_id: undefined })}` } });
      expect(decision).toMatchObject({ status: 403, reason: 'missing_tenant' });
    });

    it('API keys carry their own scopes: a storefront key reads products but cannot administer', async () => {
      const read = await check(policy, { host: API_HOST, path: '/v1/products/p-1', headers: { 'x-api-key': storefrontKey.key } });
      expect(upstream(read)).toMatchObject({ 'x-tenant-id': 'org_globex', 'x-auth-scopes': 'storefront', 'x-auth-key-id': storefrontKey.id });
      expect(await check(policy, { host: API_HOST, path: '/v1/admin/products', method: 'POST', headers: { 'x-api-key': storefrontKey.key } })).toMatchObject({
        status: 403,
        reason: 'insufficient_scope',
      });
    });
  });

  describe('payment webhooks: POST /v1/webhooks/payments/{provider}?org={orgId} with x-checkout-secret', () => {
    const webhook = (headers: Record<string, string>, provider = 'stripe') => ({ host: API_HOST, method: 'POST', path: `/v1/webhooks/payments/${provider}`, query: 'org=org_acme', headers });

    it('the right secret is accepted for the organization named in ?org= (x-tenant-id); the secret does not go upstream', async () => {
      const decision = allowed(await check(policy, webhook({ 'x-checkout-secret': TEST_ENV.CHECKOUT_API_SECRET, 'x-tenant-id': 'org_globex' })));
      expect(upstream(decision)).toEqual({ 'x-tenant-id': 'org_acme', 'x-auth-subject': 'checkout-app', 'x-auth-scopes': 'webhooks:payments', 'x-auth-method': 'shared-secret' });
      expect(decision.removeHeaders).toContain('x-checkout-secret'); // x-tenant-id is overwritten (set upstream), not removed
      expect(decision.route).toBe('payment-webhooks');
      allowed(await check(policy, webhook({ 'x-checkout-secret': TEST_ENV.CHECKOUT_API_SECRET }, 'mollie')));
    });

    it('a wrong secret is 401; no secret is 401 even with an API key or a JWT (only the secret counts here)', async () => {
      expect(await check(policy, webhook({ 'x-checkout-secret': 'guess-guess-guess-guess' }))).toMatchObject({ status: 401, reason: 'invalid_shared_secret' });
      expect(await check(policy, webhook({ 'x-api-key': adminKey.key }))).toMatchObject({ status: 401, reason: 'missing_credential' });
      expect(await check(policy, webhook({ authorization: `Bearer ${await agentToken({ grants: ['orders:manage'] })}` }))).toMatchObject({
        status: 401,
        reason: 'missing_credential',
      });
    });

    it('the tenant comes from ?org= only: without it 400, with a malformed org id 400, never the client\'s x-tenant-id', async () => {
      const secret = { 'x-checkout-secret': TEST_ENV.CHECKOUT_API_SECRET, 'x-tenant-id': 'org_globex' };
      const globex = allowed(await check(policy, { ...webhook(secret), query: 'org=org_globex&org=org_acme' }));
      expect(upstream(globex)['x-tenant-id']).toBe('org_globex'); // a repeated key: its first value
      expect(await check(policy, { ...webhook(secret), query: '' })).toMatchObject({ status: 400, code: 'BAD_REQUEST', reason: 'missing_query_parameter' });
      expect(await check(policy, { ...webhook(secret), query: 'org=' })).toMatchObject({ status: 400, reason: 'invalid_query_parameter' });
      expect(await check(policy, { ...webhook(secret), query: 'org=org%0d%0ax-evil' })).toMatchObject({ status: 400, reason: 'invalid_query_parameter' });
      expect(await check(policy, { ...webhook(secret), query: 'org=a%20b' })).toMatchObject({ status: 400, reason: 'invalid_query_parameter' });
    });

    it('over the real gRPC server, both header encodings: the webhook acts for ?org=, never for a smuggled x-tenant-id', async () => {
      const server = await startTestServer(policyFile, serverEnv);
      try {
        for (const raw of [false, true]) {
          const headers = { 'x-checkout-secret': TEST_ENV.CHECKOUT_API_SECRET, 'x-tenant-id': 'org_globex' };
          const ok = await server.client.check({ host: API_HOST, method: 'POST', path: '/v1/webhooks/payments/stripe?org=org_acme', headers, raw });
          expect(ok.status?.code ?? 0, `raw=${raw}`).toBe(0);
          expect(headerOf(ok.ok_response?.headers, 'x-tenant-id')).toBe('org_acme');
          expect(headerOf(ok.ok_response?.headers, 'x-auth-method')).toBe('shared-secret');
          expect(ok.ok_response?.headers_to_remove).toContain('x-checkout-secret');
          const missing = await server.client.check({ host: API_HOST, method: 'POST', path: '/v1/webhooks/payments/stripe', headers, raw });
          expect(httpStatusNumber(missing.denied_response?.status?.code)).toBe(400);
          expect(missing.status?.code).toBe(3);
          expect(JSON.parse(missing.denied_response!.body!)).toEqual({ error: 'Bad Request', code: 'BAD_REQUEST', status: 400 });
          expect(missing.status?.message).toBe('missing_query_parameter');
          const wrong = await server.client.check({ host: API_HOST, method: 'POST', path: '/v1/webhooks/payments/stripe?org=org_acme', headers: { 'x-checkout-secret': 'guess-guess-guess-guess' }, raw });
          expect(httpStatusNumber(wrong.denied_response?.status?.code)).toBe(401);
        }
      } finally {
        await server.close();
      }
    });

    it('the secret opens nothing else', async () => {
      const elsewhere = await check(policy, { host: API_HOST, path: '/v1/admin/orders', headers: { 'x-checkout-secret': TEST_ENV.CHECKOUT_API_SECRET } });
      expect(elsewhere).toMatchObject({ status: 401, reason: 'missing_credential' });
    });
  });

  it('agent discovery is public', async () => {
    allowed(await check(policy, { host: API_HOST, path: '/.well-known/agent-configuration' }));
  });
});
