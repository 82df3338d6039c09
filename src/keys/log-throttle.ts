// One warning line per interval for a failure that can repeat thousands of times a second (a
// failing key store under load): the first occurrence is logged at once, later ones only counted,
// and the next line (at most one per interval) says how many were left out. The count of every
// occurrence lives in a metric kept by the caller.
// TODO(lead): to be unified with the shared rate-limited log helper of src/observability
// (branch h-transport) once it lands.

import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';

export const LOG_INTERVAL_MS = 10_000;

export class ThrottledWarning {
  private suppressed = 0;
  private lastAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly logger: Logger,
    private readonly message: string,
    private readonly clock: Clock,
    private readonly intervalMs = LOG_INTERVAL_MS,
  ) {}

  warn(fields: Record<string, unknown>): void {
    const now = this.clock.now();
    if (now - this.lastAt < this.intervalMs && now >= this.lastAt) {
      this.suppressed++;
      return;
    }
    this.logger.warn({ ...fields, suppressed: this.suppressed, intervalMs: this.intervalMs }, this.message);
    this.suppressed = 0;
    this.lastAt = now;
  }
}
