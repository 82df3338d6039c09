// The apiKey identity source end to end over the file store: YAML policy → compilePolicy →
// authorize → Decision, with keys minted by the admin functions the CLI uses.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey, importKey, revokeKey, rotateKey } from '../../src/keys/admin.js';
import { FileKeyStore } from '../../src/keys/file-store.js';
import { sha256Hex } from '../../src/keys/hashing.js';
import { mintKey } from '../../src/keys/format.js';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { silentLogger } from '../../src/observability/logger.js';
import type { AllowDecision, Decision, DenyDecision } from '../../src/types.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { adminFor, counterValue, DAY, eventually, tempDir } from './helpers.js';

const tmp = tempDir();
const keyFile = path.join(tmp.dir, 'keys.yaml');
const runtime = testRuntime();
const admin = adminFor(new FileKeyStore({ path: keyFile, logger: silentLogger(), reloadIntervalMs: 0 }), runtime.clock);
let policy: CompiledPolicy;

const POLICY = `
identity:
  - apiKey:
      headers: [x-api-key]
      bearerPrefixes: [flotac_api_key_live_]
      importedFormats: [{ prefix: flotac_api_key_live_, charset: hex, length: 64 }]
keyStore:
  file: { path: ${keyFile}, reloadInterval: 100ms }
  cache: { ttl: 60s, negativeTtl: 10s }
routes:
  - { name: orders, match: { pathPrefix: /v1/orders }, require: { allOf: ["orders:read"] } }
  - { name: forwarded, match: { pathPrefix: /v1/forwarded }, identity: [{ apiKey: { forward: true } }] }
  - { name: by-id, match: { pathPrefix: /v1/by-id }, identity: [{ apiKey: { subject: id } }] }
`;

async function check(headers: Record<string, string>, pathName = '/v1/orders'): Promise<Decision> {
  return authorize(policy, request({ path: pathName, headers }));
}

function allowed(decision: Decision): AllowDecision {
  if (!decision.allowed) throw new Error(`expected allow, got ${decision.reason} (${decision.detail ?? ''})`);
  return decision;
}

function denied(decision: Decision): DenyDecision {
  if (decision.allowed) throw new Error('expected a denial');
  return decision;
}

const header = (decision: AllowDecision, name: string) => decision.upstreamHeaders.find((h) => h.name === name)?.value;

beforeAll(() => {
  writeFileSync(keyFile, 'version: 1\nkeys: []\n');
  policy = compileYaml(POLICY, runtime);
});

afterAll(async () => {
  await runtime.resources.closeAll();
  tmp.cleanup();
});

/** The server re-reads the key file on its own; tests wait for the reload instead of sleeping blindly. */
async function waitForReload(expectedKeys: number): Promise<void> {
  const store = runtime.resources.peek<FileKeyStore>(`keystore:file:${keyFile}`)!;
  expect(await eventually(() => store.size === expectedKeys, 3000)).toBe(true);
}

describe('apiKey source with the file store', () => {
  let key: string;
  let keyId: string;
  let keyCount = 0;

  it('allows a created key from x-api-key, injects the key id and strips the key', async () => {
    const created = await createKey(admin, { tenant: 'acme', name: 'billing-sync', scopes: ['orders:read'], prefix: 'flotac_api_key_live_', expiresInMs: 90 * DAY });
    key = created.key;
    keyId = created.record.id;
    await waitForReload(++keyCount);

    const decision = allowed(await check({ 'x-api-key': key }));
    expect(decision.principal).toMatchObject({ method: 'api-key', tenant: 'acme', subject: 'billing-sync', scopes: ['orders:read'], keyId });
    expect(header(decision, 'x-auth-key-id')).toBe(keyId);
    expect(header(decision, 'x-tenant-id')).toBe('acme');
    expect(header(decision, 'x-auth-method')).toBe('api-key');
    expect(decision.removeHeaders).toContain('x-api-key');
    expect(decision.removeHeaders).not.toContain('authorization');
  });

  it('answers a cached key synchronously (no promise on the hot path)', () => {
    const result = authorize(policy, request({ path: '/v1/orders', headers: { 'x-api-key': key } }));
    expect(result).not.toBeInstanceOf(Promise);
    expect(allowed(result as Decision).principal?.keyId).toBe(keyId);
  });

  it('accepts the key as Authorization: Bearer and strips Authorization', async () => {
    const decision = allowed(await check({ authorization: `Bearer ${key}` }));
    expect(decision.principal?.keyId).toBe(keyId);
    expect(decision.removeHeaders).toContain('authorization');
  });

  it('forwards the key when the source says forward: true', async () => {
    const decision = allowed(await check({ 'x-api-key': key }, '/v1/forwarded'));
    expect(decision.removeHeaders).not.toContain('x-api-key');
  });

  it('uses the key id as subject when the source says subject: id', async () => {
    const decision = allowed(await check({ 'x-api-key': key }, '/v1/by-id'));
    expect(decision.principal?.subject).toBe(keyId);
  });

  it('passes on requests without a key (401 missing_credential from the chain)', async () => {
    expect(denied(await check({})).reason).toBe('missing_credential');
    // A Bearer token without a key prefix (a JWT) is not this source's credential.
    expect(denied(await check({ authorization: 'Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln' })).reason).toBe('missing_credential');
  });

  it('refuses two keys, duplicated headers and empty values as malformed_credential', async () => {
    const other = mintKey('flotac_api_key_live_');
    expect(denied(await check({ 'x-api-key': key, authorization: `Bearer ${other}` })).reason).toBe('malformed_credential');
    expect(denied(await check({ 'x-api-key': `${key},${key}` })).reason).toBe('malformed_credential');
    expect(denied(await check({ authorization: `Bearer ${key}, Bearer ${other}` })).reason).toBe('malformed_credential');
    expect(denied(await check({ 'x-api-key': '  ' })).reason).toBe('malformed_credential');
    // The same key in both places is one credential; both carriers are stripped.
    const both = allowed(await check({ 'x-api-key': key, authorization: `Bearer ${key}` }));
    expect(both.removeHeaders).toEqual(expect.arrayContaining(['x-api-key', 'authorization']));
  });

  it('rejects a mistyped key offline, without a store lookup', async () => {
    const before = await counterValue(runtime, 'portcullis_keystore_lookups_total', {});
    const mistyped = key.slice(0, -1) + (key.endsWith('a') ? 'b' : 'a');
    const decision = denied(await check({ 'x-api-key': mistyped }));
    expect(decision.reason).toBe('invalid_api_key');
    expect(decision.status).toBe(401);
    expect(decision.headers).toContainEqual({ name: 'www-authenticate', value: 'Bearer realm="portcullis", error="invalid_token"' });
    expect(await counterValue(runtime, 'portcullis_keystore_lookups_total', {})).toBe(before);
  });

  it('rejects an unknown well-formed key as invalid_api_key and caches the miss', async () => {
    const unknown = mintKey('flotac_api_key_live_');
    expect(denied(await check({ 'x-api-key': unknown })).reason).toBe('invalid_api_key');
    const lookups = await counterValue(runtime, 'portcullis_keystore_lookups_total', { result: 'not_found' });
    expect(denied(await check({ 'x-api-key': unknown })).reason).toBe('invalid_api_key');
    expect(await counterValue(runtime, 'portcullis_keystore_lookups_total', { result: 'not_found' })).toBe(lookups);
    expect(await counterValue(runtime, 'portcullis_apikey_cache_total', { result: 'negative_hit' })).toBeGreaterThan(0);
  });

  it('enforces the route scope on key principals', async () => {
    const created = await createKey(admin, { tenant: 'acme', name: 'reporting', scopes: ['reports:read'], prefix: 'flotac_api_key_live_', expiresInMs: DAY });
    await waitForReload(++keyCount);
    const decision = denied(await check({ 'x-api-key': created.key }));
    expect(decision.reason).toBe('insufficient_scope');
    expect(decision.status).toBe(403);
  });

  it('refuses an expired key with key_expired', async () => {
    const created = await createKey(admin, { tenant: 'acme', name: 'short', scopes: ['orders:read'], prefix: 'flotac_api_key_live_', expiresInMs: 60_000 });
    await waitForReload(++keyCount);
    allowed(await check({ 'x-api-key': created.key }));
    runtime.clock.advance(60_001);
    expect(denied(await check({ 'x-api-key': created.key })).reason).toBe('key_expired');
  });

  it('sees a revocation written by the CLI through the hot reload', async () => {
    const created = await createKey(admin, { tenant: 'acme', name: 'to-revoke', scopes: ['orders:read'], prefix: 'flotac_api_key_live_', expiresInMs: DAY });
    await waitForReload(++keyCount);
    allowed(await check({ 'x-api-key': created.key }));
    await revokeKey(admin, created.record.id);
    expect(await eventually(async () => !(await check({ 'x-api-key': created.key })).allowed, 3000)).toBe(true);
    const decision = denied(await check({ 'x-api-key': created.key }));
    expect(decision.reason).toBe('key_revoked');
  });

  it('rotates with a grace period: both keys work, then only the new one', async () => {
    const rotated = await rotateKey(admin, keyId, { graceMs: 3_600_000 });
    await waitForReload(++keyCount);
    expect(rotated.record.name).toBe('billing-sync');
    expect(rotated.record.tenant).toBe('acme');
    expect(rotated.previous.rotatedTo).toBe(rotated.record.id);
    expect(await eventually(async () => (await check({ 'x-api-key': rotated.key })).allowed, 3000)).toBe(true);
    allowed(await check({ 'x-api-key': key }));
    runtime.clock.advance(3_600_001);
    expect(denied(await check({ 'x-api-key': key })).reason).toBe('key_expired');
    const fresh = allowed(await check({ 'x-api-key': rotated.key }));
    expect(fresh.principal?.subject).toBe('billing-sync');
  });

  it('verifies an imported seed-003 key stored as a plain SHA-256 digest', async () => {
    const legacy = 'flotac_api_key_live_' + '0123456789abcdef'.repeat(4);
    await importKey(
      admin,
      { tenant: 'company-42', name: 'legacy-integration', scopes: ['orders:read'], expiresAt: runtime.clock.now() + 30 * DAY },
      { kind: 'sha256', hash: sha256Hex(legacy), prefix: 'flotac_api_key_live_' },
    );
    await waitForReload(++keyCount);
    const decision = allowed(await check({ authorization: `Bearer ${legacy}` }));
    expect(decision.principal?.tenant).toBe('company-42');
    // Same shape, different digits: looked up, unknown.
    expect(denied(await check({ authorization: `Bearer ${legacy.slice(0, -1)}0` })).reason).toBe('invalid_api_key');
  });

  it('keeps the loaded keys when the file is replaced by garbage', async () => {
    const created = await createKey(admin, { tenant: 'acme', name: 'survivor', scopes: ['orders:read'], prefix: 'flotac_api_key_live_', expiresInMs: DAY });
    await waitForReload(++keyCount);
    writeFileSync(keyFile, 'version: 1\nkeys: [ { id: broken } ]\n');
    await new Promise((resolve) => setTimeout(resolve, 400));
    allowed(await check({ 'x-api-key': created.key }));
    // A valid file without the key is applied: the key stops working.
    writeFileSync(keyFile, 'version: 1\nkeys: []\n');
    await waitForReload(0);
    expect(denied(await check({ 'x-api-key': created.key })).reason).toBe('invalid_api_key');
  });
});
