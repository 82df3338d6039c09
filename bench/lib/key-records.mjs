// API keys for the memory benches (bench/memory.mjs, bench/cache-footprint.mjs): minted with the
// built key modules (dist/keys), far faster than one `portcullis keys create` per key, and stored
// in a PostgreSQL schema of the bench's own, made with `portcullis migrate` and dropped after.

import crypto from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { runToCompletion } from './processes.mjs';
import { ROOT } from './proto.mjs';

export const DATABASE_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const CLI = path.join(ROOT, 'dist', 'cli.js');

/** `count` distinct keys and the store records of them (tenant, one scope, valid for a day). */
export async function mintKeys(count, { tenant, scope, name = 'bench' }) {
  const { mintKey, displayPrefixOf } = await import(path.join(ROOT, 'dist', 'keys', 'format.js'));
  const { KeyHasher } = await import(path.join(ROOT, 'dist', 'keys', 'hashing.js'));
  const hasher = new KeyHasher();
  const now = Date.now();
  const keys = [];
  const records = [];
  for (let i = 0; i < count; i++) {
    const key = mintKey('portcullis_');
    keys.push(key);
    records.push({
      id: crypto.randomUUID(),
      tenant,
      name: `${name}-${i}`,
      scopes: [scope],
      prefix: 'portcullis_',
      displayPrefix: displayPrefixOf(key, 'portcullis_'),
      ...hasher.forStorage(key),
      createdAt: now,
      expiresAt: now + 86_400_000,
    });
  }
  return { keys, records };
}

/** Create `schema` with `portcullis migrate` and insert `records` in batches. */
export async function fillPostgres(schema, records) {
  const migrate = await runToCompletion({ command: process.execPath, args: [CLI, 'migrate', '--store', DATABASE_URL, '--schema', schema], env: process.env, timeoutMs: 60_000, cwd: ROOT });
  if (migrate.code !== 0) throw new Error(`portcullis migrate failed: ${(migrate.stderr || migrate.stdout).trim().split('\n')[0]}`);
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    for (let i = 0; i < records.length; i += 2000) {
      const batch = records.slice(i, i + 2000);
      const column = (pick) => batch.map(pick);
      await client.query(
        `INSERT INTO "${schema}".api_keys (id, tenant, name, scopes, key_prefix, display_prefix, hash_algorithm, key_hash, created_at, expires_at)
         SELECT id, tenant, name, ARRAY[scope], key_prefix, display_prefix, hash_algorithm, key_hash, to_timestamp(created_at / 1000.0), to_timestamp(expires_at / 1000.0)
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::float8[], $10::float8[])
           AS t(id, tenant, name, scope, key_prefix, display_prefix, hash_algorithm, key_hash, created_at, expires_at)`,
        [column((r) => r.id), column((r) => r.tenant), column((r) => r.name), column((r) => r.scopes[0]), column((r) => r.prefix), column((r) => r.displayPrefix), column((r) => r.hashAlgorithm), column((r) => r.hash), column((r) => r.createdAt), column((r) => r.expiresAt)],
      );
    }
  } finally {
    await client.end();
  }
}

export async function dropSchema(schema) {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  try {
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } catch (error) {
    console.error(`could not drop schema ${schema}: ${error.message}`);
  } finally {
    await client.end().catch(() => {});
  }
}
