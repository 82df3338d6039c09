// Keeps checks from queueing behind a dead or slow backend: after `failures` consecutive failures
// the breaker opens and callers skip the backend for `cooldownMs`; then exactly one probe is let
// through (half-open); its success closes the breaker, its failure opens it again.

import type { Clock } from '../clock.js';

export type BreakerState = 'closed' | 'open' | 'half-open';

/** Gauge values for portcullis_ratelimit_circuit_state. */
export const BREAKER_STATE_VALUE: Readonly<Record<BreakerState, number>> = { closed: 0, open: 1, 'half-open': 2 };

export class CircuitBreaker {
  private current: BreakerState = 'closed';
  private consecutiveFailures = 0;
  private openedAt = 0;

  constructor(
    private readonly clock: Clock,
    private readonly failureThreshold: number,
    private readonly cooldownMs: number,
    private readonly onChange: (state: BreakerState) => void = () => {},
  ) {}

  get state(): BreakerState {
    return this.current;
  }

  /** Whether a call may go to the backend now. In half-open state only the one probe may. */
  tryAcquire(): boolean {
    if (this.current === 'closed') return true;
    if (this.current === 'open' && this.clock.now() - this.openedAt >= this.cooldownMs) {
      this.transition('half-open');
      return true;
    }
    return false;
  }

  /** Milliseconds until the next probe may go out (0 when closed). */
  retryAfterMs(): number {
    if (this.current !== 'open') return this.current === 'closed' ? 0 : this.cooldownMs;
    return Math.max(0, this.openedAt + this.cooldownMs - this.clock.now());
  }

  success(): void {
    this.consecutiveFailures = 0;
    if (this.current !== 'closed') this.transition('closed');
  }

  failure(): void {
    this.consecutiveFailures++;
    if (this.current === 'half-open' || (this.current === 'closed' && this.consecutiveFailures >= this.failureThreshold)) {
      this.openedAt = this.clock.now();
      this.transition('open');
    }
  }

  private transition(state: BreakerState): void {
    this.current = state;
    this.onChange(state);
  }
}
