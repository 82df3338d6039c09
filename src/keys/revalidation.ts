// Revalidation of cached keys while change notifications cannot be trusted. PostgreSQL delivers
// a revocation to every replica through LISTEN/NOTIFY within milliseconds, but only while the
// LISTEN connection is alive; a connection that died silently (a NAT or proxy dropped it without a
// reset) or that is reconnecting delivers nothing. So:
//   - the listener sends a heartbeat (SELECT 1) on its own connection every HEARTBEAT_INTERVAL_MS;
//     notifications count as trusted only while a heartbeat sent less than TRUST_HORIZON_MS ago
//     has been answered (a NOTIFY committed before the heartbeat reached the server arrives before
//     its answer). Losing trust is cheap (revalidation below); the connection itself is given up
//     and replaced only after HEARTBEAT_TIMEOUT_MS without an answer, so a slow moment of the
//     database does not make the listener flap;
//   - while they are not trusted, and once after every reconnect, the verifier re-reads every
//     cached key by id (store.recheck, on a connection of its own that lookups never queue on)
//     every REVALIDATE_INTERVAL_MS and drops the keys that changed.
// Worst case from a revocation to its refusal: the trust horizon (1.5 s) plus one tick (0.25 s)
// plus the re-read itself, and never more than REVALIDATE_INTERVAL_MS plus the re-read once
// revalidation runs; REVOCATION_WINDOW_MS (README) leaves room for a slow re-read. Load does not
// lengthen it: the re-read does not go through the lookup queue and needs no request to trigger it.

import type { Logger } from '../observability/logger.js';

export const HEARTBEAT_INTERVAL_MS = 500;
/** Notifications are trusted while a heartbeat sent less than this long ago has been answered. */
export const TRUST_HORIZON_MS = 1500;
/** A heartbeat unanswered this long: the connection is dead; it is replaced. */
export const HEARTBEAT_TIMEOUT_MS = 2000;
export const REVALIDATE_INTERVAL_MS = 1000;
export const REVALIDATE_TICK_MS = 250;
/** Longest time from a revocation to its refusal while the LISTEN connection is dead (README). */
export const REVOCATION_WINDOW_MS = 3000;

export interface RevalidatorOptions {
  /** Whether change notifications currently reach us (see above). */
  readonly trusted: () => boolean;
  /** One pass over the cached keys; rejects when the store cannot be read. */
  readonly pass: () => Promise<void>;
  readonly logger: Logger;
  readonly onPass?: (result: 'ok' | 'error') => void;
}

export class Revalidator {
  private resyncPending = false;
  private running = false;
  private lastStart = Number.NEGATIVE_INFINITY;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly options: RevalidatorOptions) {
    this.timer = setInterval(() => this.tick(false), REVALIDATE_TICK_MS);
    this.timer.unref();
  }

  /** Notifications may have been missed (listener reconnected): run a pass now. */
  resync(): void {
    this.resyncPending = true;
    this.tick(true);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
  }

  private tick(now: boolean): void {
    if (this.running || this.closed) return;
    if (!this.resyncPending && this.options.trusted()) return;
    if (!now && performance.now() - this.lastStart < REVALIDATE_INTERVAL_MS) return;
    void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    this.lastStart = performance.now();
    const wasResync = this.resyncPending;
    this.resyncPending = false;
    try {
      await this.options.pass();
      this.options.onPass?.('ok');
    } catch (err) {
      // The store cannot be read from here either: cached keys keep working (staleFor, as for
      // any store outage); the next tick tries again.
      if (wasResync) this.resyncPending = true;
      this.options.onPass?.('error');
      this.options.logger.debug({ err: (err as Error).message }, 'cached key revalidation failed');
    } finally {
      this.running = false;
    }
  }
}
