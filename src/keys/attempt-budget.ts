// Token buckets for expensive failures: bcrypt comparisons that did not match. A comparison costs
// ~50–100 ms of a core, so whoever holds a display prefix (it is printed by `keys list` and sits
// in the first characters of every key) could otherwise keep the bcrypt threads busy with wrong
// secrets and starve every other tenant's first-use bcrypt keys.
//
// Three kinds of bucket, each token taken before the comparison runs (concurrent attempts cannot
// all slip through) and given back when the key matched (only failures are budgeted):
//   - per client: every comparison of that client;
//   - per client and record: a client that has failed against a record recently (its bucket is
//     not full) is held to the record's rate by this bucket alone;
//   - per record: charged once per DISTINCT failing client — by a client's first failure against
//     the record since its client-and-record bucket was last full — never by a client's repeats.
// So one client's failures, however many, cost a record one token: a holder of the right key
// (a client with no recent failure) still gets its comparison while someone else fails at the
// record's rate. What stays: many clients (source IPs or IPv6 prefixes) each failing once can
// spend a record's tokens, and its holder's first use on that replica then gets 429 until a token
// is free; the CPU all of them cost stays bounded by the record's rate and the bcrypt pool's queue.
//
// Buckets live in bounded LRUs: an evicted bucket is full again, which bounds memory at the price
// of forgiving a client not seen for a while.

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

/** Which record buckets a reservation charged (given back with it when the key matched). */
export interface BcryptReservation {
  readonly client: string;
  readonly recordIds: readonly string[];
  /** recordIds[i]'s own bucket was charged (the client's first recent failure against it). */
  readonly charged: readonly boolean[];
}

/** The budgets of failed bcrypt comparisons. */
export class BcryptBudget {
  private readonly records: TokenBuckets;
  private readonly clients: TokenBuckets;
  /** Per client and record, RECORD_BUDGET's shape: who failed recently, and how often it may. */
  private readonly pairs: TokenBuckets;
  private readonly pairCapacity: number;

  constructor(clock: Clock, record: BucketShape = RECORD_BUDGET, client: BucketShape = CLIENT_BUDGET) {
    this.records = new TokenBuckets(record, clock);
    this.clients = new TokenBuckets(client, clock);
    this.pairs = new TokenBuckets(record, clock, 20_000);
    this.pairCapacity = record.capacity;
  }

  /**
   * Take the tokens one comparison of `client` against `recordIds` needs, or take none and return
   * undefined when one is short: the client's, and per record either the client's own bucket for
   * that record (it failed against it recently) or the record's (it did not).
   */
  reserve(client: string, recordIds: readonly string[]): BcryptReservation | undefined {
    if (this.clients.available(client) < 1) return undefined;
    const charged: boolean[] = [];
    for (const id of recordIds) {
      const left = this.pairs.available(pairName(client, id));
      const fresh = left >= this.pairCapacity;
      if (fresh ? this.records.available(id) < 1 : left < 1) return undefined;
      charged.push(fresh);
    }
    this.clients.take(client);
    for (let i = 0; i < recordIds.length; i++) {
      const id = recordIds[i]!;
      this.pairs.take(pairName(client, id));
      if (charged[i]) this.records.take(id);
    }
    return { client, recordIds, charged };
  }

  /** The comparison matched (or never ran): give the tokens back. */
  refund(reservation: BcryptReservation): void {
    const { client, recordIds, charged } = reservation;
    this.clients.give(client);
    for (let i = 0; i < recordIds.length; i++) {
      const id = recordIds[i]!;
      this.pairs.give(pairName(client, id));
      if (charged[i]) this.records.give(id);
    }
  }
}

function pairName(client: string, recordId: string): string {
  return `${client}\u0000${recordId}`;
}
