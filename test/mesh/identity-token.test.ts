// The identity token for upstreams, end to end: the real server with a frozen clock, a real gRPC
// client, and every token verified with jose against the JWKS the ops port serves over HTTP.

import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, SignJWT, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { mergeJwks } from '../../src/cluster.js';
import { IDENTITY_TOKEN_TYPE } from '../../src/mesh/identity-token.js';
import { silentLogger } from '../../src/observability/logger.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { CheckClient, headerOf, type CheckResponse } from '../support/grpc-client.js';

const JWT_SECRET = 'test-jwt-secret-0123456789abcdef0123456789';
const WEBHOOK_SECRET = 'whsec_0123456789abcdef0123456789';
const HEADER = 'x-portcullis-identity';
const ISSUER = 'https://portcullis.mesh.test';

let dir: string;
let policyFile: string;
let clock: ManualClock;
let server: RunningServer;
let client: CheckClient;
/** What the server reported for the primary's ops port (cluster mode), latest last. */
const reported: (string | undefined)[] = [];

function ecPem(): string {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
}

function policy(keys: string[]): string {
  return `
server: { decisionLog: none, grpc: { idleTimeout: 24h } } # the test moves the clock by minutes: the connection must not go idle
identity:
  - jwt: { issuers: [local] }
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [storefront] } } }
issuers:
  local: { issuer: https://idp.test/, secret: "\${JWT_SECRET}", claims: { tenant: org, scopes: [scope] } }
identityToken:
  issuer: ${ISSUER}
  audience: internal
  keys: [${keys.join(', ')}]
  keyReloadInterval: 0
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: items, match: { pathPrefix: /v1/items } }
  - { name: billing, match: { pathPrefix: /v1/billing }, identityToken: { audience: billing } }
  - { name: legacy, match: { pathPrefix: /v1/legacy }, identityToken: false }
  - name: webhook
    match: { path: /v1/webhooks/pay }
    identity: [{ sharedSecret: { header: x-checkout-secret, secret: "\${WEBHOOK_SECRET}", tenant: payments, scopes: [webhooks] } }]
default: deny
`;
}

async function userToken(sub: string, claims: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(clock.now() / 1000);
  return new SignJWT({ org: 'acme', scope: 'items:read items:write', ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer('https://idp.test/')
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + 3600)
    .sign(new TextEncoder().encode(JWT_SECRET));
}

async function jwks(): Promise<{ body: JSONWebKeySet; cacheControl: string | null; contentType: string | null }> {
  const res = await fetch(`http://127.0.0.1:${server.httpPort}/.well-known/jwks.json`);
  expect(res.status).toBe(200);
  return { body: (await res.json()) as JSONWebKeySet, cacheControl: res.headers.get('cache-control'), contentType: res.headers.get('content-type') };
}

/** Verify as an upstream would: against the JWKS fetched from the ops port, at the frozen time. */
async function verify(token: string, audience: string, at = clock.now()) {
  const { body } = await jwks();
  return jwtVerify(token, createLocalJWKSet(body), { issuer: ISSUER, audience, typ: IDENTITY_TOKEN_TYPE, algorithms: ['ES256'], currentDate: new Date(at) });
}

/** portcullis_identity_tokens_signed_total{result="ok"} from the ops port's /metrics. */
async function signedCount(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
  return Number(/^portcullis_identity_tokens_signed_total\{result="ok"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

function identityOf(res: CheckResponse): string | undefined {
  return headerOf(res.ok_response?.headers, HEADER);
}

async function allowed(init: Parameters<CheckClient['check']>[0]): Promise<CheckResponse> {
  const res = await client.check(init);
  expect(res.status?.code ?? 0, JSON.stringify(res.denied_response?.body)).toBe(0);
  return res;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'portcullis-idtoken-'));
  writeFileSync(path.join(dir, 'key-1.pem'), ecPem());
  policyFile = path.join(dir, 'policy.yaml');
  writeFileSync(policyFile, policy(['key-1.pem']));
  clock = new ManualClock(Date.UTC(2026, 10, 30, 12, 0, 0));
  server = await startServer({
    configFile: policyFile,
    grpcPort: 0,
    httpPort: 0,
    bind: '127.0.0.1',
    watch: false,
    logger: silentLogger(),
    env: { JWT_SECRET, WEBHOOK_SECRET },
    defaultMetrics: false,
    clock,
    onJwksChange: (jwks) => reported.push(jwks),
  });
  await server.ready;
  client = new CheckClient(server.grpcPort);
});

afterAll(async () => {
  client?.close();
  await server?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe('identity token', () => {
  it('is signed on an allow and verifies against the JWKS served on the ops port', async () => {
    const res = await allowed({ path: '/v1/items/1', headers: { authorization: `Bearer ${await userToken('user-1')}` } });
    const token = identityOf(res);
    expect(token).toBeDefined();
    const { payload, protectedHeader } = await verify(token!, 'internal');
    const { body } = await jwks();
    expect(protectedHeader).toMatchObject({ alg: 'ES256', typ: IDENTITY_TOKEN_TYPE, kid: body.keys[0]!.kid });
    const iat = Math.floor(clock.now() / 1000);
    expect(payload).toMatchObject({ iss: ISSUER, aud: 'internal', sub: 'user-1', tenant: 'acme', scopes: ['items:read', 'items:write'], method: 'jwt', iat, exp: iat + 300 });
    expect(payload.jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(payload.key_id).toBeUndefined();
    // The header is set (OVERWRITE_IF_EXISTS_OR_ADD), so it is not also in the removal list.
    expect(res.ok_response?.headers_to_remove ?? []).not.toContain(HEADER);
  });

  it('publishes public keys only, with cache headers', async () => {
    const { body, cacheControl, contentType } = await jwks();
    expect(body.keys).toHaveLength(1);
    expect(Object.keys(body.keys[0]!).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    expect(cacheControl).toBe('public, max-age=300');
    expect(contentType).toBe('application/jwk-set+json');
  });

  it('carries the claims of each credential kind', async () => {
    const host = identityOf(await allowed({ path: '/v1/items/1', host: 'shop.example.com' }));
    expect((await verify(host!, 'internal')).payload).toMatchObject({ sub: 'host:shop.example.com', tenant: 'acme', scopes: ['storefront'], method: 'host' });
    const hook = identityOf(await allowed({ method: 'POST', path: '/v1/webhooks/pay', headers: { 'x-checkout-secret': WEBHOOK_SECRET } }));
    expect((await verify(hook!, 'internal')).payload).toMatchObject({ sub: 'shared-secret', tenant: 'payments', scopes: ['webhooks'], method: 'shared-secret' });
  });

  it('uses the route audience, and none where the route turns it off', async () => {
    const bearer = `Bearer ${await userToken('user-aud')}`;
    const billing = identityOf(await allowed({ path: '/v1/billing/x', headers: { authorization: bearer } }));
    expect((await verify(billing!, 'billing')).payload.aud).toBe('billing');
    await expect(verify(billing!, 'internal')).rejects.toMatchObject({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
    const legacy = await allowed({ path: '/v1/legacy/x', headers: { authorization: bearer } });
    expect(identityOf(legacy)).toBeUndefined();
    expect(legacy.ok_response?.headers_to_remove).toContain(HEADER);
  });

  it("always removes or overwrites the client's own identity header", async () => {
    const forged = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.';
    const pub = await allowed({ path: '/health', headers: { [HEADER]: forged, 'x_portcullis_identity': forged } });
    expect(identityOf(pub)).toBeUndefined();
    expect(pub.ok_response?.headers_to_remove).toEqual(expect.arrayContaining([HEADER, 'x_portcullis_identity']));
    const legacy = await allowed({ path: '/v1/legacy/x', headers: { authorization: `Bearer ${await userToken('u')}`, [HEADER]: forged } });
    expect(legacy.ok_response?.headers_to_remove).toContain(HEADER);
    for (const raw of [false, true]) {
      const items = await allowed({ raw, path: '/v1/items/1', headers: { authorization: `Bearer ${await userToken('u')}`, [HEADER]: forged } });
      const set = items.ok_response?.headers?.find((h) => h.header.key === HEADER);
      expect(set?.append_action).toBe('OVERWRITE_IF_EXISTS_OR_ADD');
      expect(identityOf(items)).not.toBe(forged);
    }
  });

  it('reuses a token within the reuse window, then signs a new one; an expired one is never handed out', async () => {
    const bearer = `Bearer ${await userToken('user-reuse')}`;
    const get = async () => identityOf(await allowed({ path: '/v1/items/1', headers: { authorization: bearer } }))!;
    const first = await get();
    // Never one signature per request: 20 more allows within the window sign nothing.
    const signedBefore = await signedCount();
    expect(signedBefore).toBeGreaterThan(0);
    for (let i = 0; i < 20; i++) expect(await get()).toBe(first);
    expect(await signedCount()).toBe(signedBefore);
    clock.advance(149_000); // reuse 0.5 of 300 s
    expect(await get()).toBe(first);
    clock.advance(2_000);
    // Past the window: the still-valid token is handed out while the next one is signed.
    expect(await get()).toBe(first);
    let next = first;
    for (let i = 0; i < 100 && next === first; i++) {
      await new Promise((r) => setImmediate(r));
      next = await get();
    }
    expect(next).not.toBe(first);
    expect(decodeJwt(next).jti).not.toBe(decodeJwt(first).jti);
    expect(decodeJwt(next).iat).toBe(Math.floor(clock.now() / 1000));
    // Long after: the cached token has expired, so the answer waits for a fresh one.
    clock.advance(400_000);
    await expect(verify(next, 'internal')).rejects.toMatchObject({ code: 'ERR_JWT_EXPIRED' });
    const later = await get();
    expect((await verify(later, 'internal')).payload.iat).toBe(Math.floor(clock.now() / 1000));
  });

  it('never outlives the credential it stands for', async () => {
    const now = Math.floor(clock.now() / 1000);
    const short = await new SignJWT({ org: 'acme', scope: 'items:read' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('https://idp.test/')
      .setSubject('user-short')
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(new TextEncoder().encode(JWT_SECRET));
    const token = identityOf(await allowed({ path: '/v1/items/1', headers: { authorization: `Bearer ${short}` } }));
    expect(decodeJwt(token!).exp).toBe(now + 60);
  });

  it('rotates: a new key signs new tokens, old ones still verify; a removed key leaves the JWKS', async () => {
    const bearer = `Bearer ${await userToken('user-rotate')}`;
    const before = identityOf(await allowed({ path: '/v1/items/1', headers: { authorization: bearer } }))!;
    const oldKid = decodeProtectedHeader(before).kid;
    writeFileSync(path.join(dir, 'key-2.pem'), ecPem());
    writeFileSync(policyFile, policy(['key-1.pem', 'key-2.pem']));
    expect(await server.policies.reload()).toBe(true);
    const { body } = await jwks();
    expect(body.keys.map((k) => k.kid)).toHaveLength(2);
    const newKid = body.keys[1]!.kid;
    expect(newKid).not.toBe(oldKid);
    const after = identityOf(await allowed({ path: '/v1/items/1', headers: { authorization: bearer } }))!;
    expect(decodeProtectedHeader(after).kid).toBe(newKid);
    await verify(before, 'internal');
    await verify(after, 'internal');
    // Cluster mode: what a worker reports to the primary is what it serves.
    expect(reported.at(-1)).toBe(JSON.stringify(body));

    writeFileSync(policyFile, policy(['key-2.pem']));
    expect(await server.policies.reload()).toBe(true);
    expect((await jwks()).body.keys.map((k) => k.kid)).toEqual([newKid]);
    expect(JSON.parse(reported.at(-1)!).keys.map((k: { kid: string }) => k.kid)).toEqual([newKid]);
    await expect(verify(before, 'internal')).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
    await verify(after, 'internal');
  });

  it('keeps the last good keys when a key file turns missing or invalid at reload', async () => {
    const bearer = `Bearer ${await userToken('user-badkey')}`;
    const kids = (await jwks()).body.keys.map((k) => k.kid);
    const keyring = server.policies.current()!.identityToken!.keyring;
    writeFileSync(path.join(dir, 'key-2.pem'), '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n');
    expect(keyring.reload()).toBe(false);
    expect((await jwks()).body.keys.map((k) => k.kid)).toEqual(kids);
    rmSync(path.join(dir, 'key-2.pem'));
    expect(keyring.reload()).toBe(false);
    const metrics = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
    expect(metrics).toMatch(/^portcullis_identity_key_reloads_total\{result="failed"\} [1-9]/m);
    // A policy reload re-reads the files too, and keeps the last good keys as well.
    writeFileSync(policyFile, policy(['key-2.pem']) + '\n# touched\n');
    await server.policies.reload();
    expect((await jwks()).body.keys.map((k) => k.kid)).toEqual(kids);
    const token = identityOf(await allowed({ path: '/v1/items/1', headers: { authorization: bearer } }))!;
    expect(decodeProtectedHeader(token).kid).toBe(kids[0]);
    await verify(token, 'internal');
  });
});

describe('JWKS in cluster mode', () => {
  it("the primary publishes the union of the workers' key sets", () => {
    const a = JSON.stringify({ keys: [{ kid: 'k1', kty: 'EC' }, { kid: 'k2', kty: 'EC' }] });
    const b = JSON.stringify({ keys: [{ kid: 'k2', kty: 'EC' }, { kid: 'k3', kty: 'EC' }] });
    expect(JSON.parse(mergeJwks([a, b])!).keys.map((k: { kid: string }) => k.kid)).toEqual(['k1', 'k2', 'k3']);
    expect(mergeJwks([])).toBeUndefined();
  });
});
