// Seed 002 (Commerce API) through examples/seed-002-commerce.yaml: caller resolution in priority
// order (agent JWT → x-api-key → [session: not handled] → Host storefront), storefront/admin
// scopes, payment webhooks with a shared secret, and the {"error","code","status"} error body.
// The agents' JWKS is served locally (the issuer origin is substituted in the policy text); the
// key file is a temporary copy of examples/keys/commerce.yaml with keys minted by the CLI.
import type { JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { sign, signingKey, type SigningKey } from '../jwt/helpers.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { headerOf, httpStatusNumber } from '../support/grpc-client.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { startTestServer } from '../support/server.js';
import {
  allowed,
  denied,
  check,
  cli,
  copyKeyFile,
  createKey,
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

describe('seed 002: examples/seed-002-commerce.yaml', () => {
  const runtime = testRuntime({ env: { ...TEST_ENV } });
  const tmp = tempDir('pc-seed002-');
  let idp: LocalIdp;
  let agentKey: SigningKey;
  let policy: CompiledPolicy;
  let adminKey: { key: string; id: string };
  let storefrontKey: { key: string; id: string };
  let revokedKey: { key: string; id: string };
  let policyFile: string;
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

  beforeAll(async () => {
    agentKey = await signingKey('EdDSA', 'agents-1');
    idp = await startIdp([agentKey.publicJwk], ['/api/auth/jwks']);

    const keyFile = copyKeyFile('commerce.yaml', tmp.dir);
    const store = `file:${keyFile}`;
    adminKey = await createKey(['--store', store, '--tenant', 'org_acme', '--name', 'Integration key', '--scopes', 'admin', '--expires-in', '365d', '--prefix', 'pk_']);
    storefrontKey = await createKey(['--store', store, '--tenant', 'org_globex', '--name', 'Catalog sync', '--scopes', 'storefront', '--expires-in', '30d', '--prefix', 'pk_']);
    revokedKey = await createKey(['--store', store, '--tenant', 'org_acme', '--name', 'Leaked key', '--scopes', 'admin', '--expires-in', '30d', '--prefix', 'pk_']);
    expect((await cli(['keys', 'revoke', revokedKey.id, '--store', store])).code).toBe(0);

    let text = readExample('seed-002-commerce.yaml');
    text = substitute(text, ORIGIN, idp.url);
    text = substitute(text, 'path: keys/commerce.yaml', `path: ${keyFile}`);
    policyFile = path.join(tmp.dir, 'seed-002-commerce.yaml');
    writeFileSync(policyFile, text);
    policy = compileYaml(text, runtime);
    await policy.ready;
  });

  afterAll(async () => {
    await runtime.resources.closeAll();
    await idp.close();
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
        'x-auth-subject': 'Integration key',
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

    it('3. a Better Auth session cookie is not a credential for Portcullis (see the example comment)', async () => {
      const cookie = { cookie: 'better-auth.session_token=abc.def' };
      expect(await check(policy, { host: API_HOST, path: '/v1/admin/products', headers: cookie })).toMatchObject({ status: 401, reason: 'missing_credential' });
      // On a storefront host the request falls back to the Host caller: storefront scope only.
      expect(await check(policy, { host: 'shop.acme.example', path: '/v1/admin/orders', headers: cookie })).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    });

    it('a bad credential is a 401; it never falls through to a weaker source', async () => {
      const unknown = await check(policy, { host: 'shop.acme.example', path: '/v1/products/', headers: { 'x-api-key': `${adminKey.key.slice(0, -1)}x` } });
      expect(unknown).toMatchObject({ status: 401, reason: 'invalid_api_key' });
      expect(denialHeader(unknown, 'www-authenticate')).toBe('Bearer realm="commerce", error="invalid_token"');
      const expiredAgent = await check(policy, { host: 'shop.acme.example', path: '/v1/products/', headers: { authorization: `Bearer ${await agentToken({ exp: now() - 60 })}` } });
      expect(expiredAgent).toMatchObject({ status: 401, reason: 'token_expired' });
      // A Bearer value that is not a JWT (e.g. an API key sent the wrong way) is refused outright.
      const keyAsBearer = await check(policy, { host: 'shop.acme.example', path: '/v1/products/', headers: { authorization: `Bearer ${adminKey.key}` } });
      expect(keyAsBearer).toMatchObject({ status: 401, reason: 'invalid_token' });
      expect(await check(policy, { host: API_HOST, path: '/v1/admin/products', headers: { 'x-api-key': revokedKey.key } })).toMatchObject({ status: 401, reason: 'key_revoked' });
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

    it('an agent token without its organization is refused (403 missing_tenant)', async () => {
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
      const server = await startTestServer(policyFile, { ...TEST_ENV });
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
