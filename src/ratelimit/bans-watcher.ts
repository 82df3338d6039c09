// Keeps the server's in-memory ban list in step with the store: re-read every `refresh` (for a
// file only when it changed), expired bans dropped on every tick. A failed read keeps the last
// good list; before the first good read the list reports 'unavailable' (the policy's failure mode).
//
// Automatic bans (escalation) are written through here: enforced by this instance at once, written
// to the store in the background and retried until the store takes them (pending writes are a
// gauge), then every instance picks them up on its next refresh. When an automatic ban disappears
// from the store (`portcullis bans remove`), the registered listeners reset its offence count.

import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { AUTOMATIC_BAN_AUTHOR, BanList, formatBanTarget, sameBanTarget, type BanRecord, type BanStore } from './bans.js';

/** Automatic bans waiting for the store, at most (beyond: dropped and logged; the lockouts still apply). */
const MAX_PENDING = 10_000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;

/** Called with an automatic ban that was in the store and is not any more. */
export type LiftedListener = (record: BanRecord) => void;

export class BanWatcher {
  readonly list = new BanList();
  /** Settles after the first read attempt, successful or not (readiness must not hang on it). */
  readonly firstAttempt: Promise<void>;
  private records: readonly BanRecord[] = [];
  private lastVersion: string | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly size;
  private readonly errors;
  private readonly pendingGauge;
  private readonly writes;
  private refreshing: Promise<void> | undefined;
  /** Automatic bans written by this instance and not yet accepted by the store. */
  private readonly pending: BanRecord[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  private writing = false;
  private closed = false;
  /** Keyed by owner (one per rate-limit store and key prefix), so reloads replace instead of adding. */
  private readonly liftedListeners = new Map<string, LiftedListener>();

  constructor(
    readonly store: BanStore,
    refreshMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    metrics: Metrics,
  ) {
    this.size = metrics.gauge('portcullis_ratelimit_bans', 'Bans in force.', []);
    this.errors = metrics.counter('portcullis_ratelimit_bans_refresh_errors_total', 'Failed reads of the ban store (the last good list stays in force).', []);
    this.pendingGauge = metrics.gauge('portcullis_ratelimit_ban_writes_pending', 'Automatic bans enforced by this instance and not yet written to the ban store (retried).', []);
    this.pendingGauge.set(0);
    this.writes = metrics.counter('portcullis_ratelimit_ban_writes_total', 'Writes of automatic bans to the ban store, by result (ok, error, dropped).', ['result']);
    this.firstAttempt = this.refresh();
    this.timer = setInterval(() => void this.refresh(), refreshMs);
    this.timer.unref();
  }

  /** Re-read now (the CLI's changes become visible without waiting for the next tick). */
  refresh(): Promise<void> {
    this.refreshing ??= this.read().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** Register what to do when an automatic ban is lifted; `owner` replaces an earlier listener. */
  onLifted(owner: string, listener: LiftedListener): void {
    this.liftedListeners.set(owner, listener);
  }

  /** Enforce `record` here now and write it to the store (retried until it is accepted). */
  ban(record: BanRecord): void {
    if (this.closed) return;
    if (this.pending.length >= MAX_PENDING) {
      this.writes.inc({ result: 'dropped' });
      this.logger.error({ ban: formatBanTarget(record) }, 'too many automatic bans waiting for the ban store; this one is dropped (its lockouts still apply)');
      return;
    }
    this.pending.push(record);
    this.pendingGauge.set(this.pending.length);
    // Before the first good read the list stays 'unavailable'; the read merges pending bans in.
    if (this.list.isLoaded) this.apply();
    void this.flush();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.store.close();
  }

  private async flush(): Promise<void> {
    if (this.writing || this.closed) return;
    this.writing = true;
    try {
      while (this.pending.length > 0 && !this.closed) {
        const record = this.pending[0]!;
        try {
          await this.store.put(record);
        } catch (err) {
          this.writes.inc({ result: 'error' });
          this.logger.warn({ err: (err as Error).message, ban: formatBanTarget(record), pending: this.pending.length, retryInMs: this.retryMs }, 'automatic ban not written to the ban store; retrying');
          this.retryTimer = setTimeout(() => void this.flush(), this.retryMs);
          this.retryTimer.unref();
          this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
          return;
        }
        this.writes.inc({ result: 'ok' });
        this.logger.warn({ ban: formatBanTarget(record), reason: record.reason, offences: record.offences }, 'automatic ban written');
        this.pending.shift();
        this.pendingGauge.set(this.pending.length);
        this.retryMs = RETRY_MIN_MS;
      }
    } finally {
      this.writing = false;
    }
    await this.refresh();
  }

  private async read(): Promise<void> {
    try {
      const version = this.store.version ? await this.store.version() : undefined;
      if (version === undefined || version !== this.lastVersion || !this.list.isLoaded) {
        const next = await this.store.list();
        const wasLoaded = this.list.isLoaded;
        const previous = this.records;
        this.records = next;
        this.lastVersion = version;
        if (wasLoaded) this.noticeLifted(previous, next);
      }
      this.apply();
    } catch (err) {
      this.errors.inc();
      this.logger.warn({ err: (err as Error).message, loaded: this.list.isLoaded }, 'ban list refresh failed');
    }
  }

  /** The store's bans plus this instance's pending automatic bans. */
  private apply(): void {
    this.list.replace(this.pending.length === 0 ? this.records : [...this.records, ...this.pending], this.clock.now());
    this.size.set(this.list.size);
  }

  private noticeLifted(previous: readonly BanRecord[], next: readonly BanRecord[]): void {
    if (this.liftedListeners.size === 0) return;
    for (const record of previous) {
      if (record.createdBy !== AUTOMATIC_BAN_AUTHOR || record.source === undefined) continue;
      if (next.some((r) => sameBanTarget(r, record))) continue;
      for (const listener of this.liftedListeners.values()) {
        try {
          listener(record);
        } catch (err) {
          this.logger.error({ err: (err as Error).message }, 'resetting the offences of a lifted ban failed');
        }
      }
    }
  }
}
