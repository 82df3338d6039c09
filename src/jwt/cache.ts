// Verified tokens, so a repeated token skips signature verification. Keyed by the SHA-256 of the
// token (the cache never holds a usable credential), bounded by entry count (LRU). Entries carry
// their time claims: every hit re-applies the time rules, so an entry never outlives exp (nor
// maxTokenAge), and one whose key was rotated out is dropped.

import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Metrics } from '../observability/metrics.js';
import type { VerifiedToken } from './verifier.js';

export class VerifiedTokenCache {
  private readonly entries: LRUCache<string, VerifiedToken>;
  private readonly hits: { inc(): void };
  private readonly misses: { inc(): void };

  constructor(maxEntries: number, metrics: Metrics) {
    this.entries = new LRUCache({ max: maxEntries });
    const counter = metrics.counter('portcullis_jwt_cache_total', 'Verified-token cache lookups by result (hit, miss).', ['result']);
    this.hits = counter.labels({ result: 'hit' });
    this.misses = counter.labels({ result: 'miss' });
  }

  /** Cache key of a token: its SHA-256, as a 32-character binary string. */
  keyOf(token: string): string {
    return hash('sha256', token, 'binary');
  }

  get(key: string): VerifiedToken | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) this.misses.inc();
    else this.hits.inc();
    return entry;
  }

  set(key: string, entry: VerifiedToken): void {
    this.entries.set(key, entry);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
