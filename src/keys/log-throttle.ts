// One warning line per interval for a failure that can repeat thousands of times a second (a
// failing key store under load): the first occurrence is logged at once, later ones only counted,
// and the next line (at most one per interval) says how many were left out. The count of every
// occurrence lives in a metric kept by the caller.
// TODO(lead): the minimal local version of src/observability/throttled-log.ts (branch
// h-transport, not on main when this was written), with the same constructor options and note();
// once that lands, import ThrottledLog from there and delete this file.

import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';

export const LOG_INTERVAL_MS = 10_000;

export interface ThrottledLogOptions {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly message: string;
  readonly intervalMs?: number;
}

export class ThrottledLog {
  private readonly intervalMs: number;
  private suppressed = 0;
  private lastLogged = Number.NEGATIVE_INFINITY;

  constructor(private readonly options: ThrottledLogOptions) {
    this.intervalMs = options.intervalMs ?? LOG_INTERVAL_MS;
  }

  /** Log this occurrence unless a line was written less than an interval ago (then only count it). */
  note(fields: Record<string, unknown>): boolean {
    const now = this.options.clock.now();
    if (now - this.lastLogged < this.intervalMs) {
      this.suppressed++;
      return false;
    }
    this.options.logger[this.options.level]({ ...fields, suppressed: this.suppressed }, this.options.message);
    this.suppressed = 0;
    this.lastLogged = now;
    return true;
  }
}
