// Seed 002 against a real Better Auth (npm better-auth with its organization plugin and
// @better-auth/api-key) on the machine's PostgreSQL, in a fresh schema, served by node:http:
// users sign up, create organizations and set the active one; API keys are created in Better Auth
// with metadata { organizationId, scopes }. Portcullis resolves the session cookie to the active
// organization with admin + storefront, verifies the API keys (over HTTP via the app's verify
// route, and by SQL on Better Auth's own apikey table), and refuses a signed-out session within
// the documented TTL.

import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { apiKey } from '@better-auth/api-key';
import { betterAuth } from 'better-auth';
import { getMigrations } from 'better-auth/db/migration';
import { toNodeHandler } from 'better-auth/node';
import { organization } from 'better-auth/plugins';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { decide, header, reasonOf } from './helpers.js';

const SCHEMA = `better_auth_${randomBytes(6).toString('hex')}`;
const COOKIE = 'better-auth.session_token';
const available = await postgresAvailable();

function makeAuth(pool: pg.Pool, baseURL: string) {
  return betterAuth({
    baseURL,
    secret: randomBytes(32).toString('hex'),
    database: pool,
    emailAndPassword: { enabled: true },
    trustedOrigins: [baseURL],
    plugins: [organization(), apiKey({ enableMetadata: true, rateLimit: { enabled: false } })],
    telemetry: { enabled: false },
  });
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

describe.skipIf(!available)('seed 002 against a real Better Auth', () => {
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  let pool: pg.Pool;
  let server: Server;
  let baseURL: string;
  let auth: ReturnType<typeof makeAuth>;

  async function call(path: string, body: unknown, cookie?: string): Promise<{ json: any; cookie: string | undefined }> {
    const response = await fetch(`${baseURL}/api/auth${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: baseURL, ...(cookie ? { cookie: `${COOKIE}=${cookie}` } : {}) },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${path}: ${response.status} ${text}`);
    const set = response.headers.getSetCookie().find((c) => c.startsWith(`${COOKIE}=`));
    return { json: text ? JSON.parse(text) : null, cookie: set?.slice(COOKIE.length + 1).split(';')[0] };
  }

  /** A user with an organization set active: returns the session cookie value and ids. */
  async function merchant(name: string) {
    const email = `${name}-${randomBytes(3).toString('hex')}@example.com`;
    const signUp = await call('/sign-up/email', { email, password: 'correct horse battery staple', name });
    const cookie = signUp.cookie!;
    const org = await call('/organization/create', { name: `${name} Inc`, slug: `${name}-${randomBytes(3).toString('hex')}` }, cookie);
    await call('/organization/set-active', { organizationId: org.json.id }, cookie);
    return { cookie, userId: signUp.json.user.id as string, orgId: org.json.id as string, email };
  }

  beforeAll(async () => {
    await admin.query(`create schema ${SCHEMA}`);
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4, options: `-c search_path=${SCHEMA}` });
    server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    baseURL = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    auth = makeAuth(pool, baseURL);
    const { runMigrations } = await getMigrations(auth.options);
    await runMigrations();
    const handler = toNodeHandler(auth);
    server.on('request', (req, res) => {
      // The app's own verify route (Better Auth's verifyApiKey is a server-side API).
      if (req.url === '/internal/verify-api-key' && req.method === 'POST') {
        void readBody(req)
          .then(async (text) => {
            const { key } = JSON.parse(text) as { key: string };
            const result = await auth.api.verifyApiKey({ body: { key } });
            res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(result));
          })
          .catch(() => res.writeHead(500).end());
        return;
      }
      void handler(req, res);
    });
  }, 60_000);

  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await pool?.end();
    await admin.query(`drop schema if exists ${SCHEMA} cascade`);
    await admin.end();
  });

  function policy(): string {
    return `
lookups:
  better-auth-session:
    http:
      url: "${baseURL}/api/auth/get-session"
      headers: { cookie: "${COOKIE}={{credential}}" }
    timeout: 2s
  better-auth-api-key:
    http:
      url: "${baseURL}/internal/verify-api-key"
      method: POST
      json: { key: "{{credential}}" }
    timeout: 2s
  better-auth-api-key-sql:
    sql:
      url: "${DATABASE_URL}"
      param: sha256-base64url
      query: >-
        select id, "referenceId" as subject, metadata::jsonb->>'organizationId' as tenant,
        metadata::jsonb->'scopes' as scopes, "expiresAt" from ${SCHEMA}.apikey where key = $1 and enabled
    timeout: 2s
identity:
  - apiKey:
      headers: [x-api-key]
      external:
        lookup: better-auth-api-key
        map: { present: valid, tenant: key.metadata.organizationId, scopes: [key.metadata.scopes], subject: key.referenceId, keyId: key.id, expiresAt: key.expiresAt }
  - apiKey:
      headers: [x-api-key-sql]
      external: { lookup: better-auth-api-key-sql, map: { tenant: tenant, scopes: [scopes], subject: subject, keyId: id, expiresAt: expiresAt } }
  - session:
      cookie: ${COOKIE}
      lookup: better-auth-session
      map: { tenant: session.activeOrganizationId, subject: user.id, email: user.email, expiresAt: session.expiresAt }
      scopes: [admin, storefront]
routes:
  - { match: { pathPrefix: /v1/admin/ }, require: { allOf: [admin] } }
  - { match: { pathPrefix: /v1/ }, require: { allOf: [storefront] } }
`;
  }

  it('resolves a dashboard session cookie to its active organization with admin and storefront', async () => {
    const acme = await merchant('acme');
    const compiled = compileYaml(policy(), testRuntime());
    const decision = await decide(compiled, request({ path: '/v1/admin/products', headers: { cookie: `theme=dark; ${COOKIE}=${acme.cookie}` } }));
    expect(reasonOf(decision)).toBe('allow');
    expect(header(decision, 'x-tenant-id')).toBe(acme.orgId);
    expect(header(decision, 'x-auth-subject')).toBe(acme.userId);
    expect(header(decision, 'x-auth-email')).toBe(acme.email);
    expect(header(decision, 'x-auth-scopes')).toBe('admin storefront');
    expect(header(decision, 'x-auth-method')).toBe('session');
  });

  it('follows a switch of the active organization once the cached answer expires', async () => {
    const acme = await merchant('switcher');
    const second = await call('/organization/create', { name: 'Second', slug: `second-${randomBytes(3).toString('hex')}` }, acme.cookie);
    await call('/organization/set-active', { organizationId: acme.orgId }, acme.cookie);
    const runtime = testRuntime();
    const compiled = compileYaml(policy(), runtime);
    const req = () => request({ path: '/v1/admin/products', headers: { cookie: `${COOKIE}=${acme.cookie}` } });
    expect(header(await decide(compiled, req()), 'x-tenant-id')).toBe(acme.orgId);
    await call('/organization/set-active', { organizationId: second.json.id }, acme.cookie);
    runtime.clock.advance(30_001);
    expect(header(await decide(compiled, req()), 'x-tenant-id')).toBe(second.json.id);
  });

  it('refuses a signed-out session (401 session_invalid) at the latest one default TTL (30 s) after sign-out', async () => {
    const user = await merchant('leaver');
    const runtime = testRuntime();
    const compiled = compileYaml(policy(), runtime);
    const req = () => request({ path: '/v1/products', headers: { cookie: `${COOKIE}=${user.cookie}` } });
    expect(reasonOf(await decide(compiled, req()))).toBe('allow');
    await call('/sign-out', {}, user.cookie);
    runtime.clock.advance(30_000);
    const after = await decide(compiled, req());
    expect(reasonOf(after)).toBe('session_invalid');
    expect(after.allowed ? 0 : after.status).toBe(401);
    // A fresh Portcullis (nothing cached) refuses it at once.
    expect(reasonOf(await decide(compileYaml(policy(), testRuntime()), req()))).toBe('session_invalid');
  });

  it('refuses a forged or unknown session cookie', async () => {
    const compiled = compileYaml(policy(), testRuntime());
    expect(reasonOf(await decide(compiled, request({ path: '/v1/products', headers: { cookie: `${COOKIE}=forged.signature` } })))).toBe('session_invalid');
  });

  it('verifies a Better Auth API key (over HTTP and by SQL on its table) to its organization and scopes', async () => {
    const acme = await merchant('integrator');
    const created = await auth.api.createApiKey({ body: { name: 'Integration key', metadata: { organizationId: acme.orgId, scopes: ['admin'] }, userId: acme.userId } });
    const key = created.key;
    const compiled = compileYaml(policy(), testRuntime());
    for (const name of ['x-api-key', 'x-api-key-sql']) {
      const decision = await decide(compiled, request({ path: '/v1/admin/products', headers: { [name]: key } }));
      expect(reasonOf(decision)).toBe('allow');
      expect(header(decision, 'x-tenant-id')).toBe(acme.orgId);
      expect(header(decision, 'x-auth-scopes')).toBe('admin');
      expect(header(decision, 'x-auth-key-id')).toBe(created.id);
      expect(header(decision, 'x-auth-subject')).toBe(acme.userId);
      expect(header(decision, 'x-auth-method')).toBe('api-key');
      expect(decision.allowed && decision.removeHeaders).toContain(name);
      // An admin key has no storefront scope.
      expect(reasonOf(await decide(compiled, request({ path: '/v1/products', headers: { [name]: key } })))).toBe('insufficient_scope');
    }
    for (const name of ['x-api-key', 'x-api-key-sql']) {
      expect(reasonOf(await decide(compiled, request({ path: '/v1/admin/products', headers: { [name]: `${key}x` } })))).toBe('invalid_api_key');
    }
  });

  it('refuses a disabled (revoked) API key over HTTP and by SQL once the cached answer expires', async () => {
    const acme = await merchant('revoker');
    const created = await auth.api.createApiKey({ body: { name: 'Short-lived', metadata: { organizationId: acme.orgId, scopes: ['admin'] }, userId: acme.userId } });
    const runtime = testRuntime();
    const compiled = compileYaml(policy(), runtime);
    const req = (name: string) => request({ path: '/v1/admin/products', headers: { [name]: created.key } });
    expect(reasonOf(await decide(compiled, req('x-api-key')))).toBe('allow');
    expect(reasonOf(await decide(compiled, req('x-api-key-sql')))).toBe('allow');
    await pool.query(`update apikey set enabled = false where id = $1`, [created.id]);
    runtime.clock.advance(30_001);
    expect(reasonOf(await decide(compiled, req('x-api-key')))).toBe('invalid_api_key');
    expect(reasonOf(await decide(compiled, req('x-api-key-sql')))).toBe('invalid_api_key');
  });
});
