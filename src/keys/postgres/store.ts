// The PostgreSQL key store. Lookups are one indexed query; last_used_at is written in batches off
// the request path; changes reach every replica through LISTEN/NOTIFY (listener.ts). The pool
// reconnects by itself, so the store recovers from an outage without a restart.

import pg from 'pg';
import { PortcullisError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import type { KeyRecord } from '../record.js';
import type { KeyAdminStore, KeyChange, KeyMutation, KeyStore, LookupQuery } from '../store.js';
import { recordProblem } from '../file-format.js';
import { ChangeListener } from './listener.js';
import { changeChannel, installedVersion, KEYS_SCHEMA_VERSION, quoteIdentifier } from './migrations.js';

export interface PostgresKeyStoreOptions {
  readonly url: string;
  readonly schema: string;
  readonly poolSize: number;
  readonly connectTimeoutMs: number;
  /** 0: last_used_at is not written (CLI). */
  readonly lastUsedFlushMs: number;
  /** Subscribe to changes made elsewhere (server); the CLI does not. */
  readonly listen: boolean;
  readonly logger: Logger;
  readonly onListenerState?: (connected: boolean) => void;
  /** Server-side limit for one statement (the request path gives up much earlier on its own). */
  readonly statementTimeoutMs?: number;
}

interface KeyRow {
  id: string;
  tenant: string;
  name: string;
  scopes: string[];
  environment: string | null;
  key_prefix: string;
  display_prefix: string;
  hash_algorithm: KeyRecord['hashAlgorithm'];
  key_hash: string;
  created_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  last_used_at: Date | null;
  rotated_to: string | null;
}

const COLUMNS =
  'id, tenant, name, scopes, environment, key_prefix, display_prefix, hash_algorithm, key_hash, created_at, expires_at, revoked_at, last_used_at, rotated_to';

function toRecord(row: KeyRow): KeyRecord {
  return Object.freeze({
    id: row.id,
    tenant: row.tenant,
    name: row.name,
    scopes: Object.freeze([...row.scopes]),
    prefix: row.key_prefix,
    displayPrefix: row.display_prefix,
    hashAlgorithm: row.hash_algorithm,
    hash: row.key_hash,
    createdAt: row.created_at.getTime(),
    expiresAt: row.expires_at.getTime(),
    ...(row.environment !== null && { environment: row.environment }),
    ...(row.revoked_at !== null && { revokedAt: row.revoked_at.getTime() }),
    ...(row.last_used_at !== null && { lastUsedAt: row.last_used_at.getTime() }),
    ...(row.rotated_to !== null && { rotatedTo: row.rotated_to }),
  });
}

function toParams(r: KeyRecord): unknown[] {
  return [
    r.id,
    r.tenant,
    r.name,
    [...r.scopes],
    r.environment ?? null,
    r.prefix,
    r.displayPrefix,
    r.hashAlgorithm,
    r.hash,
    new Date(r.createdAt),
    new Date(r.expiresAt),
    r.revokedAt !== undefined ? new Date(r.revokedAt) : null,
    r.rotatedTo ?? null,
  ];
}

/** Keys per last_used_at UPDATE. */
const USAGE_CHUNK = 1000;
/** Keys waiting for last_used_at at which it is written before the timer fires. */
const EARLY_FLUSH_AT = 10_000;

export class PostgresKeyStore implements KeyStore, KeyAdminStore {
  readonly kind = 'postgres';
  /** Bcrypt records may exist in any database; the query covers them at no extra round trip. */
  readonly mayHoldBcrypt = true;
  readonly schema: string;
  private readonly pool: pg.Pool;
  private readonly table: string;
  private readonly lookupStatement: { name: string; text: string };
  private readonly listeners = new Set<(change: KeyChange) => void>();
  private readonly listener: ChangeListener | undefined;
  private readonly logger: Logger;
  private pendingUsage = new Map<string, number>();
  private flushing: Promise<void> | undefined;
  /** The last write of last_used_at failed: only the timer retries (no early flushes meanwhile). */
  private usageFailing = false;
  private readonly flushTimer: NodeJS.Timeout | undefined;
  /** One connection for re-reading cached keys while notifications cannot be trusted (opened on first use). */
  private recheckPool: pg.Pool | undefined;
  private closed = false;
  private schemaCheck: Promise<void> | undefined;

  constructor(private readonly options: PostgresKeyStoreOptions) {
    this.schema = options.schema;
    this.logger = options.logger;
    this.table = `${quoteIdentifier(options.schema)}.api_keys`;
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize,
      connectionTimeoutMillis: options.connectTimeoutMs,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: `portcullis-keys:${options.schema}`,
      statement_timeout: options.statementTimeoutMs ?? 5000,
      query_timeout: (options.statementTimeoutMs ?? 5000) + 1000,
    });
    // An idle connection that dies (server restart, pg_terminate_backend) is dropped from the pool;
    // without this handler the error would crash the process.
    this.pool.on('error', (err) => this.logger.warn({ err: err.message }, 'key store connection lost; the pool will reconnect'));
    this.lookupStatement = {
      name: `portcullis-key-lookup-${options.schema}`,
      text: `SELECT ${COLUMNS} FROM ${this.table}
             WHERE (hash_algorithm <> 'bcrypt' AND key_hash = ANY($1::text[]))
                OR (hash_algorithm = 'bcrypt' AND display_prefix = ANY($2::text[]))`,
    };
    if (options.listen) {
      this.listener = new ChangeListener({
        url: options.url,
        channel: changeChannel(options.schema),
        connectTimeoutMs: options.connectTimeoutMs,
        logger: options.logger,
        onNotify: (payload) => this.onNotify(payload),
        onResync: () => this.emit({ kind: 'all' }),
        onStateChange: options.onListenerState,
      });
    }
    if (options.lastUsedFlushMs > 0) {
      this.flushTimer = setInterval(() => void this.flushUsage(), options.lastUsedFlushMs);
      this.flushTimer.unref();
    }
  }

  get listenerConnected(): boolean {
    return this.listener?.isConnected ?? false;
  }

  /** Lookups at once: the pool's size (more would only queue in the pool, unfairly: FIFO). */
  get lookupConcurrency(): number {
    return this.options.poolSize;
  }

  changesTrusted(): boolean {
    return this.listener?.trusted ?? false;
  }

  /**
   * Current records of `ids`, on a connection of its own: a spray of lookups queued on the pool
   * cannot delay it. Statements are short (by primary key) and bounded by a 2 s timeout.
   */
  async recheck(ids: readonly string[]): Promise<readonly KeyRecord[]> {
    if (this.closed) throw new PortcullisError('STORE_UNAVAILABLE', 'key store closed');
    this.recheckPool ??= this.openRecheckPool();
    const result = await this.recheckPool.query<KeyRow>(`SELECT ${COLUMNS} FROM ${this.table} WHERE id = ANY($1::text[])`, [[...ids]]);
    return result.rows.map(toRecord);
  }

  private openRecheckPool(): pg.Pool {
    const pool = new pg.Pool({
      connectionString: this.options.url,
      max: 1,
      connectionTimeoutMillis: Math.min(this.options.connectTimeoutMs, 2000),
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: `portcullis-key-recheck:${this.options.schema}`,
      statement_timeout: 2000,
      query_timeout: 2500,
    });
    pool.on('error', (err) => this.logger.debug({ err: err.message }, 'key recheck connection lost'));
    return pool;
  }

  async lookup(query: LookupQuery): Promise<readonly KeyRecord[]> {
    const result = await this.pool.query<KeyRow>({ ...this.lookupStatement, values: [query.digests, query.bcryptPrefixes] });
    return result.rows.map(toRecord);
  }

  markUsed(id: string, at: number): void {
    if (this.options.lastUsedFlushMs <= 0) return;
    this.pendingUsage.set(id, at);
    // Many distinct keys in use: write early rather than hold them all until the timer.
    if (this.pendingUsage.size >= EARLY_FLUSH_AT && this.flushing === undefined && !this.usageFailing) void this.flushUsage();
  }

  /**
   * Write the last_used_at batch collected since the previous flush, USAGE_CHUNK keys per UPDATE:
   * 100k keys in use would otherwise make one statement of several megabytes (and as many Date
   * objects) at once.
   */
  flushUsage(): Promise<void> {
    this.flushing ??= this.writePendingUsage().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  private async writePendingUsage(): Promise<void> {
    if (this.pendingUsage.size === 0) return;
    const batch = this.pendingUsage;
    this.pendingUsage = new Map();
    try {
      let ids: string[] = [];
      let times: number[] = [];
      for (const [id, at] of batch) {
        ids.push(id);
        times.push(at);
        if (ids.length < USAGE_CHUNK) continue;
        await this.writeUsage(ids, times);
        ids = [];
        times = [];
      }
      if (ids.length > 0) await this.writeUsage(ids, times);
      this.usageFailing = false;
    } catch (err) {
      this.usageFailing = true;
      // Keep the newest times for the next flush unless newer ones arrived meanwhile (chunks
      // already written are written again: an older time never overwrites a newer one).
      for (const [id, at] of batch) if (!this.pendingUsage.has(id)) this.pendingUsage.set(id, at);
      this.logger.warn({ err: (err as Error).message, keys: batch.size }, 'could not write last_used_at; will retry');
    }
  }

  private async writeUsage(ids: readonly string[], epochMs: readonly number[]): Promise<void> {
    await this.pool.query(
      `UPDATE ${this.table} AS k SET last_used_at = to_timestamp(u.ms / 1000.0)
         FROM unnest($1::text[], $2::float8[]) AS u(id, ms)
        WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < to_timestamp(u.ms / 1000.0))`,
      [ids, epochMs],
    );
  }

  subscribe(listener: (change: KeyChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private onNotify(payload: string): void {
    const colon = payload.indexOf(':');
    const operation = payload.slice(0, colon);
    const id = payload.slice(colon + 1);
    // Anything unexpected is treated as "everything may have changed".
    if (colon < 0 || id === '' || !['INSERT', 'UPDATE', 'DELETE'].includes(operation)) this.emit({ kind: 'all' });
    else this.emit({ kind: 'key', id, created: operation === 'INSERT' });
  }

  private emit(change: KeyChange): void {
    for (const listener of this.listeners) listener(change);
  }

  /**
   * The schema check, run once per store and shared by every policy compile that uses it; a
   * failed check is forgotten, so a reload after `portcullis migrate` checks again.
   */
  ensureSchema(): Promise<void> {
    if (this.schemaCheck === undefined) {
      const check = this.checkSchema();
      this.schemaCheck = check;
      check.catch(() => {
        if (this.schemaCheck === check) this.schemaCheck = undefined;
      });
    }
    return this.schemaCheck;
  }

  /**
   * Resolves once the key tables are at the version this build needs. Connection failures are
   * retried (the server stays not-ready meanwhile); an unmigrated schema rejects at once.
   */
  async checkSchema(retryMs = 1000): Promise<void> {
    for (;;) {
      let version: number;
      try {
        version = await installedVersion(this.pool, this.schema);
      } catch (err) {
        if (this.closed) throw new PortcullisError('STORE_UNAVAILABLE', 'key store closed');
        this.logger.warn({ err: (err as Error).message }, 'key store not reachable; retrying the schema check');
        await new Promise((resolve) => setTimeout(resolve, retryMs).unref());
        continue;
      }
      if (version < KEYS_SCHEMA_VERSION) {
        throw new PortcullisError(
          'STORE_UNAVAILABLE',
          `key store schema "${this.schema}" is at version ${version}, this Portcullis needs ${KEYS_SCHEMA_VERSION}: run \`portcullis migrate\``,
        );
      }
      if (version > KEYS_SCHEMA_VERSION) {
        this.logger.warn({ version, expected: KEYS_SCHEMA_VERSION }, 'key store schema is newer than this Portcullis; continuing');
      }
      return;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.flushTimer) clearInterval(this.flushTimer);
    await this.listener?.close();
    await this.flushing;
    await this.flushUsage();
    this.listeners.clear();
    await this.recheckPool?.end().catch(() => undefined);
    await this.pool.end();
  }

  // ---- admin (CLI) ----

  async insert(record: KeyRecord): Promise<void> {
    checkRecord(record);
    try {
      await this.pool.query(
        `INSERT INTO ${this.table} (id, tenant, name, scopes, environment, key_prefix, display_prefix, hash_algorithm, key_hash,
                                    created_at, expires_at, revoked_at, rotated_to)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
        toParams(record),
      );
    } catch (err) {
      throw translate(err, record.id);
    }
  }

  async list(filter: { tenant?: string } = {}): Promise<KeyRecord[]> {
    const result = await this.pool
      .query<KeyRow>(`SELECT ${COLUMNS} FROM ${this.table} WHERE ($1::text IS NULL OR tenant = $1) ORDER BY created_at, id`, [filter.tenant ?? null])
      .catch((err: unknown) => Promise.reject(translate(err)));
    return result.rows.map(toRecord);
  }

  async get(id: string): Promise<KeyRecord | undefined> {
    const result = await this.pool.query<KeyRow>(`SELECT ${COLUMNS} FROM ${this.table} WHERE id = $1`, [id]).catch((err: unknown) => Promise.reject(translate(err)));
    return result.rows[0] ? toRecord(result.rows[0]) : undefined;
  }

  async mutate(id: string, mutate: (current: KeyRecord) => KeyMutation): Promise<KeyMutation> {
    const client = await this.pool.connect().catch((err: unknown) => Promise.reject(translate(err)));
    try {
      await client.query('BEGIN');
      const current = await client.query<KeyRow>(`SELECT ${COLUMNS} FROM ${this.table} WHERE id = $1 FOR UPDATE`, [id]);
      if (!current.rows[0]) throw new PortcullisError('NOT_FOUND', `no key with id ${id}`);
      const mutation = mutate(toRecord(current.rows[0]));
      checkRecord(mutation.updated);
      if (mutation.added) {
        checkRecord(mutation.added);
        await client.query(
          `INSERT INTO ${this.table} (id, tenant, name, scopes, environment, key_prefix, display_prefix, hash_algorithm, key_hash,
                                      created_at, expires_at, revoked_at, rotated_to)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
          toParams(mutation.added),
        );
      }
      const u = mutation.updated;
      await client.query(
        `UPDATE ${this.table} SET tenant = $2, name = $3, scopes = $4, environment = $5, expires_at = $6, revoked_at = $7, rotated_to = $8
          WHERE id = $1`,
        [id, u.tenant, u.name, [...u.scopes], u.environment ?? null, new Date(u.expiresAt), u.revokedAt !== undefined ? new Date(u.revokedAt) : null, u.rotatedTo ?? null],
      );
      await client.query('COMMIT');
      return mutation;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw translate(err, id);
    } finally {
      client.release();
    }
  }
}

function checkRecord(record: KeyRecord): void {
  const problem = recordProblem(record);
  if (problem) throw new PortcullisError('CONFIG_INVALID', `key ${record.id}: ${problem.field} ${problem.message}`);
}

/** pg errors → PortcullisError with a stable code; our own errors pass through. */
function translate(err: unknown, id?: string): Error {
  if (err instanceof PortcullisError) return err;
  const code = (err as { code?: string }).code;
  const message = (err as Error).message;
  if (code === '23505') return new PortcullisError('STORE_CONFLICT', `a key with the same ${message.includes('digest') ? 'hash' : `id${id ? ` (${id})` : ''}`} already exists`, { cause: err });
  if (code === '42P01' || code === '3F000') return new PortcullisError('STORE_UNAVAILABLE', `key tables not found: run \`portcullis migrate\` (${message})`, { cause: err });
  return new PortcullisError('STORE_UNAVAILABLE', `key store: ${message}`, { cause: err });
}
