// One log line per interval for an event that can repeat without bound (undecodable requests, a dead
// backend, failed key lookups): every occurrence is counted (in a metric, if given), at most one
// line per interval is written, and that line says how many were not logged since the last one.
// A flood costs a counter increment per event, never a log write per event.

import type { Clock } from '../clock.js';
import type { Logger } from './logger.js';

/** Default interval between two lines of one ThrottledLog. */
export const THROTTLED_LOG_INTERVAL_MS = 10_000;

export interface ThrottledLogOptions {
  readonly logger: Logger;
  readonly clock: Clock;
  /** Level of the lines written. */
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  /** The line's message (constant: the fields carry the details). */
  readonly message: string;
  /** At most one line per this many ms (default 10 s). */
  readonly intervalMs?: number;
  /** Incremented on every occurrence, logged or not. */
  readonly counter?: { inc(value?: number): void };
}

/**
 * Rate-limited logging of one kind of event. The first occurrence is logged at once; later ones
 * within `intervalMs` only count; the next occurrence after the interval is logged with
 * `suppressed: n` (the occurrences not logged in between). No timer: nothing to close.
 */
export class ThrottledLog {
  private readonly intervalMs: number;
  private lastLogged = Number.NEGATIVE_INFINITY;
  private suppressed = 0;

  constructor(private readonly options: ThrottledLogOptions) {
    this.intervalMs = options.intervalMs ?? THROTTLED_LOG_INTERVAL_MS;
  }

  /**
   * Count one occurrence; log it (with `fields` and the suppressed count) unless a line was
   * written less than an interval ago. `fields` is built only when the line is written, so pass a
   * function when building it costs something. Returns whether a line was written.
   */
  note(fields?: Record<string, unknown> | (() => Record<string, unknown>)): boolean {
    this.options.counter?.inc();
    const now = this.options.clock.now();
    if (now - this.lastLogged < this.intervalMs) {
      this.suppressed++;
      return false;
    }
    const { logger, level, message } = this.options;
    const extra = typeof fields === 'function' ? fields() : fields;
    logger[level]({ ...extra, suppressed: this.suppressed }, message);
    this.lastLogged = now;
    this.suppressed = 0;
    return true;
  }

  /** Occurrences counted but not logged since the last line. */
  get pending(): number {
    return this.suppressed;
  }
}
