// An API key never reaches the upstream unless `forward: true`, whichever store verifies it: the
// built-in one (here the file store) and an external one (an HTTP verify endpoint, seed 002's
// Better Auth keys) run the same scenarios and must strip the same headers. The external source
// once removed only the one header it read the key from, and nothing when another credential
// identified the caller or the route was public.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey } from '../../src/keys/admin.js';
import { FileKeyStore } from '../../src/keys/file-store.js';
import { silentLogger } from '../../src/observability/logger.js';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import type { AllowDecision, Decision } from '../../src/types.js';
import { adminFor, DAY, tempDir } from '../keys/helpers.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const SECRET = 'removal-test-secret-0123456789abcdef0123456789';
const PREFIX = 'pk_live_';
const tmp = tempDir();
const keyFile = path.join(tmp.dir, 'keys.yaml');
const runtime = testRuntime();
let server: Server;
let externalKey: string;
let builtInKey: string;

/** Both policies alike but for where the key is verified. */
function policy(apiKey: string): string {
  return `
issuers:
  idp: { secret: "${SECRET}", issuer: https://idp.test, audiences: [api], claims: { tenant: org, scopes: [scope] } }
identity:
  - jwt: { issuers: [idp] }
  - apiKey: { headers: [x-api-key], bearerPrefixes: [${PREFIX}]${apiKey} }
routes:
  - { name: public, match: { pathPrefix: /public/ }, public: true }
  - { name: forwarded, match: { pathPrefix: /forwarded/ }, identity: [{ apiKey: { headers: [x-api-key], bearerPrefixes: [${PREFIX}], forward: true${apiKey} } }] }
  - { name: api, match: { pathPrefix: /v1/ }, require: { allOf: [orders] } }
`;
}

const jwt = () =>
  new SignJWT({ org: 'acme', scope: 'orders' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('https://idp.test').setAudience('api').setSubject('u1').setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode(SECRET));

function allowed(decision: Decision): AllowDecision {
  if (!decision.allowed) throw new Error(`expected an allow, got ${decision.reason} (${decision.detail ?? ''})`);
  return decision;
}

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      const { key } = JSON.parse(body) as { key: string };
      const found = key === externalKey ? { tenant: 'acme', scopes: ['orders'], id: 'ext-1' } : null;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(found));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  externalKey = `${PREFIX}external0123456789abcdef`;
  writeFileSync(keyFile, 'version: 1\nkeys: []\n');
  const admin = adminFor(new FileKeyStore({ path: keyFile, logger: silentLogger(), reloadIntervalMs: 0 }), runtime.clock);
  builtInKey = (await createKey(admin, { tenant: 'acme', name: 'k', scopes: ['orders'], prefix: PREFIX, expiresInMs: DAY })).key;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await runtime.resources.closeAll();
  tmp.cleanup();
});

describe.each([
  { store: 'built-in (file)', source: '', keyStore: () => `keyStore:\n  file: { path: ${keyFile} }\n`, key: () => builtInKey },
  {
    store: 'external (HTTP verify endpoint)',
    source: ', external: { lookup: verify, map: { tenant: tenant, scopes: [scopes], keyId: id } }',
    keyStore: () => `lookups:\n  verify:\n    http: { url: "http://127.0.0.1:${(server.address() as AddressInfo).port}/verify", method: POST, json: { key: "{{credential}}" } }\n    timeout: 2s\n`,
    key: () => externalKey,
  },
])('an API key verified by the $store store', ({ source, keyStore, key }) => {
  let compiled: CompiledPolicy;
  const check = async (path: string, headers: Record<string, string>) => allowed(await authorize(compiled, request({ path, headers })));
  beforeAll(async () => {
    compiled = compileYaml(keyStore() + policy(source), runtime);
    await compiled.ready;
  });

  it('identifies by the key and removes it', async () => {
    const decision = await check('/v1/orders', { 'x-api-key': key() });
    expect(decision.principal?.method).toBe('api-key');
    expect(decision.removeHeaders).toContain('x-api-key');
  });

  it('removes a key sent as Bearer', async () => {
    expect((await check('/v1/orders', { authorization: `Bearer ${key()}` })).removeHeaders).toContain('authorization');
  });

  it('removes the key from every place it was sent in', async () => {
    const decision = await check('/v1/orders', { 'x-api-key': key(), authorization: `Bearer ${key()}` });
    expect(decision.removeHeaders).toEqual(expect.arrayContaining(['x-api-key', 'authorization']));
  });

  it('removes it when a JWT identified the caller', async () => {
    const decision = await check('/v1/orders', { authorization: `Bearer ${await jwt()}`, 'x-api-key': key() });
    expect(decision.principal?.method).toBe('jwt');
    expect(decision.removeHeaders).toContain('x-api-key');
  });

  it('removes it on a public route, in its header and as Bearer', async () => {
    expect((await check('/public/config', { 'x-api-key': key() })).removeHeaders).toContain('x-api-key');
    expect((await check('/public/config', { authorization: `Bearer ${key()}` })).removeHeaders).toContain('authorization');
  });

  it('keeps it where the route says forward: true', async () => {
    const decision = await check('/forwarded/x', { 'x-api-key': key() });
    expect(decision.principal?.method).toBe('api-key');
    expect(decision.removeHeaders ?? []).not.toContain('x-api-key');
  });
});
