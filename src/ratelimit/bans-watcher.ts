// Keeps the server's in-memory ban list in step with the store: re-read every `refresh` (for a
// file only when it changed), expired bans dropped on every tick. A failed read keeps the last
// good list; before the first good read the list reports 'unavailable' (the policy's failure mode).

import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { BanList, type BanRecord, type BanStore } from './bans.js';

export class BanWatcher {
  readonly list = new BanList();
  /** Settles after the first read attempt, successful or not (readiness must not hang on it). */
  readonly firstAttempt: Promise<void>;
  private records: readonly BanRecord[] = [];
  private lastVersion: string | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly size;
  private readonly errors;
  private refreshing: Promise<void> | undefined;

  constructor(
    readonly store: BanStore,
    refreshMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    metrics: Metrics,
  ) {
    this.size = metrics.gauge('portcullis_ratelimit_bans', 'Bans in force.', []);
    this.errors = metrics.counter('portcullis_ratelimit_bans_refresh_errors_total', 'Failed reads of the ban store (the last good list stays in force).', []);
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

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.store.close();
  }

  private async read(): Promise<void> {
    try {
      const version = this.store.version ? await this.store.version() : undefined;
      if (version === undefined || version !== this.lastVersion || !this.list.isLoaded) {
        this.records = await this.store.list();
        this.lastVersion = version;
      }
      this.list.replace(this.records, this.clock.now());
      this.size.set(this.list.size);
    } catch (err) {
      this.errors.inc();
      this.logger.warn({ err: (err as Error).message, loaded: this.list.isLoaded }, 'ban list refresh failed');
    }
  }
}
