// Bans in a Postgres table (seed 004: "permanent bans stored in Postgres"). The server reads it and
// writes automatic bans (escalate); the first write (`portcullis bans add` or an automatic ban)
// creates the table when it is missing, and adds the escalation columns to an older one.

import pg from 'pg';
import { PortcullisError } from '../errors.js';
import type { BanKind, BanRecord, BanStore, BanTarget } from './bans.js';

export interface PostgresBanStoreOptions {
  readonly url: string;
  readonly schema: string;
  readonly table: string;
  /** Per-query deadline. */
  readonly queryTimeoutMs?: number;
}

interface BanRow {
  kind: BanKind;
  value: string;
  reason: string | null;
  created_at: Date;
  expires_at: Date | null;
  created_by: string | null;
  /** Columns added for automatic bans; absent in a table created before them (read with SELECT *). */
  route?: string | null;
  source?: string | null;
  first_offence?: Date | null;
  last_offence?: Date | null;
  offences?: number | null;
}

export class PostgresBanStore implements BanStore {
  private readonly pool: pg.Pool;
  private readonly table: string;
  private readonly schema: string;
  private readonly schemaName: string;
  private readonly tableName: string;
  private ensured = false;

  constructor(options: PostgresBanStoreOptions) {
    // Identifiers are validated by the policy schema / CLI (lower-case SQL identifiers).
    this.schemaName = options.schema;
    this.tableName = options.table;
    this.schema = `"${options.schema}"`;
    this.table = `${this.schema}."${options.table}"`;
    const timeout = options.queryTimeoutMs ?? 5000;
    this.pool = new pg.Pool({ connectionString: options.url, max: 2, connectionTimeoutMillis: timeout, query_timeout: timeout, idleTimeoutMillis: 30_000 });
    // An idle client losing its connection must not crash the process; the next query reports it.
    this.pool.on('error', () => {});
  }

  async list(): Promise<BanRecord[]> {
    // SELECT *: a table created before the escalation columns still reads (they are added on the next write).
    const rows = await this.query<BanRow>(`SELECT * FROM ${this.table} ORDER BY created_at, kind, value`, [], true);
    return rows.map((row) => ({
      kind: row.kind,
      value: row.value,
      ...(row.route ? { route: row.route } : {}),
      ...(row.reason !== null ? { reason: row.reason } : {}),
      createdAt: row.created_at.toISOString(),
      ...(row.expires_at !== null ? { expiresAt: row.expires_at.toISOString() } : {}),
      ...(row.created_by !== null ? { createdBy: row.created_by } : {}),
      ...(row.source ? { source: row.source } : {}),
      ...(row.first_offence ? { firstOffence: row.first_offence.toISOString() } : {}),
      ...(row.last_offence ? { lastOffence: row.last_offence.toISOString() } : {}),
      ...(row.offences !== null && row.offences !== undefined ? { offences: row.offences } : {}),
    }));
  }

  async put(record: BanRecord): Promise<void> {
    await this.ensureTable();
    await this.query(
      `INSERT INTO ${this.table} (kind, value, route, reason, created_at, expires_at, created_by, source, first_offence, last_offence, offences)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
       ON CONFLICT (kind, value, route) DO UPDATE SET reason = EXCLUDED.reason, created_at = EXCLUDED.created_at,
         expires_at = EXCLUDED.expires_at, created_by = EXCLUDED.created_by, source = EXCLUDED.source,
         first_offence = EXCLUDED.first_offence, last_offence = EXCLUDED.last_offence, offences = EXCLUDED.offences`,
      [
        record.kind, record.value, record.route ?? '', record.reason ?? null, record.createdAt, record.expiresAt ?? null, record.createdBy ?? null,
        record.source ?? null, record.firstOffence ?? null, record.lastOffence ?? null, record.offences ?? null,
      ],
    );
  }

  async remove(target: BanTarget): Promise<boolean> {
    await this.ensureTable();
    const rows = await this.query(`DELETE FROM ${this.table} WHERE kind = $1 AND value = $2 AND route = $3 RETURNING kind`, [target.kind, target.value, target.route ?? ''], true);
    return rows.length > 0;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  /** Create the schema and table when missing (CLI writes only). */
  async ensureTable(): Promise<void> {
    if (this.ensured) return;
    if (this.schema !== '"public"') await this.query(`CREATE SCHEMA IF NOT EXISTS ${this.schema}`, []);
    await this.query(
      `CREATE TABLE IF NOT EXISTS ${this.table} (
         kind text NOT NULL CHECK (kind IN ('ip', 'tenant', 'subject', 'apiKey')),
         value text NOT NULL,
         reason text,
         created_at timestamptz NOT NULL DEFAULT now(),
         expires_at timestamptz,
         created_by text,
         route text NOT NULL DEFAULT '',
         source text,
         first_offence timestamptz,
         last_offence timestamptz,
         offences integer,
         PRIMARY KEY (kind, value, route)
       )`,
      [],
    );
    // Tables created before automatic bans: add their columns, and the route to the key.
    const hasRoute = await this.query<{ n: string }>(
      `SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND column_name = 'route'`,
      [this.schemaName, this.tableName],
    );
    if (Number(hasRoute[0]?.n ?? 0) === 0) {
      await this.query(
        `ALTER TABLE ${this.table} ADD COLUMN route text NOT NULL DEFAULT '', ADD COLUMN IF NOT EXISTS source text,
           ADD COLUMN IF NOT EXISTS first_offence timestamptz, ADD COLUMN IF NOT EXISTS last_offence timestamptz,
           ADD COLUMN IF NOT EXISTS offences integer,
           DROP CONSTRAINT IF EXISTS "${this.tableName}_pkey", ADD PRIMARY KEY (kind, value, route)`,
        [],
      );
    }
    this.ensured = true;
  }

  /** `missingTableIsEmpty`: a table nobody has created yet holds no bans. */
  private async query<R extends pg.QueryResultRow>(text: string, values: unknown[], missingTableIsEmpty = false): Promise<R[]> {
    try {
      return (await this.pool.query<R>(text, values)).rows;
    } catch (err) {
      if (missingTableIsEmpty && (err as { code?: string }).code === '42P01') return [];
      throw new PortcullisError('STORE_UNAVAILABLE', `ban store (postgres): ${(err as Error).message}`, { cause: err });
    }
  }
}
