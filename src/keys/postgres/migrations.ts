// The PostgreSQL schema of the key store, created and migrated by `portcullis migrate`, and the
// check the server runs at start. Versions are recorded per component in schema_migrations so
// other Portcullis stores can share the schema and the table.

import type pg from 'pg';
import { PortcullisError } from '../../errors.js';

export const KEYS_COMPONENT = 'keys';

/** NOTIFY channel of key changes in `schema` (revocations reach every replica through it). */
export function changeChannel(schema: string): string {
  return `${schema}_api_keys`;
}

interface Migration {
  readonly version: number;
  readonly description: string;
  /** `schema` is the quoted schema name, `channel` the NOTIFY channel. */
  readonly sql: (schema: string, channel: string) => string;
}

export const KEY_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'api_keys table, lookup indexes, change notification trigger',
    sql: (s, channel) => `
CREATE TABLE ${s}.api_keys (
  id              text PRIMARY KEY,
  tenant          text NOT NULL,
  name            text NOT NULL,
  scopes          text[] NOT NULL DEFAULT '{}',
  environment     text,
  key_prefix      text NOT NULL,
  display_prefix  text NOT NULL,
  hash_algorithm  text NOT NULL CHECK (hash_algorithm IN ('sha256', 'hmac-sha256', 'bcrypt')),
  key_hash        text NOT NULL,
  created_at      timestamptz NOT NULL,
  expires_at      timestamptz NOT NULL,
  revoked_at      timestamptz,
  last_used_at    timestamptz,
  rotated_to      text REFERENCES ${s}.api_keys (id),
  CHECK (expires_at > created_at)
);
CREATE UNIQUE INDEX api_keys_digest ON ${s}.api_keys (key_hash) WHERE hash_algorithm <> 'bcrypt';
CREATE INDEX api_keys_bcrypt_prefix ON ${s}.api_keys (display_prefix) WHERE hash_algorithm = 'bcrypt';
CREATE INDEX api_keys_tenant ON ${s}.api_keys (tenant, created_at);

CREATE FUNCTION ${s}.api_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Payload "<INSERT|UPDATE|DELETE>:<id>"
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify(TG_ARGV[0], 'DELETE:' || OLD.id);
  ELSE
    PERFORM pg_notify(TG_ARGV[0], TG_OP || ':' || NEW.id);
  END IF;
  RETURN NULL;
END $$;

-- Every column but last_used_at: usage batches must not flush every replica's cache.
CREATE TRIGGER api_keys_changed
  AFTER INSERT OR DELETE OR UPDATE OF id, tenant, name, scopes, environment, key_prefix, display_prefix,
    hash_algorithm, key_hash, created_at, expires_at, revoked_at, rotated_to
  ON ${s}.api_keys FOR EACH ROW EXECUTE FUNCTION ${s}.api_keys_notify('${channel}');
`,
  },
];

export const KEYS_SCHEMA_VERSION = KEY_MIGRATIONS[KEY_MIGRATIONS.length - 1]!.version;

/** Schema names are validated by the policy schema; this guards the CLI path too. */
export function assertSchemaName(schema: string): void {
  if (!/^[a-z_][a-z0-9_]{0,39}$/.test(schema)) {
    throw new PortcullisError('CONFIG_INVALID', `invalid schema name "${schema}": use at most 40 lower-case letters, digits and _`);
  }
}

/** Schema names are validated to [a-z0-9_], so quoting cannot be escaped; it keeps reserved words usable. */
export function quoteIdentifier(name: string): string {
  assertSchemaName(name);
  return `"${name}"`;
}

/** Installed version of the key tables (0 when the schema or table does not exist). */
export async function installedVersion(client: pg.ClientBase | pg.Pool, schema: string): Promise<number> {
  assertSchemaName(schema);
  try {
    const result = await client.query<{ version: number }>(`SELECT version FROM ${quoteIdentifier(schema)}.schema_migrations WHERE component = $1`, [KEYS_COMPONENT]);
    return result.rows[0]?.version ?? 0;
  } catch (err) {
    if ((err as { code?: string }).code === '42P01' /* undefined_table */) return 0;
    throw err;
  }
}

export interface MigrationResult {
  readonly from: number;
  readonly to: number;
  readonly applied: readonly string[];
}

/** Create or migrate the key tables in one transaction, serialised across concurrent runs. */
export async function migrateKeySchema(client: pg.ClientBase, schema: string): Promise<MigrationResult> {
  assertSchemaName(schema);
  const quoted = quoteIdentifier(schema);
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`portcullis-migrate:${schema}`]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoted}`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${quoted}.schema_migrations (
      component   text PRIMARY KEY,
      version     integer NOT NULL,
      migrated_at timestamptz NOT NULL DEFAULT now())`);
    const from = await installedVersion(client, schema);
    if (from > KEYS_SCHEMA_VERSION) {
      throw new PortcullisError('CONFIG_INVALID', `schema ${schema} has key tables version ${from}, newer than this Portcullis (${KEYS_SCHEMA_VERSION})`);
    }
    const applied: string[] = [];
    for (const migration of KEY_MIGRATIONS) {
      if (migration.version <= from) continue;
      await client.query(migration.sql(quoted, changeChannel(schema)));
      applied.push(`${migration.version}: ${migration.description}`);
    }
    await client.query(
      `INSERT INTO ${quoted}.schema_migrations (component, version) VALUES ($1, $2)
       ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, migrated_at = now()`,
      [KEYS_COMPONENT, KEYS_SCHEMA_VERSION],
    );
    await client.query('COMMIT');
    return { from, to: KEYS_SCHEMA_VERSION, applied };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
