// Presented key → KeyCheck, in front of a key store. The request path stays synchronous for every
// key seen recently:
//   - the cache is keyed by the key's SHA-256 (the plaintext is never kept) and lives in a
//     DigestTable (src/cache/digest-table.ts): ~190 bytes per key, none of it for the GC to walk;
//   - positive entries are trusted for `ttl`, then served stale while one background refresh runs,
//     and for up to `staleFor` past the ttl while the store cannot be reached;
//   - unknown keys are remembered for `negativeTtl`, so a repeated bad key costs no lookup;
//   - a change notification (revocation on another replica, file edit) drops the key's entries;
//     a listener reconnect marks everything stale;
//   - only a miss returns a promise: one store lookup per key at a time (concurrent requests for
//     the same key share it), answered with 503 store_unavailable if it takes longer than
//     `lookupTimeout` (plus `bcryptTimeout` when an imported bcrypt key must be compared). The work
//     itself continues and fills the cache, so a retry succeeds once the store has answered;
//   - lookups are shared fairly between clients (fair-lookups.ts): a client over its share gets
//     429 key_lookup_limited at once, and the store's slots go round-robin across clients;
//   - failed bcrypt comparisons are budgeted per client, per client and record, and per record
//     charged once per distinct failing client (attempt-budget.ts);
//   - while the store's change notifications cannot be trusted, cached keys are re-read by id on
//     a connection of their own every second (revalidation.ts).

import { LRUCache } from 'lru-cache';
import { DigestTable } from '../cache/digest-table.js';
import type { Clock } from '../clock.js';
import { ioDeadline } from '../deadline.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { isPromise, type MaybePromise } from '../types.js';
import type { KeyCacheConfig } from './config.js';
import { Interner, scopesText } from '../intern.js';
import { CachedKey } from './cached-key.js';
import { BcryptBudget, type BcryptReservation } from './attempt-budget.js';
import { FairLookups, LookupDroppedError } from './fair-lookups.js';
import { BcryptBusyError, BcryptComparator, KeyHasher, sha256Binary } from './hashing.js';
import { ThrottledLog } from '../observability/throttled-log.js';
import { Revalidator } from './revalidation.js';
import { lookupPrefixesOf, type KeyRecord } from './record.js';
import type { KeyChange, KeyStore } from './store.js';

export type KeyFailureReason = 'invalid_api_key' | 'key_revoked' | 'key_expired' | 'store_unavailable' | 'key_lookup_limited';

export type KeyCheck =
  | { readonly ok: true; readonly record: CachedKey }
  | { readonly ok: false; readonly reason: KeyFailureReason; readonly detail?: string };

// Fields of a cache entry: numbers...
const KIND = 0;
const FRESH_UNTIL = 1;
const GENERATION = 2;
const EXPIRES_AT = 3;
const REVOKED_AT = 4;
// ...and texts.
const ID = 0;
const NAME = 1;
const TENANT = 2;
const SCOPES = 3;
const NEGATIVE = 0;
const POSITIVE = 1;
/** Bytes of text per entry: a UUID id, a name, tenant and scopes of most keys fit. */
const TEXT_BYTES = 96;

const INVALID: KeyCheck = Object.freeze({ ok: false, reason: 'invalid_api_key' });
const REVOKED: KeyCheck = Object.freeze({ ok: false, reason: 'key_revoked' });
const EXPIRED: KeyCheck = Object.freeze({ ok: false, reason: 'key_expired' });
const TIMED_OUT: KeyCheck = Object.freeze({ ok: false, reason: 'store_unavailable', detail: 'key store did not answer in time' });
const OVERLOADED: KeyCheck = Object.freeze({ ok: false, reason: 'store_unavailable', detail: 'too many key lookups in flight' });
const CLIENT_LIMITED: KeyCheck = Object.freeze({ ok: false, reason: 'key_lookup_limited', detail: 'this client has its share of key lookups in flight' });
/** Ids of cached keys re-read per statement during revalidation. */
const RECHECK_CHUNK = 1000;

/** A known key. Also the KeyCheck handed out on hits (kept per slot: recent hits allocate nothing). */
class PositiveEntry {
  readonly ok = true as const;
  constructor(
    readonly record: CachedKey,
    readonly freshUntil: number,
    readonly generation: number,
  ) {}
}

interface NegativeEntry {
  readonly record: undefined;
  readonly freshUntil: number;
  readonly generation: number;
}

type Entry = PositiveEntry | NegativeEntry;

/** Outcome of asking the store (and bcrypt): an entry to cache, or why there is none. */
type Resolution = Entry | { readonly failure: string; readonly limited?: true };

interface Progress {
  /** performance.now() when the store had answered and a bcrypt comparison started. */
  bcryptStartedAt: number | undefined;
  /** The answer raced with a change notification and was not cached. */
  overlapped: boolean;
  /** This lookup re-reads a key after such a race (it is not repeated again). */
  readonly isRetry: boolean;
  /** Who asked (source IP; "" for internal refreshes): lookup shares and bcrypt budgets count per client. */
  readonly client: string;
}

/** The verifier's change counters when a lookup started. */
interface Epoch {
  readonly changes: number;
  readonly generation: number;
  readonly negativeGeneration: number;
  readonly progress: Progress;
}

interface Pending {
  readonly promise: Promise<Resolution>;
  readonly progress: Progress;
}

export interface KeyVerifierOptions {
  readonly store: KeyStore;
  readonly hasher: KeyHasher;
  readonly bcrypt: BcryptComparator;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly cache: KeyCacheConfig;
  readonly lookupTimeoutMs: number;
  readonly bcryptTimeoutMs: number;
  /** Distinct uncached keys looked up at once; more get 503 at once (a key spray cannot queue up). */
  readonly maxInflight?: number;
  /** Lookups one client may have pending (default maxInflight / 8); more get 429 at once. */
  readonly maxInflightPerClient?: number;
}

/** Who is asking, computed only on a cache miss (the hit path never resolves the client IP). */
export type ClientOf<R> = (request: R) => string;

export class KeyVerifier {
  private readonly store: KeyStore;
  private readonly hasher: KeyHasher;
  private readonly bcrypt: BcryptComparator;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly cacheConfig: KeyCacheConfig;
  private readonly lookupTimeoutMs: number;
  private readonly bcryptTimeoutMs: number;
  private readonly maxInflight: number;
  /** By the key's SHA-256 (never the key). */
  private readonly entries: DigestTable<PositiveEntry>;
  private readonly interner = new Interner();
  /** SHA-256 of a key → the bcrypt hash it was proven against (bcrypt costs ~50–100 ms: once per key). */
  private readonly bcryptProofs: LRUCache<string, string>;
  private readonly inflight = new Map<string, Pending>();
  private readonly fair: FairLookups;
  private readonly bcryptBudget: BcryptBudget;
  private readonly failureLog: ThrottledLog;
  private readonly revalidator: Revalidator | undefined;
  /** Bumped when every positive entry must be re-read (listener reconnect, file reload). */
  private generation = 0;
  /** Bumped on any change: a new key may now exist, so negative entries are void. */
  private negativeGeneration = 0;
  /** Bumped on every key-specific change; a lookup that overlapped one is not cached. */
  private changeCount = 0;
  private readonly unsubscribe: () => void;
  private readonly metric: {
    hit: { inc(): void };
    stale: { inc(): void };
    miss: { inc(): void };
    negativeHit: { inc(): void };
    lookup: (result: string) => { inc(): void };
    lookupSeconds: { observe(v: number): void };
  };

  constructor(options: KeyVerifierOptions) {
    this.store = options.store;
    this.hasher = options.hasher;
    this.bcrypt = options.bcrypt;
    this.clock = options.clock;
    this.logger = options.logger;
    this.cacheConfig = options.cache;
    this.lookupTimeoutMs = options.lookupTimeoutMs;
    this.bcryptTimeoutMs = options.bcryptTimeoutMs;
    this.maxInflight = options.maxInflight ?? 256;
    this.entries = new DigestTable(options.cache.maxEntries, { numbers: 5, texts: 4, textBytes: TEXT_BYTES });
    this.bcryptProofs = new LRUCache({ max: 10_000 });
    const perClient = options.maxInflightPerClient ?? Math.max(1, Math.floor(this.maxInflight / 8));
    this.fair = new FairLookups(perClient, this.store.lookupConcurrency ?? Number.POSITIVE_INFINITY, this.lookupTimeoutMs);
    this.bcryptBudget = new BcryptBudget(this.clock);
    this.failureLog = new ThrottledLog({ logger: this.logger, clock: this.clock, level: 'warn', message: 'key store lookup failed' });

    const cache = options.metrics.counter('portcullis_apikey_cache_total', 'API key cache lookups by result (hit, stale, miss, negative_hit).', ['result']);
    const lookups = options.metrics.counter('portcullis_keystore_lookups_total', 'Key store lookups by store and result (found, not_found, error, timeout, overloaded, limited).', ['store', 'result']);
    const seconds = options.metrics.histogram('portcullis_keystore_lookup_seconds', 'Time a key store lookup took.', ['store'], [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]);
    const store = this.store.kind;
    this.metric = {
      // Counted on every check: batched children (an addition each, handed over when read).
      hit: options.metrics.batchedChild(cache, { result: 'hit' }),
      stale: options.metrics.batchedChild(cache, { result: 'stale' }),
      miss: options.metrics.batchedChild(cache, { result: 'miss' }),
      negativeHit: options.metrics.batchedChild(cache, { result: 'negative_hit' }),
      lookup: (result) => lookups.labels(store, result),
      lookupSeconds: seconds.labels(store),
    };
    this.unsubscribe = this.store.subscribe((change) => this.onChange(change));
    const watched = this.store;
    if (watched.changesTrusted !== undefined && watched.recheck !== undefined) {
      const passes = options.metrics.counter('portcullis_apikey_revalidations_total', 'Passes re-reading every cached key while change notifications cannot be trusted, by result (ok, error).', ['result']);
      this.revalidator = new Revalidator({
        trusted: () => watched.changesTrusted!(),
        pass: () => this.revalidate(),
        logger: this.logger,
        onPass: (result) => passes.labels(result).inc(),
      });
    }
  }

  /**
   * Check a presented key (already past the offline shape check). `clientOf(request)` names the
   * client for fair shares and budgets; it is called only when the store must be asked.
   */
  check<R>(key: string, request?: R, clientOf?: ClientOf<R>): MaybePromise<KeyCheck> {
    const digest = sha256Binary(key);
    const now = this.clock.now();
    const slot = this.entries.find(digest);
    if (slot >= 0) {
      const t = this.entries;
      const freshUntil = t.number(slot, FRESH_UNTIL);
      const generation = t.number(slot, GENERATION);
      if (t.number(slot, KIND) === NEGATIVE) {
        if (now < freshUntil && generation === this.negativeGeneration) {
          this.metric.negativeHit.inc();
          return INVALID;
        }
      } else if (now < freshUntil && generation === this.generation) {
        this.metric.hit.inc();
        return this.evaluate(this.positiveAt(slot), now);
      } else if (now < freshUntil + this.cacheConfig.staleFor) {
        this.metric.stale.inc();
        const entry = this.positiveAt(slot);
        const refreshed = this.refreshInBackground(key, digest, clientOf !== undefined ? clientOf(request as R) : '');
        // A synchronous store (file) has already answered: use the fresh result.
        if (refreshed !== undefined && !('failure' in refreshed)) return refreshed.record === undefined ? INVALID : this.evaluate(refreshed, now);
        return this.evaluate(entry, now);
      }
    }
    this.metric.miss.inc();
    return this.lookup(key, digest, clientOf !== undefined ? clientOf(request as R) : '');
  }

  /** Stop listening for changes. The store is closed by its owner. */
  close(): void {
    this.unsubscribe();
    this.revalidator?.close();
    void this.bcrypt.close();
  }

  /** The entry in a positive slot: the object kept for it, or one rebuilt from its fields. */
  private positiveAt(slot: number): PositiveEntry {
    return this.entries.objectAt(slot, this.rebuild);
  }

  private readonly rebuild = (slot: number): PositiveEntry => {
    const t = this.entries;
    const revokedAt = t.number(slot, REVOKED_AT);
    const record = new CachedKey(
      t.text(slot, ID)!,
      this.interner.string(t.text(slot, TENANT)!),
      t.text(slot, NAME)!,
      this.interner.scopesFromText(t.text(slot, SCOPES)),
      t.number(slot, EXPIRES_AT),
      Number.isNaN(revokedAt) ? undefined : revokedAt,
    );
    return new PositiveEntry(record, t.number(slot, FRESH_UNTIL), t.number(slot, GENERATION));
  };

  /** Store an entry in the table (its slot is claimed afresh). */
  private save(digest: string, entry: Entry): void {
    const t = this.entries;
    const slot = t.claim(digest);
    t.setNumber(slot, FRESH_UNTIL, entry.freshUntil);
    t.setNumber(slot, GENERATION, entry.generation);
    const record = entry.record;
    if (record === undefined) {
      t.setNumber(slot, KIND, NEGATIVE);
      return;
    }
    t.setNumber(slot, KIND, POSITIVE);
    t.setNumber(slot, EXPIRES_AT, record.expiresAt);
    t.setNumber(slot, REVOKED_AT, record.revokedAt ?? Number.NaN);
    const scopeText = scopesText(record.scopes);
    t.store(slot, scopeText === null ? undefined : [record.id, record.name, record.tenant, scopeText], entry as PositiveEntry);
  }

  private evaluate(entry: PositiveEntry, now: number): KeyCheck {
    const record = entry.record;
    if (record.revokedAt !== undefined) return REVOKED;
    if (now >= record.expiresAt) return EXPIRED;
    this.store.markUsed(record.id, now);
    return entry;
  }

  private outcome(resolution: Resolution): KeyCheck {
    if ('failure' in resolution) return { ok: false, reason: resolution.limited ? 'key_lookup_limited' : 'store_unavailable', detail: resolution.failure };
    if (resolution.record === undefined) return INVALID;
    return this.evaluate(resolution, this.clock.now());
  }

  private lookup(key: string, digest: string, client: string): MaybePromise<KeyCheck> {
    let pending = this.inflight.get(digest);
    if (pending === undefined) {
      if (!this.fair.mayStart(client)) {
        this.metric.lookup('limited').inc();
        return CLIENT_LIMITED;
      }
      // Full: a client below its share takes the place of a queued lookup of the biggest one.
      if (this.inflight.size >= this.maxInflight && !this.fair.shedFor(client)) {
        this.metric.lookup('overloaded').inc();
        return OVERLOADED;
      }
      const progress: Progress = { bcryptStartedAt: undefined, overlapped: false, isRetry: false, client };
      const resolution = this.resolve(key, digest, progress);
      if (!isPromise(resolution)) return this.outcome(resolution);
      pending = this.track(key, digest, resolution, progress);
    }
    return this.wait(pending);
  }

  /** Start a refresh unless one is running; returns the result when the store answered synchronously. */
  private refreshInBackground(key: string, digest: string, client: string, isRetry = false): Resolution | undefined {
    if (this.inflight.has(digest) || this.inflight.size >= this.maxInflight || !this.fair.mayStart(client)) return undefined;
    const progress: Progress = { bcryptStartedAt: undefined, overlapped: false, isRetry, client };
    const resolution = this.resolve(key, digest, progress);
    if (!isPromise(resolution)) return resolution;
    this.track(key, digest, resolution, progress);
    return undefined;
  }

  private track(key: string, digest: string, promise: Promise<Resolution>, progress: Progress): Pending {
    const pending: Pending = { promise, progress };
    this.inflight.set(digest, pending);
    // resolve() never rejects; this only removes the in-flight marker and, when the answer raced
    // with a change and was not cached, reads the key once more so the cache fills again.
    const settled = () => {
      if (this.inflight.get(digest) === pending) this.inflight.delete(digest);
      if (progress.overlapped && !progress.isRetry) this.refreshInBackground(key, digest, progress.client, true);
    };
    promise.then(settled, settled);
    return pending;
  }

  /**
   * Wait for a lookup, giving up after lookupTimeout, or bcryptTimeout after the bcrypt comparison
   * started if that is later. Real time (not the injected clock): this bounds a real wait.
   */
  private wait(pending: Pending): Promise<KeyCheck> {
    return new Promise<KeyCheck>((resolve) => {
      let extended = false;
      const expire = () => {
        const bcryptStartedAt = pending.progress.bcryptStartedAt;
        if (bcryptStartedAt !== undefined && !extended) {
          const remaining = bcryptStartedAt + this.bcryptTimeoutMs - performance.now();
          if (remaining > 0) {
            extended = true;
            deadline = ioDeadline(remaining, expire);
            return;
          }
        }
        this.metric.lookup('timeout').inc();
        resolve(TIMED_OUT);
      };
      // Expires only if still unanswered after the loop has read its sockets (see ioDeadline).
      let deadline = ioDeadline(this.lookupTimeoutMs, expire);
      pending.promise.then((resolution) => {
        deadline.cancel();
        resolve(this.outcome(resolution));
      });
    });
  }

  /** Ask the store, match digests, compare bcrypt candidates; cache the answer. Never rejects. */
  private resolve(key: string, digest: string, progress: Progress): MaybePromise<Resolution> {
    const since: Epoch = { changes: this.changeCount, generation: this.generation, negativeGeneration: this.negativeGeneration, progress };
    const digests = this.hasher.lookupDigests(key, Buffer.from(digest, 'latin1').toString('hex'));
    const query = { digests, bcryptPrefixes: this.store.mayHoldBcrypt ? lookupPrefixesOf(key) : [] };
    const started = performance.now();
    let records: MaybePromise<readonly KeyRecord[]>;
    try {
      records = this.fair.run(progress.client, () => this.store.lookup(query));
    } catch (err) {
      return this.storeFailed(err);
    }
    if (!isPromise(records)) return this.match(key, digest, digests, records, since, progress);
    return records.then(
      (found) => {
        this.metric.lookupSeconds.observe((performance.now() - started) / 1000);
        try {
          return this.match(key, digest, digests, found, since, progress);
        } catch (err) {
          return this.storeFailed(err); // e.g. a malformed row: never let the promise reject
        }
      },
      (err: unknown) => this.storeFailed(err),
    );
  }

  private storeFailed(err: unknown): Resolution {
    if (err instanceof LookupDroppedError) {
      // Dropped from its client's queue unstarted. Waited past lookupTimeout: its waiters have
      // already been answered (and counted as timeouts). Shed for a client below its share: the
      // shed client is over its share, so 429, as if refused at the door.
      if (err.why === 'expired') return { failure: err.message };
      this.metric.lookup('limited').inc();
      return { failure: err.message, limited: true };
    }
    this.metric.lookup('error').inc();
    const failure = (err as Error)?.message ?? String(err);
    // Counted above; logged at most once per interval with the number left out (a failing store
    // under load would otherwise write one line per request).
    this.failureLog.note({ store: this.store.kind, err: failure });
    return { failure: `key store lookup failed: ${failure}` };
  }

  private match(
    key: string,
    digest: string,
    digests: readonly string[],
    records: readonly KeyRecord[],
    since: Epoch,
    progress: Progress,
  ): MaybePromise<Resolution> {
    let bcryptCandidates: KeyRecord[] | undefined;
    for (const record of records) {
      if (record.hashAlgorithm === 'bcrypt') (bcryptCandidates ??= []).push(record);
      else if (this.hasher.digestMatches(record, digests)) return this.remember(digest, record, since);
    }
    if (bcryptCandidates === undefined) return this.remember(digest, undefined, since);
    const proven = this.bcryptProofs.get(digest);
    const provenRecord = proven !== undefined ? bcryptCandidates.find((r) => r.hash === proven) : undefined;
    if (provenRecord) return this.remember(digest, provenRecord, since);
    // Each failed comparison costs ~50–100 ms of a core: budgeted per client and per record (a
    // record's own tokens charged once per distinct failing client, so nobody's failures lock its
    // holder out), reserved before it runs so that concurrent attempts cannot all slip through.
    const reservation = this.bcryptBudget.reserve(progress.client, bcryptCandidates.map((r) => r.id));
    if (reservation === undefined) {
      this.metric.lookup('limited').inc();
      return { failure: 'failed bcrypt comparisons over budget for this key prefix or client', limited: true };
    }
    progress.bcryptStartedAt = performance.now();
    return this.compareBcrypt(key, digest, bcryptCandidates, since, reservation);
  }

  private async compareBcrypt(
    key: string,
    digest: string,
    candidates: readonly KeyRecord[],
    since: Epoch,
    reservation: BcryptReservation,
  ): Promise<Resolution> {
    try {
      for (const candidate of candidates) {
        if (await this.bcrypt.compare(key, candidate.hash)) {
          this.bcryptBudget.refund(reservation);
          this.bcryptProofs.set(digest, candidate.hash);
          return this.remember(digest, candidate, since);
        }
      }
      return this.remember(digest, undefined, since);
    } catch (err) {
      this.bcryptBudget.refund(reservation);
      if (err instanceof BcryptBusyError) {
        this.metric.lookup('overloaded').inc();
        return { failure: err.message };
      }
      return this.storeFailed(err);
    }
  }

  private remember(digest: string, record: KeyRecord | undefined, since: Epoch): Entry {
    this.metric.lookup(record ? 'found' : 'not_found').inc();
    const now = this.clock.now();
    // Generations as of the lookup's start: after a resync during the lookup the entry is stale.
    const entry: Entry =
      record === undefined
        ? { record: undefined, freshUntil: now + this.cacheConfig.negativeTtl, generation: since.negativeGeneration }
        : new PositiveEntry(CachedKey.of(record, this.interner), now + this.cacheConfig.ttl, since.generation);
    // A key changed while this lookup ran, so its answer may predate the change: it answers the
    // requests that waited for it, but is not cached (the next request reads the store again).
    const overlapped = since.changes !== this.changeCount;
    if (overlapped) since.progress.overlapped = true;
    else if (record !== undefined || this.cacheConfig.negativeTtl > 0) this.save(digest, entry);
    return entry;
  }

  /**
   * Re-read every cached key by id and drop those whose record changed or is gone (a dropped key
   * is looked up again on its next use and answered from the store, e.g. key_revoked). Runs only
   * while notifications cannot be trusted (revalidation.ts); rejects when the store cannot be read.
   */
  private async revalidate(): Promise<void> {
    const t = this.entries;
    const ids = new Set<string>();
    t.forEachSlot((slot) => {
      if (t.number(slot, KIND) === POSITIVE) ids.add(this.idAt(slot));
    });
    if (ids.size === 0) return;
    const all = [...ids];
    const current = new Map<string, KeyRecord>();
    for (let i = 0; i < all.length; i += RECHECK_CHUNK) {
      for (const record of await this.store.recheck!(all.slice(i, i + RECHECK_CHUNK))) current.set(record.id, record);
    }
    const changed = new Set<string>();
    t.forEachSlot((slot) => {
      if (t.number(slot, KIND) !== POSITIVE) return;
      const id = this.idAt(slot);
      if (!ids.has(id) || changed.has(id)) return; // cached after the read started: not judged here
      const record = current.get(id);
      const cached = t.object(slot)?.record ?? this.rebuild(slot).record;
      if (record === undefined || differs(cached, record)) changed.add(id);
    });
    for (const id of changed) this.onChange({ kind: 'key', id, created: false });
  }

  private idAt(slot: number): string {
    return this.entries.object(slot)?.record.id ?? this.entries.text(slot, ID)!;
  }

  private onChange(change: KeyChange): void {
    this.negativeGeneration++;
    if (change.kind === 'all') {
      this.generation++;
      this.revalidator?.resync();
      return;
    }
    // A new key only voids negative entries: no cached answer can predate its insertion.
    if (change.created) return;
    this.changeCount++;
    const t = this.entries;
    const id = Buffer.from(change.id, 'utf8');
    t.forEachSlot((slot) => {
      if (t.number(slot, KIND) !== POSITIVE) return;
      const kept = t.object(slot);
      if (kept !== undefined ? kept.record.id === change.id : t.textIs(slot, ID, id)) t.remove(slot);
    });
  }
}

/** Whether a cached key no longer says what its record says (the fields a decision uses). */
function differs(cached: CachedKey, record: KeyRecord): boolean {
  return (
    cached.revokedAt !== record.revokedAt ||
    cached.expiresAt !== record.expiresAt ||
    cached.tenant !== record.tenant ||
    cached.name !== record.name ||
    cached.scopes.length !== record.scopes.length ||
    cached.scopes.some((scope, i) => scope !== record.scopes[i])
  );
}
