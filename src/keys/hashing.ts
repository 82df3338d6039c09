// Key hashing. New keys are stored as HMAC-SHA-256 with the server-side pepper when one is
// configured, plain SHA-256 otherwise; both are fine for keys with ≥ 256 bits of randomness (a
// slow hash adds nothing there). Imported bcrypt hashes are verified on worker threads
// (bcrypt-threads.ts), never on the event loop, with a concurrency cap because each costs ~50–100 ms.

import { createHmac, hash, timingSafeEqual } from 'node:crypto';
import { BcryptThreadPool } from './bcrypt-threads.js';
import type { HashAlgorithm, KeyRecord } from './record.js';

export function sha256Hex(value: string): string {
  return hash('sha256', value, 'hex');
}

/** SHA-256 as a 32-character binary string: a cache key, without a Buffer allocation. */
export function sha256Binary(value: string): string {
  return hash('sha256', value, 'binary');
}

export class KeyHasher {
  private readonly pepper: string | undefined;

  constructor(pepper?: string) {
    this.pepper = pepper;
  }

  get peppered(): boolean {
    return this.pepper !== undefined;
  }

  /** What a new record stores for `key`. */
  forStorage(key: string): { hashAlgorithm: HashAlgorithm; hash: string } {
    return this.pepper !== undefined ? { hashAlgorithm: 'hmac-sha256', hash: this.hmacHex(key) } : { hashAlgorithm: 'sha256', hash: sha256Hex(key) };
  }

  /** The digests a stored record of `key` may carry, given its SHA-256 (computed by the caller). */
  lookupDigests(key: string, sha256: string): string[] {
    return this.pepper !== undefined ? [sha256, this.hmacHex(key)] : [sha256];
  }

  /** Whether a sha256 / hmac-sha256 record matches (constant time). Bcrypt records never match here. */
  digestMatches(record: KeyRecord, digests: readonly string[]): boolean {
    let expected: string | undefined;
    if (record.hashAlgorithm === 'sha256') expected = digests[0];
    else if (record.hashAlgorithm === 'hmac-sha256') expected = digests[1];
    if (expected === undefined || record.hash.length !== expected.length) return false;
    return timingSafeEqual(Buffer.from(record.hash, 'latin1'), Buffer.from(expected, 'latin1'));
  }

  private hmacHex(key: string): string {
    return createHmac('sha256', this.pepper!).update(key, 'utf8').digest('hex');
  }
}

export class BcryptBusyError extends Error {
  constructor() {
    super('too many bcrypt comparisons waiting');
    this.name = 'BcryptBusyError';
  }
}

/**
 * Runs bcrypt comparisons at most `concurrency` at a time (one worker thread each) and refuses to queue more than `maxQueued`, so a spray of keys that share a
 * bcrypt display prefix degrades into 503s for uncached bcrypt keys rather than a growing backlog.
 */
export class BcryptComparator {
  private running = 0;
  private readonly queue: (() => void)[] = [];
  private readonly threads: BcryptThreadPool;

  constructor(
    private readonly concurrency = 2,
    private readonly maxQueued = 32,
  ) {
    this.threads = new BcryptThreadPool(concurrency);
  }

  close(): Promise<void> {
    return this.threads.close();
  }

  async compare(key: string, hash: string): Promise<boolean> {
    if (this.running >= this.concurrency) {
      if (this.queue.length >= this.maxQueued) throw new BcryptBusyError();
      // The finishing comparison hands its slot over: `running` already counts this one.
      await new Promise<void>((resolve) => this.queue.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await this.threads.compare(key, hash);
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    }
  }
}
