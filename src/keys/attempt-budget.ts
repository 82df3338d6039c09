// Token buckets for expensive failures: bcrypt comparisons that did not match. A comparison costs
// ~50–100 ms of a core, so whoever holds a display prefix (it is printed by `keys list` and sits
// in the first characters of every key) could otherwise keep the bcrypt threads busy with wrong
// secrets and starve every other tenant's first-use bcrypt keys. Each record and each client has
// a bucket; a comparison needs a token from the client's bucket and from every candidate record's
// bucket, taken before it runs (concurrent attempts cannot all slip through) and given back when
// the key matched (only failures are budgeted). Buckets live in a bounded LRU: an evicted bucket
// is full again, which bounds memory at the price of forgiving a client not seen for a while.

import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';

export interface BucketShape {
  /** Tokens a full bucket holds (the burst). */
  readonly capacity: number;
  /** Tokens added per second. */
  readonly perSecond: number;
}

/** Per record: 4 failed comparisons at once, then one every 2 s (≈ 2.5% of one core per record). */
export const RECORD_BUDGET: BucketShape = Object.freeze({ capacity: 4, perSecond: 0.5 });
/** Per client: 8 failed comparisons at once, then one per second. */
export const CLIENT_BUDGET: BucketShape = Object.freeze({ capacity: 8, perSecond: 1 });

interface Bucket {
  tokens: number;
  at: number;
}

export class TokenBuckets {
  private readonly buckets: LRUCache<string, Bucket>;

  constructor(
    private readonly shape: BucketShape,
    private readonly clock: Clock,
    maxBuckets = 10_000,
  ) {
    this.buckets = new LRUCache({ max: maxBuckets });
  }

  /** Tokens in `name`'s bucket now. */
  available(name: string): number {
    const bucket = this.buckets.get(name);
    if (bucket === undefined) return this.shape.capacity;
    this.refill(bucket);
    return bucket.tokens;
  }

  take(name: string): void {
    let bucket = this.buckets.get(name);
    if (bucket === undefined) {
      bucket = { tokens: this.shape.capacity, at: this.clock.now() };
      this.buckets.set(name, bucket);
    } else this.refill(bucket);
    bucket.tokens -= 1;
  }

  give(name: string): void {
    const bucket = this.buckets.get(name);
    if (bucket !== undefined) bucket.tokens = Math.min(this.shape.capacity, bucket.tokens + 1);
  }

  private refill(bucket: Bucket): void {
    const now = this.clock.now();
    const elapsed = Math.max(0, now - bucket.at);
    bucket.tokens = Math.min(this.shape.capacity, bucket.tokens + (elapsed / 1000) * this.shape.perSecond);
    bucket.at = now;
  }
}

/** The two budgets of failed bcrypt comparisons. */
export class BcryptBudget {
  private readonly records: TokenBuckets;
  private readonly clients: TokenBuckets;

  constructor(clock: Clock, record: BucketShape = RECORD_BUDGET, client: BucketShape = CLIENT_BUDGET) {
    this.records = new TokenBuckets(record, clock);
    this.clients = new TokenBuckets(client, clock);
  }

  /** Take a token for `client` and each record id, or take none and return false when one is short. */
  reserve(client: string, recordIds: readonly string[]): boolean {
    if (this.clients.available(client) < 1) return false;
    for (const id of recordIds) if (this.records.available(id) < 1) return false;
    this.clients.take(client);
    for (const id of recordIds) this.records.take(id);
    return true;
  }

  /** The comparison matched (or never ran): give the tokens back. */
  refund(client: string, recordIds: readonly string[]): void {
    this.clients.give(client);
    for (const id of recordIds) this.records.give(id);
  }
}
