// SQL lookups: one parameterized query on a PostgreSQL pool; the credential (or its SHA-256) is
// $1, never interpolated. Every connection of the pool is opened read-only with a statement
// timeout (`default_transaction_read_only`, `statement_timeout` as startup options), so a query
// cannot write and cannot run past the lookup timeout on the server either — one round trip per
// lookup. The first row is the answer; no row means "not found".

import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Logger } from '../observability/logger.js';
import { LookupError, NOT_FOUND, type LookupTarget, type TargetAnswer } from './target.js';

export interface SqlTargetOptions {
  readonly url: string;
  readonly query: string;
  readonly param: 'credential' | 'sha256-hex' | 'sha256-base64url';
  readonly poolSize: number;
  readonly timeoutMs: number;
  readonly name: string;
}

export function sqlQueryProblem(query: string): string | undefined {
  if (!/\$1\b/.test(query)) return 'the query must use $1 (the credential or its hash)';
  if (/\$([2-9]|1\d)/.test(query)) return 'the query may use only $1';
  return undefined;
}

export class SqlTarget implements LookupTarget {
  readonly kind = 'sql' as const;
  private readonly pool: pg.Pool;

  constructor(
    private readonly options: SqlTargetOptions,
    logger: Logger,
  ) {
    const timeout = Math.max(1, Math.ceil(options.timeoutMs));
    const ours = `-c default_transaction_read_only=on -c statement_timeout=${timeout}`;
    this.pool = new pg.Pool({
      connectionString: withOptions(options.url, ours),
      max: options.poolSize,
      connectionTimeoutMillis: timeout,
      // Only a backstop for a connection that hangs: the lookup's own deadline (read after the
      // event loop has polled its sockets, deadline.ts) decides. pg's timer is a plain setTimeout,
      // which after a stall would throw away an answer that arrived in time.
      query_timeout: timeout + 1000,
      idleTimeoutMillis: 30_000,
      application_name: `portcullis-lookup-${options.name}`.slice(0, 63),
      options: ours,
    });
    // A connection killed while idle must not crash the process; the next query reconnects.
    this.pool.on('error', (err) => logger.warn({ lookup: options.name, err: err.message }, 'lookup database connection lost'));
  }

  async query(credential: string, signal: AbortSignal): Promise<TargetAnswer> {
    // PostgreSQL text cannot hold NUL: such a credential is nobody's (not an error for the breaker).
    if (this.options.param === 'credential' && credential.includes('\u0000')) return NOT_FOUND;
    const param =
      this.options.param === 'credential'
        ? credential
        : createHash('sha256').update(credential).digest(this.options.param === 'sha256-hex' ? 'hex' : 'base64url');
    if (signal.aborted) throw new LookupError('timed out', 'timeout');
    let result: pg.QueryResult;
    try {
      result = await this.pool.query({ text: this.options.query, values: [param] });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (signal.aborted || code === '57014' || /timeout/i.test((err as Error).message)) throw new LookupError('timed out', 'timeout');
      throw new LookupError(`query failed${code ? ` (${code})` : ''}`);
    }
    const row = result.rows[0] as Record<string, unknown> | undefined;
    return row === undefined ? NOT_FOUND : { found: true, value: row };
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/**
 * Options in the URL (`?options=-c …`) would replace ours (pg lets the connection string win), so
 * ours are appended to them: later `-c` settings win, a URL cannot turn read-only off.
 */
function withOptions(url: string, ours: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url;
  }
  const theirs = parsed.searchParams.get('options');
  parsed.searchParams.set('options', theirs ? `${theirs} ${ours}` : ours);
  return parsed.toString();
}
