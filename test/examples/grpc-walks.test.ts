// Every seed, end to end through the real gRPC server (test/support/server.ts: the real Portcullis
// in-process, a grpc-js client built from proto/): each authentication, authorization and rate-limit
// sentence of the seed as one or more Check calls against the example policy, asserting the HTTP
// status, the reason (gRPC status message), the identity headers and the body the client sees.
// examples/README.md maps each sentence to its policy lines and to the walk step here ("Wn.m").
// Local stand-ins only: identity providers and JWKS on 127.0.0.1, key and ban files in a temporary
// directory (paths and URLs substituted in the policy text; nothing else changes).

import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import path from 'node:path';
import { SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sign, signingKey, type SigningKey } from '../jwt/helpers.js';
import { headerOf, httpStatusNumber, type CheckInit, type CheckResponse } from '../support/grpc-client.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { cookieHeader, supabaseSessionCookies } from '../support/supabase.js';
import { cli, copyKeyFile, createKey, readExample, startIdp, substitute, tempDir, TEST_ENV, type LocalIdp } from './helpers.js';

const tmp = tempDir('pc-walks-');
afterAll(() => tmp.cleanup());

interface Seen {
  /** 200 for an allow, else the denial's HTTP status. */
  readonly status: number;
  /** The denial reason (gRPC status message); '' on allow. */
  readonly reason: string;
  readonly body: string;
  readonly upstream: Record<string, string>;
  readonly response: CheckResponse;
}

async function walk(server: TestServer, init: CheckInit): Promise<Seen> {
  const response = await server.client.check(init);
  if (response.http_response === 'ok_response') {
    const upstream = Object.fromEntries((response.ok_response?.headers ?? []).map((h) => [h.header.key, h.header.value ?? '']));
    return { status: 200, reason: '', body: '', upstream, response };
  }
  const denied = response.denied_response!;
  return { status: httpStatusNumber(denied.status?.code), reason: response.status?.message ?? '', body: denied.body ?? '', upstream: {}, response };
}

function writePolicy(name: string, text: string): string {
  const file = path.join(tmp.dir, name);
  writeFileSync(file, text);
  return file;
}

describe('W0 seed 000 (Atrope) over gRPC', () => {
  const NS = 'https://atrope.dev/claims/';
  let idp: LocalIdp;
  let key: SigningKey;
  let server: TestServer;
  let dev: TestServer;
  const token = (claims: JWTPayload = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return sign(key, { iss: `${idp.url}/`, aud: 'https://api.atrope.dev', sub: 'auth0|u1', [`${NS}tenant_id`]: 'tenant-a', [`${NS}permissions`]: ['inventory:read'], iat: now, exp: now + 600, ...claims });
  };
  beforeAll(async () => {
    key = await signingKey('RS256', 'atrope-walk');
    idp = await startIdp([key.publicJwk]);
    server = await startTestServer(writePolicy('seed-000.yaml', substitute(readExample('seed-000-atrope.yaml'), 'https://atrope.eu.auth0.com/', `${idp.url}/`)));
    dev = await startTestServer(path.join(path.dirname(new URL(import.meta.url).pathname), '../../examples/seed-000-atrope-dev.yaml'));
  });
  afterAll(async () => {
    await server?.close();
    await dev?.close();
    await idp?.close();
  });

  it('W0.1 Auth0 RS256 token with namespaced tenant and permissions; W0.2 one permission per endpoint; W0.3 no tenant → 403; W0.4 dev mode', async () => {
    const ok = await walk(server, { path: '/v1/balances/wh-1', headers: { authorization: `Bearer ${await token()}`, 'x-tenant-id': 'evil' } });
    expect([ok.status, ok.upstream['x-tenant-id'], ok.upstream['x-auth-scopes']]).toEqual([200, 'tenant-a', 'inventory:read']);
    expect(await walk(server, { path: '/v1/items/x', method: 'POST', headers: { authorization: `Bearer ${await token()}` } })).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    expect(await walk(server, { path: '/v1/balances/x', headers: { authorization: `Bearer ${await token({ [`${NS}tenant_id`]: undefined })}` } })).toMatchObject({ status: 403, reason: 'missing_tenant' });
    expect(await walk(server, { path: '/v1/balances/x' })).toMatchObject({ status: 401, reason: 'missing_credential' });
    expect(await walk(server, { path: '/v1/balances/x', headers: { authorization: `Bearer ${await token({ exp: Math.floor(Date.now() / 1000) - 120 })}` } })).toMatchObject({ status: 401, reason: 'token_expired' });
    const devOk = await walk(dev, { path: '/v1/sales-orders/1', method: 'POST' });
    expect([devOk.status, devOk.upstream['x-tenant-id'], devOk.upstream['x-auth-method']]).toEqual([200, '00000000-0000-4000-8000-000000000001', 'dev']);
  });
});

describe('W1 seed 001 (KtrlPlane) over gRPC', () => {
  let idp: LocalIdp;
  let key: SigningKey;
  let server: TestServer;
  const token = (claims: JWTPayload = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return sign(key, { iss: `${idp.url}/`, aud: 'https://api.ktrlplane.konnektr.io', sub: 'google-oauth2|1', email: 'ada@konnektr.io', scope: 'openid access:platform', iat: now, exp: now + 600, ...claims });
  };
  beforeAll(async () => {
    key = await signingKey('RS256', 'ktrl-walk');
    idp = await startIdp([key.publicJwk]);
    server = await startTestServer(writePolicy('seed-001.yaml', substitute(readExample('seed-001-ktrlplane.yaml'), 'https://ktrlplane.eu.auth0.com/', `${idp.url}/`)));
  });
  afterAll(async () => {
    await server?.close();
    await idp?.close();
  });

  it('W1.1 JWKS signature, expiry, audience; W1.2 subject and email upstream; W1.3 401 missing/invalid; W1.4 403 without access:platform', async () => {
    const ok = await walk(server, { path: '/api/v1/projects', headers: { authorization: `Bearer ${await token()}` } });
    expect([ok.status, ok.upstream['x-auth-subject'], ok.upstream['x-auth-email']]).toEqual([200, 'google-oauth2|1', 'ada@konnektr.io']);
    expect(await walk(server, { path: '/api/v1/projects' })).toMatchObject({ status: 401, reason: 'missing_credential' });
    expect(await walk(server, { path: '/api/v1/projects', headers: { authorization: `Bearer ${await token({ aud: 'https://other.api' })}` } })).toMatchObject({ status: 401, reason: 'invalid_audience' });
    expect(await walk(server, { path: '/api/v1/projects', headers: { authorization: `Bearer ${await token({ exp: Math.floor(Date.now() / 1000) - 120 })}` } })).toMatchObject({ status: 401, reason: 'token_expired' });
    const other = await signingKey('RS256', 'ktrl-walk');
    const forged = await sign(other, { iss: `${idp.url}/`, aud: 'https://api.ktrlplane.konnektr.io', sub: 'x', exp: Math.floor(Date.now() / 1000) + 60 });
    expect(await walk(server, { path: '/api/v1/projects', headers: { authorization: `Bearer ${forged}` } })).toMatchObject({ status: 401, reason: 'invalid_signature' });
    expect(await walk(server, { path: '/api/v1/projects', headers: { authorization: `Bearer ${await token({ scope: 'openid' })}` } })).toMatchObject({ status: 403, reason: 'insufficient_scope' });
  });
});

describe.skipIf(!(await postgresAvailable()))('W2 seed 002 (Commerce) over gRPC', () => {
  const SCHEMA = `walk002_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  let idp: LocalIdp;
  let agentKey: SigningKey;
  let server: TestServer;
  let auth: Server;
  let adminKey: string;
  const agentToken = (claims: JWTPayload = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return sign(agentKey, { iss: `${idp.url}/api/auth`, aud: 'https://api.commerce.example.com', sub: 'agent_1', org_id: 'org_initech', grants: ['products:read'], iat: now, exp: now + 300, ...claims });
  };
  beforeAll(async () => {
    agentKey = await signingKey('EdDSA', 'agents-walk');
    idp = await startIdp([agentKey.publicJwk], ['/api/auth/jwks']);
    // Better Auth's tables (apiKey() plugin, organizations) and its get-session endpoint, as the seed 002 test builds them.
    await admin.query(`create schema ${SCHEMA}`);
    await admin.query(`create table ${SCHEMA}.apikey (id text primary key, key text not null, "referenceId" text, metadata text, enabled boolean, "expiresAt" timestamptz)`);
    await admin.query(`create table ${SCHEMA}.member (id serial, "userId" text, "organizationId" text, "createdAt" timestamptz default now())`);
    await admin.query(`create table ${SCHEMA}.tenant_domains (domain text primary key, tenant text not null, scopes text[] default '{}')`);
    adminKey = `pk_${randomBytes(24).toString('base64url')}`;
    await admin.query(`insert into ${SCHEMA}.apikey values ($1, $2, 'user_owner', $3, true, null)`, ['key_admin', createHash('sha256').update(adminKey).digest('base64url'), JSON.stringify({ organizationId: 'org_acme', scopes: ['admin'] })]);
    auth = createServer((req, res) => {
      const signedIn = /better-auth\.session_token=tok_dash\.sig/.test(req.headers.cookie ?? '');
      const session = { session: { id: 's1', userId: 'user_bob', activeOrganizationId: 'org_acme', expiresAt: new Date(Date.now() + 86_400_000).toISOString() }, user: { id: 'user_bob', email: 'bob@acme.example' } };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(req.url === '/api/auth/get-session' && signedIn ? session : null));
    });
    await new Promise<void>((resolve) => auth.listen(0, '127.0.0.1', resolve));
    const env = {
      ...TEST_ENV,
      COMMERCE_DATABASE_URL: `${DATABASE_URL}?options=${encodeURIComponent(`-c search_path=${SCHEMA}`)}`,
      BETTER_AUTH_URL: `http://127.0.0.1:${(auth.address() as AddressInfo).port}`,
    };
    server = await startTestServer(writePolicy('seed-002.yaml', substitute(readExample('seed-002-commerce.yaml'), 'https://commerce.example.com', idp.url)), env);
  });
  afterAll(async () => {
    await server?.close();
    await idp?.close();
    auth?.closeAllConnections();
    await new Promise<void>((resolve) => (auth ? auth.close(() => resolve()) : resolve()));
    await admin.query(`drop schema if exists ${SCHEMA} cascade`);
    await admin.end();
  });

  it('W2.1 priority agent JWT > API key > session > Host; W2.2 storefront vs admin scopes; W2.3 webhooks by shared secret; W2.4 401 when nothing resolves; W2.5 the API\'s error bodies', async () => {
    const host = 'shop.acme.example';
    const agent = await walk(server, { host, path: '/v1/products/', headers: { authorization: `Bearer ${await agentToken()}`, 'x-api-key': adminKey } });
    expect([agent.status, agent.upstream['x-auth-method'], agent.upstream['x-tenant-id']]).toEqual([200, 'jwt', 'org_initech']);
    const key = await walk(server, { host, path: '/v1/admin/products', method: 'POST', headers: { 'x-api-key': adminKey, cookie: 'better-auth.session_token=tok_dash.sig' } });
    expect([key.status, key.upstream['x-auth-method'], key.upstream['x-tenant-id']]).toEqual([200, 'api-key', 'org_acme']);
    expect(key.response.ok_response?.headers_to_remove).toContain('x-api-key');
    const session = await walk(server, { host, path: '/v1/admin/orders', headers: { cookie: 'better-auth.session_token=tok_dash.sig' } });
    expect([session.status, session.upstream['x-tenant-id'], session.upstream['x-auth-scopes']]).toEqual([200, 'org_acme', 'admin storefront']);
    const store = await walk(server, { host, path: '/v1/cart/c1', method: 'POST' });
    expect([store.status, store.upstream['x-auth-method'], store.upstream['x-auth-scopes']]).toEqual([200, 'host', 'storefront']);
    const adminDenied = await walk(server, { host, path: '/v1/admin/orders' });
    expect([adminDenied.status, adminDenied.reason, adminDenied.body]).toEqual([403, 'insufficient_scope', '{"error":"Insufficient scope","code":"FORBIDDEN","status":403}']);
    const none = await walk(server, { host: 'api.commerce.example', path: '/v1/products/' });
    expect([none.status, none.reason, none.body]).toEqual([401, 'missing_credential', '{"error":"Unauthorized","code":"UNAUTHORIZED","status":401}']);
    const hook = await walk(server, { host: 'api.commerce.example', method: 'POST', path: '/v1/webhooks/payments/stripe?org=org_acme', headers: { 'x-checkout-secret': TEST_ENV.CHECKOUT_API_SECRET } });
    expect([hook.status, hook.upstream['x-auth-method'], hook.upstream['x-tenant-id']]).toEqual([200, 'shared-secret', 'org_acme']);
    expect(await walk(server, { host: 'api.commerce.example', method: 'POST', path: '/v1/webhooks/payments/stripe?org=org_acme', headers: { 'x-checkout-secret': 'not-the-secret-at-all' } })).toMatchObject({ status: 401, reason: 'invalid_shared_secret' });
  });
});

describe('W3 seed 003 (Flotac) over gRPC', () => {
  const REF = 'chwjbbvcqsxxgaytqlix';
  const ACME = '3f6c2a8e-7b1d-4e55-9c0a-1d2e3f4a5b6c';
  let server: TestServer;
  let liveKey: { key: string; id: string };
  const jwt = (claims: JWTPayload = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: `https://${REF}.supabase.co/auth/v1`, aud: 'authenticated', sub: 'u-1', role: 'authenticated', user_metadata: { company_id: ACME }, iat: now, exp: now + 3600, ...claims })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .sign(new TextEncoder().encode(TEST_ENV.SUPABASE_JWT_SECRET));
  };
  beforeAll(async () => {
    const keyFile = copyKeyFile('flotac.yaml', tmp.dir);
    liveKey = await createKey(['--store', `file:${keyFile}`, '--tenant', ACME, '--name', 'erp', '--scopes', 'customers:read,api:read', '--expires-in', '30d', '--prefix', 'flotac_api_key_live_']);
    server = await startTestServer(writePolicy('seed-003.yaml', substitute(readExample('seed-003-flotac.yaml'), 'path: keys/flotac.yaml', `path: ${keyFile}`)), { ...TEST_ENV });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('W3.1 Supabase JWT (Bearer or @supabase/ssr cookie), company from user_metadata; W3.2 flotac_api_key_… as Bearer; W3.3 / and /health public; W3.4 403 without a company; W3.5 HTTPS only', async () => {
    const bearer = await walk(server, { path: '/api/v1/customers/c1', headers: { authorization: `Bearer ${await jwt()}` } });
    expect([bearer.status, bearer.upstream['x-tenant-id'], bearer.upstream['x-auth-method']]).toEqual([200, ACME, 'jwt']);
    const cookies = await supabaseSessionCookies(REF, await jwt(), { metadata: { company_id: ACME, bio: 'x'.repeat(6_000) } });
    const cookie = await walk(server, { path: '/api/v1/customers/c1', headers: { cookie: cookieHeader(cookies) } });
    expect([cookie.status, cookie.upstream['x-tenant-id']]).toEqual([200, ACME]);
    const key = await walk(server, { path: '/api/v1/customers/c1', headers: { authorization: `Bearer ${liveKey.key}` } });
    expect([key.status, key.upstream['x-auth-method'], key.upstream['x-tenant-id']]).toEqual([200, 'api-key', ACME]);
    expect(await walk(server, { path: '/api/v1/customers/c1', method: 'POST', headers: { authorization: `Bearer ${liveKey.key}` } })).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    expect(await walk(server, { path: '/api/v1/customers/c1', headers: { authorization: `Bearer flotac_api_key_live_${createHash('sha256').update('unknown').digest('hex')}` } })).toMatchObject({ status: 401, reason: 'invalid_api_key' });
    for (const p of ['/', '/health']) expect((await walk(server, { path: p })).status).toBe(200);
    expect(await walk(server, { path: '/api/v1/customers/c1' })).toMatchObject({ status: 401, reason: 'missing_credential' });
    expect(await walk(server, { path: '/api/v1/customers/c1', headers: { authorization: `Bearer ${await jwt({ user_metadata: {} })}` } })).toMatchObject({ status: 403, reason: 'missing_tenant' });
    expect(await walk(server, { path: '/api/v1/customers/c1', scheme: 'http', headers: { authorization: `Bearer ${await jwt()}` } })).toMatchObject({ status: 403 });
  });

  it('W3.6 100/min per company with bursts of 200, then 429 with Retry-After', async () => {
    const token = await jwt({ user_metadata: { company_id: 'burst-co' } });
    // The burst of 200 passes; the bucket refills at 100/min meanwhile (real time here), so the first
    // 429 comes a few requests later, never before the 201st.
    let allowed = 0;
    let limited: Seen | undefined;
    while (limited === undefined && allowed < 260) {
      const seen = await walk(server, { path: '/api/v1/customers/c1', headers: { authorization: `Bearer ${token}` } });
      if (seen.status === 200) allowed++;
      else limited = seen;
    }
    expect(allowed).toBeGreaterThanOrEqual(200);
    expect(limited).toMatchObject({ status: 429, reason: 'rate_limited' });
    // Another company has its own budget.
    expect((await walk(server, { path: '/api/v1/customers/c1', headers: { authorization: `Bearer ${await jwt()}` } })).status).toBe(200);
    expect(Number(headerOf(limited!.response.denied_response?.headers, 'retry-after'))).toBeGreaterThan(0);
  });
});

describe('W4 seed 004 (Tronexus) over gRPC', () => {
  const MY_APP = '43d8b05c-2eaf-4077-9ee1-3602ba8901de';
  let server: TestServer;
  let policyFile: string;
  let adminKey: { key: string; id: string };
  const env = { ...TEST_ENV, RATE_LIMIT_WINDOW: '1s', RATE_LIMIT_REQUESTS: '2', RATE_LIMIT_LOCKOUT_AFTER: '1', RATE_LIMIT_LOCKOUT_DURATION: '1s' };
  const token = (claims: JWTPayload = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ sub: 'user-1', app_id: MY_APP, roles: ['admin'], iat: now, exp: now + 900, ...claims })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode(TEST_ENV.TRONEXUS_JWT_SECRET));
  };
  // As Envoy sends it: the load balancer's x-forwarded-for plus the peer Envoy appended.
  const from = (ip: string, headers: Record<string, string> = {}) => ({ sourceAddress: '10.0.0.2', headers: { 'x-forwarded-for': `${ip}, 10.0.0.2`, ...headers } });
  beforeAll(async () => {
    const keyFile = copyKeyFile('tronexus.yaml', tmp.dir);
    let text = substitute(readExample('seed-004-tronexus.yaml'), 'path: keys/tronexus.yaml', `path: ${keyFile}`);
    text = substitute(text, '/var/lib/portcullis/tronexus-bans.json', path.join(tmp.dir, 'tronexus-bans.json'));
    policyFile = writePolicy('seed-004.yaml', text);
    adminKey = await createKey(['--config', policyFile, '--tenant', MY_APP, '--name', 'admin', '--scopes', 'admin', '--expires-in', '30d'], env);
    server = await startTestServer(policyFile, env);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('W4.1 HS256 access tokens, roles per app; W4.2 admin endpoints take admin API keys only; W4.3 /health public; W4.4 FastAPI bodies', async () => {
    const me = await walk(server, { path: '/auth/me', ...from('192.0.2.1', { authorization: `Bearer ${await token()}` }) });
    expect([me.status, me.upstream['x-tenant-id'], me.upstream['x-auth-scopes']]).toEqual([200, MY_APP, 'profile roles:read app:admin']);
    expect(await walk(server, { path: '/apps', ...from('192.0.2.2', { authorization: `Bearer ${await token()}` }) })).toMatchObject({ status: 403, reason: 'credential_not_allowed' });
    const apps = await walk(server, { path: '/apps', ...from('192.0.2.3', { authorization: `Bearer ${adminKey.key}` }) });
    expect([apps.status, apps.upstream['x-auth-method']]).toEqual([200, 'api-key']);
    expect((await walk(server, { path: '/health', ...from('192.0.2.4') })).status).toBe(200);
    expect(await walk(server, { path: '/auth/me', ...from('192.0.2.5') })).toMatchObject({ status: 401, reason: 'missing_credential', body: '{"detail":"Not authenticated"}' });
  });

  it('W4.5 per-IP per-endpoint window (thresholds from the environment), W4.6 lockout, W4.7 repeat offenders banned permanently, listed, lifted', async () => {
    const ip = '203.0.113.201';
    const refresh = { method: 'POST', path: '/auth/refresh', ...from(ip) };
    for (let lockout = 1; lockout <= 3; lockout++) {
      const seen = [];
      for (let i = 0; i < 3; i++) seen.push((await walk(server, refresh)).reason || 'allow');
      expect(seen, `lockout ${lockout}`).toEqual(['allow', 'allow', 'locked_out']);
      if (lockout < 3) await new Promise((r) => setTimeout(r, 1_100)); // lock and window are 1s here
    }
    // Banned at once on this replica, on every route, /health included.
    expect(await walk(server, { path: '/health', ...from(ip) })).toMatchObject({ status: 429, reason: 'banned', body: '{"detail":"Banned"}' });
    const bansFile = path.join(tmp.dir, 'tronexus-bans.json');
    const deadline = Date.now() + 5000;
    let bans: { value: string; reason: string; offences: number }[] = [];
    while (bans.length === 0 && Date.now() < deadline) {
      try {
        bans = (JSON.parse(readFileSync(bansFile, 'utf8')) as { bans: typeof bans }).bans;
      } catch {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    expect(bans).toMatchObject([{ value: ip, reason: '3 lockouts within 24h (rate-limit policy per-ip-endpoint)', offences: 3 }]);
    expect((await cli(['bans', 'list', '--config', policyFile], env)).out).toContain(`ip:${ip}\tpermanent`);
    expect((await cli(['bans', 'remove', `ip:${ip}`, '--config', policyFile], env)).code).toBe(0);
  });
});
