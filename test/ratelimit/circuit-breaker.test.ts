import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { CircuitBreaker, type BreakerState } from '../../src/ratelimit/circuit-breaker.js';

describe('circuit breaker', () => {
  it('opens after consecutive failures, lets one probe through after the cooldown, closes on its success', () => {
    const clock = new ManualClock();
    const changes: BreakerState[] = [];
    const breaker = new CircuitBreaker(clock, 3, 1000, (s) => changes.push(s));
    breaker.failure();
    breaker.failure();
    breaker.success(); // a success in between resets the count
    breaker.failure();
    breaker.failure();
    expect(breaker.tryAcquire()).toBe(true);
    breaker.failure();
    expect(breaker.state).toBe('open');
    expect(breaker.tryAcquire()).toBe(false);
    clock.advance(400);
    expect(breaker.retryAfterMs()).toBe(600);
    clock.advance(600);
    expect(breaker.tryAcquire()).toBe(true); // the probe
    expect(breaker.state).toBe('half-open');
    expect(breaker.tryAcquire()).toBe(false); // only one probe at a time
    breaker.success();
    expect(breaker.state).toBe('closed');
    expect(changes).toEqual(['open', 'half-open', 'closed']);
  });

  it('a failed probe opens the breaker for another cooldown', () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker(clock, 1, 500);
    breaker.failure();
    clock.advance(500);
    expect(breaker.tryAcquire()).toBe(true);
    breaker.failure();
    expect(breaker.state).toBe('open');
    expect(breaker.tryAcquire()).toBe(false);
    clock.advance(499);
    expect(breaker.tryAcquire()).toBe(false);
    clock.advance(1);
    expect(breaker.tryAcquire()).toBe(true);
  });
});
