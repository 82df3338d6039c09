// The PostgreSQL key store against the real server: migration, CLI, revocation across replicas via
// LISTEN/NOTIFY, batched last_used_at, outages and recovery. One schema per run of this file.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKeysCommand, runMigrateCommand } from '../../src/keys/cli.js';
import { mintKey } from '../../src/keys/format.js';
import { PostgresKeyStore } from '../../src/keys/postgres/store.js';
import { silentLogger } from '../../src/observability/logger.js';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import type { Runtime } from '../../src/runtime.js';
import { isPromise, type Decision } from '../../src/types.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { keyStoreCli } from '../support/key-store-cli.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { counterValue, eventually } from './helpers.js';
import { TcpProxy } from './tcp-proxy.js';

const SCHEMA = `pc_keys_test_${randomBytes(4).toString('hex')}`;
const available = await postgresAvailable();

const cli = (argv: string[], run = runKeysCommand) => keyStoreCli(SCHEMA, argv, run);

async function createKey(name: string, extra: string[] = []): Promise<{ key: string; id: string }> {
  const result = await cli(['create', '--tenant', 'acme', '--name', name, '--scopes', 'orders:read', '--expires-in', '30d', '--json', ...extra]);
  expect(result.err).toBe('');
  return JSON.parse(result.out) as { key: string; id: string };
}

function policyYaml(url: string, lookupTimeout: string, extra = ''): string {
  return `
identity:
  - apiKey: { headers: [x-api-key] }
keyStore:
  type: postgres
  postgres: { url: "${url}", schema: ${SCHEMA}, lastUsedFlush: 1s, connectTimeout: 500ms }
  lookupTimeout: ${lookupTimeout}
  cache: { ttl: 60s, negativeTtl: 10s, staleFor: 1h }
${extra}
routes:
  - { name: orders, match: { pathPrefix: /v1/ }, require: { allOf: ["orders:read"] } }
`;
}

interface Instance {
  runtime: Runtime & { clock: { advance(ms: number): void } };
  policy: CompiledPolicy;
  check(key: string): Promise<Decision>;
}

const instances: Instance[] = [];

/** Whether the instance answers for `key` synchronously, i.e. from its cache. */
function isCached(node: Instance, key: string): boolean {
  const result = authorize(node.policy, request({ path: '/v1/orders', headers: { 'x-api-key': key } }));
  return !isPromise(result) && result.allowed;
}

/** lookupTimeout: generous by default (a loaded CI host); the outage test's is short, as it measures it. */
async function instance(url = DATABASE_URL, lookupTimeout = '2s'): Promise<Instance> {
  const runtime = testRuntime();
  const policy = compileYaml(policyYaml(url, lookupTimeout), runtime);
  await policy.ready;
  const created: Instance = { runtime, policy, check: async (key) => authorize(policy, request({ path: '/v1/orders', headers: { 'x-api-key': key } })) };
  instances.push(created);
  return created;
}

const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });

afterAll(async () => {
  for (const i of instances) await i.runtime.resources.closeAll();
  await admin.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`).catch(() => undefined);
  await admin.end();
});

describe.skipIf(!available)('PostgreSQL key store', () => {
  describe('schema', () => {
    it('refuses to serve from an unmigrated schema, pointing at portcullis migrate', async () => {
      const store = new PostgresKeyStore({ url: DATABASE_URL, schema: SCHEMA, poolSize: 1, connectTimeoutMs: 1000, lastUsedFlushMs: 0, listen: false, logger: silentLogger() });
      await expect(store.ensureSchema()).rejects.toThrow(/version 0.*portcullis migrate/);
      await store.close();
    });

    it('migrates, and migrating again is a no-op', async () => {
      const first = await cli([], runMigrateCommand);
      expect(first.err).toBe('');
      expect(first.code).toBe(0);
      expect(first.out).toContain('migrated from version 0 to 1');
      const second = await cli([], runMigrateCommand);
      expect(second.code).toBe(0);
      expect(second.out).toContain('already at version 1');
      const rows = await admin.query(`SELECT component, version FROM "${SCHEMA}".schema_migrations`);
      expect(rows.rows).toEqual([{ component: 'keys', version: 1 }]);
    });

    it('concurrent migrations serialise instead of failing', async () => {
      const results = await Promise.all([cli([], runMigrateCommand), cli([], runMigrateCommand), cli([], runMigrateCommand)]);
      expect(results.map((r) => r.code)).toEqual([0, 0, 0]);
    });
  });

  describe('keys CLI', () => {
    beforeAll(() => cli([], runMigrateCommand));
    it('creates, lists, rotates and revokes against PostgreSQL', async () => {
      const created = await createKey('ci');
      const row = await admin.query(`SELECT key_hash, hash_algorithm, display_prefix FROM "${SCHEMA}".api_keys WHERE id = $1`, [created.id]);
      expect(row.rows[0].hash_algorithm).toBe('sha256');
      expect(row.rows[0].display_prefix).toBe(created.key.slice(0, 'portcullis_'.length + 6));
      expect(JSON.stringify(row.rows)).not.toContain(created.key);

      const listed = await cli(['list']);
      expect(listed.code).toBe(0);
      expect(listed.out).toContain(created.id);
      expect(listed.out).not.toContain(created.key);

      const rotated = await cli(['rotate', created.id, '--grace', '1h', '--json']);
      expect(rotated.code).toBe(0);
      const successor = JSON.parse(rotated.out) as { id: string; key: string };
      const old = await admin.query(`SELECT rotated_to, expires_at FROM "${SCHEMA}".api_keys WHERE id = $1`, [created.id]);
      expect(old.rows[0].rotated_to).toBe(successor.id);
      expect(Math.abs(old.rows[0].expires_at.getTime() - (Date.now() + 3_600_000))).toBeLessThan(60_000);

      expect((await cli(['revoke', successor.id])).code).toBe(0);
      const revoked = await admin.query(`SELECT revoked_at FROM "${SCHEMA}".api_keys WHERE id = $1`, [successor.id]);
      expect(revoked.rows[0].revoked_at).toBeInstanceOf(Date);
      expect((await cli(['revoke', 'does-not-exist'])).code).toBe(1);
    });
  });

  describe('serving', () => {
    let a: Instance;
    let b: Instance;
    beforeAll(async () => {
      await cli([], runMigrateCommand);
      a = await instance();
      b = await instance();
    });

    it('verifies keys on two replicas and answers the second request from the cache', async () => {
      const { key, id } = await createKey('replicated');
      const first = await a.check(key);
      expect(first.allowed).toBe(true);
      expect(first.principal).toMatchObject({ tenant: 'acme', subject: 'replicated', keyId: id, method: 'api-key' });
      expect((await b.check(key)).allowed).toBe(true);
      // The key's own creation NOTIFY may race with that first lookup; the cache fills either way.
      expect(await eventually(() => isCached(a, key), 1000)).toBe(true);
    });

    it('a revocation reaches the other replica within a second (LISTEN/NOTIFY, not the 60 s ttl)', async () => {
      const { key, id } = await createKey('revoked-elsewhere');
      expect((await a.check(key)).allowed).toBe(true);
      expect((await b.check(key)).allowed).toBe(true);
      expect((await cli(['revoke', id])).code).toBe(0);
      const seen = await eventually(async () => {
        const [da, db] = [await a.check(key), await b.check(key)];
        return !da.allowed && da.reason === 'key_revoked' && !db.allowed && db.reason === 'key_revoked';
      }, 1000);
      expect(seen).toBe(true);
    });

    it('unknown and expired keys are refused with their reasons', async () => {
      const unknown = await a.check(mintKey('portcullis_'));
      expect(unknown.allowed ? 'allowed' : unknown.reason).toBe('invalid_api_key');
      const { key } = await createKey('expiring');
      expect((await a.check(key)).allowed).toBe(true);
      a.runtime.clock.advance(31 * 86_400_000);
      const expired = await a.check(key);
      expect(expired.allowed ? 'allowed' : expired.reason).toBe('key_expired');
      a.runtime.clock.advance(-31 * 86_400_000);
    });

    it('writes last_used_at in batches without flushing the other replicas\' caches', async () => {
      const { key, id } = await createKey('used');
      expect((await a.check(key)).allowed).toBe(true);
      expect((await b.check(key)).allowed).toBe(true);
      const written = await eventually(async () => {
        const row = await admin.query(`SELECT last_used_at FROM "${SCHEMA}".api_keys WHERE id = $1`, [id]);
        return row.rows[0].last_used_at !== null;
      }, 5000);
      expect(written).toBe(true);
      expect(await eventually(() => isCached(b, key), 1000)).toBe(true);
      const misses = await counterValue(b.runtime, 'portcullis_apikey_cache_total', { result: 'miss' });
      // Another batch lands meanwhile; the replicas' caches must not be flushed by it.
      await new Promise((resolve) => setTimeout(resolve, 1200));
      expect(isCached(b, key)).toBe(true);
      expect(await counterValue(b.runtime, 'portcullis_apikey_cache_total', { result: 'miss' })).toBe(misses);
    });

    it('writes a large last_used_at batch in chunks, never moving a time backwards', async () => {
      const ids = [(await createKey('chunk-1')).id, (await createKey('chunk-2')).id, (await createKey('chunk-3')).id];
      const store = new PostgresKeyStore({ url: DATABASE_URL, schema: SCHEMA, poolSize: 1, connectTimeoutMs: 1000, lastUsedFlushMs: 3_600_000, listen: false, logger: silentLogger() });
      try {
        const at = Date.UTC(2026, 5, 1, 12, 0, 0, 123);
        // 2,600 marks, the real keys in three different chunks of 1,000.
        for (let n = 0; n < 2600; n++) store.markUsed(n % 1000 === 500 ? ids[Math.floor(n / 1000)]! : `unknown-${n}`, at + n);
        await store.flushUsage();
        const read = async () => (await admin.query(`SELECT id, last_used_at FROM "${SCHEMA}".api_keys WHERE id = ANY($1) ORDER BY last_used_at`, [ids])).rows.map((r) => (r.last_used_at as Date).getTime());
        expect(await read()).toEqual([at + 500, at + 1500, at + 2500]);
        store.markUsed(ids[0]!, at - 60_000);
        store.markUsed(ids[1]!, at + 9000);
        await store.flushUsage();
        expect(await read()).toEqual([at + 500, at + 2500, at + 9000]);
        // 10,000 keys waiting: written without waiting for the (hour-long) timer.
        store.markUsed(ids[0]!, at + 20_000);
        for (let n = 0; n < 9_998; n++) store.markUsed(`unknown-${n}`, at);
        expect(await eventually(async () => (await read()).includes(at + 20_000), 300)).toBe(false);
        store.markUsed('unknown-last', at);
        expect(await eventually(async () => (await read()).includes(at + 20_000), 5000)).toBe(true);
      } finally {
        await store.close();
      }
    });

    it('recovers from terminated connections without a restart', async () => {
      const { key: cachedKey } = await createKey('cached-before-kill');
      expect((await a.check(cachedKey)).allowed).toBe(true);
      await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE $1`, [`%${SCHEMA}%`]);
      expect((await a.check(cachedKey)).allowed).toBe(true);
      const { key: fresh, id } = await createKey('after-kill');
      expect(await eventually(async () => (await a.check(fresh)).allowed, 3000)).toBe(true);
      // The listener reconnected: revocations propagate again.
      expect((await cli(['revoke', id])).code).toBe(0);
      expect(await eventually(async () => !(await a.check(fresh)).allowed, 3000)).toBe(true);
    });
  });

  describe('outage', () => {
    const target = new URL(DATABASE_URL);
    const proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
    let node: Instance;
    beforeAll(async () => {
      await cli([], runMigrateCommand);
      const port = await proxy.start();
      const viaProxy = new URL(DATABASE_URL);
      viaProxy.port = String(port);
      node = await instance(viaProxy.toString(), '200ms');
    });
    afterAll(() => proxy.down());

    it('keeps cached keys working, refuses uncached ones with a bounded 503, and recovers', async () => {
      const known = await createKey('known');
      const unknownYet = await createKey('first-seen-during-outage');
      expect((await node.check(known.key)).allowed).toBe(true);
      expect(await eventually(() => isCached(node, known.key), 1000)).toBe(true);

      await proxy.down(); // connection refused
      expect((await node.check(known.key)).allowed).toBe(true);
      let started = performance.now();
      const refused = await node.check(unknownYet.key);
      expect(refused.allowed ? 'allowed' : refused.reason).toBe('store_unavailable');
      expect(refused.allowed ? 0 : refused.status).toBe(503);
      expect(performance.now() - started).toBeLessThan(1000);

      proxy.blackhole(); // accepts, never answers: the slow-database case
      await proxy.up();
      proxy.blackhole();
      started = performance.now();
      const slow = await node.check(unknownYet.key);
      expect(slow.allowed ? 'allowed' : slow.reason).toBe('store_unavailable');
      expect(performance.now() - started).toBeLessThan(1000);

      // Past the ttl, the cached key is served stale while the store cannot be reached.
      node.runtime.clock.advance(61_000);
      const staleAnswer = await node.check(known.key);
      expect(staleAnswer.allowed ? 'allowed' : `${staleAnswer.reason} ${staleAnswer.detail}`).toBe('allowed');

      await proxy.up();
      expect(await eventually(async () => (await node.check(unknownYet.key)).allowed, 5000)).toBe(true);
      // The listener is back too: a revocation propagates without the ttl.
      expect((await cli(['revoke', unknownYet.id])).code).toBe(0);
      expect(await eventually(async () => !(await node.check(unknownYet.key)).allowed, 7000)).toBe(true);
    });
  });
});
