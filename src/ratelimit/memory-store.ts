// The in-process backend: the same algorithms as the Redis script (redis-script.ts), step for
// step, over an LRU-bounded map. Synchronous: a check never allocates a promise.

import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';
import {
  ALLOWED,
  LIMITED,
  LOCKED,
  type BucketShape,
  type LimitCheck,
  type LimitOutcome,
  type LimitStore,
  type OffenceCount,
  type WindowShape,
} from './types.js';

/** A key's state; `expiresAt` (ms, injected clock) is when it is equivalent to no state at all. */
type Entry = BucketEntry | WindowEntry | CounterEntry | OffenceEntry;
interface OffenceEntry {
  expiresAt: number;
  count: number;
  first: number;
  last: number;
}
interface BucketEntry {
  expiresAt: number;
  /** GCRA theoretical arrival time. */
  tat: number;
}
interface WindowEntry {
  expiresAt: number;
  /** Timestamps of admitted units, oldest first, from index `head` on. */
  times: number[];
  head: number;
}
interface CounterEntry {
  expiresAt: number;
  count: number;
}

interface Pending {
  readonly check: LimitCheck;
  readonly allowed: boolean;
  /** Bucket: the new TAT to store when the request is admitted. */
  readonly newTat: number;
  /** What to report when the limit would admit the request but another limit refused it. */
  readonly unchargedResetMs: number;
}

export class MemoryStore implements LimitStore {
  readonly kind = 'memory' as const;
  private readonly entries: LRUCache<string, Entry>;

  constructor(
    private readonly clock: Clock,
    maxKeys: number,
  ) {
    this.entries = new LRUCache<string, Entry>({ max: maxKeys });
  }

  /** Number of keys held (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  check(checks: readonly LimitCheck[]): LimitOutcome[] {
    const now = this.clock.now();
    const outcomes: LimitOutcome[] = new Array(checks.length);
    const pending: Pending[] = new Array(checks.length);
    let enforcedAllowed = true;

    for (let i = 0; i < checks.length; i++) {
      const check = checks[i]!;
      const locked = check.lockout ? this.lockedFor(check.key, now) : 0;
      let outcome: LimitOutcome;
      if (locked > 0) {
        outcome = { status: LOCKED, remaining: 0, resetMs: locked, retryMs: locked };
        pending[i] = { check, allowed: false, newTat: 0, unchargedResetMs: 0 };
      } else if (check.shape.algorithm === 'bucket') {
        const evaluated = this.evaluateBucket(check, check.shape, now);
        outcome = evaluated.outcome;
        pending[i] = { check, allowed: outcome.status === ALLOWED, newTat: evaluated.newTat, unchargedResetMs: evaluated.unchargedResetMs };
      } else {
        const evaluated = this.evaluateWindow(check, check.shape, now);
        outcome = evaluated.outcome;
        pending[i] = { check, allowed: outcome.status === ALLOWED, newTat: 0, unchargedResetMs: evaluated.unchargedResetMs };
      }
      if (outcome.status === LIMITED && check.lockout) outcome = this.countViolation(check, outcome, now);
      if (check.enforce && outcome.status !== ALLOWED) enforcedAllowed = false;
      outcomes[i] = outcome;
    }

    for (let i = 0; i < pending.length; i++) {
      const item = pending[i]!;
      if (!item.allowed) continue;
      if (item.check.enforce && !enforcedAllowed) {
        // Refused by another limit: this one is not charged, so report it as it stands.
        outcomes[i] = { status: ALLOWED, remaining: outcomes[i]!.remaining + item.check.cost, resetMs: item.unchargedResetMs, retryMs: 0 };
        continue;
      }
      this.consume(item, now);
    }
    return outcomes;
  }

  private evaluateBucket(check: LimitCheck, shape: BucketShape, now: number): { outcome: LimitOutcome; newTat: number; unchargedResetMs: number } {
    const entry = bucketEntry(this.live(check.key + ':s', now));
    const tat = entry && entry.tat > now ? entry.tat : now;
    const newTat = tat + check.cost * shape.intervalMs;
    const allowAt = newTat - shape.toleranceMs;
    if (now < allowAt) {
      const remaining = Math.max(0, Math.floor((shape.toleranceMs - (tat - now)) / shape.intervalMs));
      return { outcome: { status: LIMITED, remaining, resetMs: Math.ceil(tat - now), retryMs: Math.ceil(allowAt - now) }, newTat, unchargedResetMs: 0 };
    }
    const remaining = Math.floor((shape.toleranceMs - (newTat - now)) / shape.intervalMs);
    return { outcome: { status: ALLOWED, remaining, resetMs: Math.ceil(newTat - now), retryMs: 0 }, newTat, unchargedResetMs: Math.ceil(tat - now) };
  }

  private evaluateWindow(check: LimitCheck, shape: WindowShape, now: number): { outcome: LimitOutcome; unchargedResetMs: number } {
    const entry = windowEntry(this.live(check.key + ':s', now));
    let count = 0;
    let newest = now - shape.windowMs;
    if (entry) {
      // Units at or before now - window have left the window.
      const cutoff = now - shape.windowMs;
      while (entry.head < entry.times.length && entry.times[entry.head]! <= cutoff) entry.head++;
      count = entry.times.length - entry.head;
      if (count > 0) newest = entry.times[entry.times.length - 1]!;
    }
    if (count + check.cost <= shape.limit) {
      const outcome: LimitOutcome = { status: ALLOWED, remaining: shape.limit - count - check.cost, resetMs: shape.windowMs, retryMs: 0 };
      return { outcome, unchargedResetMs: Math.ceil(newest + shape.windowMs - now) };
    }
    // Enough units must expire to make room: the k-th oldest one frees the k-th unit.
    const needed = count + check.cost - shape.limit;
    const retryMs = needed <= count ? entry!.times[entry!.head + needed - 1]! + shape.windowMs - now : shape.windowMs;
    const outcome: LimitOutcome = { status: LIMITED, remaining: Math.max(0, shape.limit - count), resetMs: Math.ceil(newest + shape.windowMs - now), retryMs: Math.ceil(retryMs) };
    return { outcome, unchargedResetMs: 0 };
  }

  private consume(item: Pending, now: number): void {
    const { check } = item;
    const shape = check.shape;
    if (shape.algorithm === 'bucket') {
      this.entries.set(check.key + ':s', { tat: item.newTat, expiresAt: item.newTat });
      return;
    }
    const key = check.key + ':s';
    let entry = windowEntry(this.live(key, now));
    if (!entry) {
      entry = { times: [], head: 0, expiresAt: 0 };
      this.entries.set(key, entry);
    } else if (entry.head > 32 && entry.head * 2 > entry.times.length) {
      // Compact once the expired prefix dominates, so the array stays O(limit).
      entry.times = entry.times.slice(entry.head);
      entry.head = 0;
    }
    for (let n = 0; n < check.cost; n++) entry.times.push(now);
    entry.expiresAt = now + shape.windowMs;
  }

  /** Milliseconds the key stays locked out, 0 when it is not. */
  private lockedFor(key: string, now: number): number {
    const lock = this.live(key + ':l', now);
    return lock ? Math.ceil(lock.expiresAt - now) : 0;
  }

  private countViolation(check: LimitCheck, outcome: LimitOutcome, now: number): LimitOutcome {
    const lockout = check.lockout!;
    const key = check.key + ':v';
    let violations = this.live(key, now) as CounterEntry | undefined;
    if (!violations) {
      violations = { count: 0, expiresAt: now + lockout.withinMs };
      this.entries.set(key, violations);
    }
    violations.count++;
    if (violations.count < lockout.after) return outcome;
    violations.expiresAt = 0; // spent (not deleted: see live)
    this.entries.set(check.key + ':l', { count: 1, expiresAt: now + lockout.forMs });
    return { status: LOCKED, remaining: 0, resetMs: lockout.forMs, retryMs: lockout.forMs, lockedNow: true };
  }

  recordOffence(key: string, withinMs: number): Promise<OffenceCount> {
    const now = this.clock.now();
    const k = key + ':o';
    let entry = this.live(k, now) as OffenceEntry | undefined;
    if (!entry) {
      entry = { count: 0, first: now, last: now, expiresAt: now + withinMs };
      this.entries.set(k, entry);
    }
    entry.count++;
    entry.last = now;
    return Promise.resolve({ count: entry.count, firstMs: entry.first, lastMs: entry.last });
  }

  clearOffences(key: string): Promise<void> {
    this.entries.delete(key + ':o');
    return Promise.resolve();
  }

  /**
   * The key's state while it is in force. An expired entry is left in place, never deleted: the
   * next write replaces it and the LRU bound evicts it otherwise. (lru-cache clears all of its
   * maxKeys-long arrays when the last entry is deleted: with one hot key whose state expires
   * between requests, a delete here cost O(maxKeys) per check.)
   */
  private live(key: string, now: number): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined || entry.expiresAt <= now) return undefined;
    return entry;
  }
}

// A counter's state as its algorithm keeps it. After a reload changed a policy's algorithm, the
// other algorithm's state under the same key reads as none: the counter starts afresh (as in the
// Redis script) rather than failing its checks until that state expires.
function bucketEntry(entry: Entry | undefined): BucketEntry | undefined {
  return entry !== undefined && 'tat' in entry ? entry : undefined;
}

function windowEntry(entry: Entry | undefined): WindowEntry | undefined {
  return entry !== undefined && 'times' in entry ? entry : undefined;
}
