// Bans in a Postgres table (seed 004: "permanent bans stored in Postgres"). The server only
// reads; `portcullis bans add` creates the table when it is missing.

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
}

export class PostgresBanStore implements BanStore {
  private readonly pool: pg.Pool;
  private readonly table: string;
  private readonly schema: string;
  private ensured = false;

  constructor(options: PostgresBanStoreOptions) {
    // Identifiers are validated by the policy schema / CLI (lower-case SQL identifiers).
    this.schema = `"${options.schema}"`;
    this.table = `${this.schema}."${options.table}"`;
    const timeout = options.queryTimeoutMs ?? 5000;
    this.pool = new pg.Pool({ connectionString: options.url, max: 2, connectionTimeoutMillis: timeout, query_timeout: timeout, idleTimeoutMillis: 30_000 });
    // An idle client losing its connection must not crash the process; the next query reports it.
    this.pool.on('error', () => {});
  }

  async list(): Promise<BanRecord[]> {
    const rows = await this.query<BanRow>(`SELECT kind, value, reason, created_at, expires_at, created_by FROM ${this.table} ORDER BY created_at, kind, value`, [], true);
    return rows.map((row) => ({
      kind: row.kind,
      value: row.value,
      ...(row.reason !== null ? { reason: row.reason } : {}),
      createdAt: row.created_at.toISOString(),
      ...(row.expires_at !== null ? { expiresAt: row.expires_at.toISOString() } : {}),
      ...(row.created_by !== null ? { createdBy: row.created_by } : {}),
    }));
  }

  async put(record: BanRecord): Promise<void> {
    await this.ensureTable();
    await this.query(
      `INSERT INTO ${this.table} (kind, value, reason, created_at, expires_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (kind, value) DO UPDATE SET reason = EXCLUDED.reason, created_at = EXCLUDED.created_at,
         expires_at = EXCLUDED.expires_at, created_by = EXCLUDED.created_by`,
      [record.kind, record.value, record.reason ?? null, record.createdAt, record.expiresAt ?? null, record.createdBy ?? null],
    );
  }

  async remove(target: BanTarget): Promise<boolean> {
    const rows = await this.query(`DELETE FROM ${this.table} WHERE kind = $1 AND value = $2 RETURNING kind`, [target.kind, target.value], true);
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
         PRIMARY KEY (kind, value)
       )`,
      [],
    );
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
