// One lookup as the request path sees it: a bounded cache in front of a target, with
//   - the cache keyed by SHA-256 of the credential (never the credential), positive TTL, shorter
//     negative TTL, never past an expiry the answer carries, at most maxEntries (LRU);
//   - single-flight: concurrent identical questions share one target request;
//   - fairness: at most maxInFlight target requests in flight, and at most perClientInFlight of
//     them for one client IP, so a spray of junk credentials from one client is shed (503) while
//     other clients' lookups keep going;
//   - a timeout covering the whole target request, and a circuit breaker that answers at once
//     while the target is known to be sick;
//   - metrics: lookups by outcome, latency, cache hits.
// A cache hit answers synchronously with the very object cached. Failures are values
// (LookupFailure), never exceptions; callers turn them into 503 lookup_unavailable.

import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Counter, Histogram } from 'prom-client';
import { ioDeadline, type Deadline } from '../deadline.js';
import { CircuitBreaker } from '../ratelimit/circuit-breaker.js';
import type { Runtime } from '../runtime.js';
import type { MaybePromise } from '../types.js';
import { LookupError, type LookupTarget, type TargetAnswer } from './target.js';

export class LookupFailure {
  constructor(
    readonly detail: string,
    /** Seconds for Retry-After. */
    readonly retryAfter: number = 1,
  ) {}
}

/** What a source makes of an answer: the value to cache and for how long it may be used. */
export interface Decoded<T> {
  readonly value: T;
  /** true: cached for the positive TTL; false: for the negative TTL. */
  readonly positive: boolean;
  /** Epoch ms after which the value must not be used (the answer's own expiry). */
  readonly expiresAtMs?: number;
}

export interface CachedLookupOptions {
  /** Lookup name (metrics label; also part of the cache key space). */
  readonly lookup: string;
  /** Source label for metrics ("session", "introspection", "api-key", "host", "enrich"). */
  readonly source: string;
  readonly timeoutMs: number;
  readonly ttlMs: number;
  readonly negativeTtlMs: number;
  readonly maxEntries: number;
  readonly maxInFlight: number;
  readonly perClientInFlight: number;
  readonly breakerFailures: number;
  readonly breakerCooldownMs: number;
}

interface Entry<T> {
  readonly value: T;
  readonly until: number;
}

export type Outcome = 'found' | 'not_found' | 'error' | 'timeout' | 'shed' | 'breaker_open';

export class CachedLookup<T> {
  private readonly cache: LRUCache<string, Entry<T>>;
  private readonly flights = new Map<string, Promise<T | LookupFailure>>();
  private readonly perClient = new Map<string, number>();
  private inFlight = 0;
  private readonly breaker: CircuitBreaker;
  private readonly outcomes: Record<Outcome, { inc(): void }>;
  private readonly hits: { inc(): void };
  private readonly misses: { inc(): void };
  private readonly joined: { inc(): void };
  private readonly latency: { observe(v: number): void };

  constructor(
    private readonly target: LookupTarget,
    private readonly options: CachedLookupOptions,
    private readonly decode: (answer: TargetAnswer, credential: string) => Decoded<T>,
    private readonly runtime: Pick<Runtime, 'clock' | 'metrics' | 'logger'>,
  ) {
    this.cache = new LRUCache({ max: options.maxEntries });
    this.breaker = new CircuitBreaker(runtime.clock, options.breakerFailures, options.breakerCooldownMs, (state) =>
      runtime.logger.warn({ lookup: options.lookup, source: options.source, state }, 'lookup circuit breaker changed state'),
    );
    const m = lookupMetrics(runtime.metrics);
    const labels = { lookup: options.lookup, source: options.source };
    const outcome = (o: Outcome) => m.lookups.labels({ ...labels, outcome: o });
    this.outcomes = { found: outcome('found'), not_found: outcome('not_found'), error: outcome('error'), timeout: outcome('timeout'), shed: outcome('shed'), breaker_open: outcome('breaker_open') };
    this.hits = m.cache.labels({ ...labels, result: 'hit' });
    this.misses = m.cache.labels({ ...labels, result: 'miss' });
    this.joined = m.cache.labels({ ...labels, result: 'joined' });
    this.latency = m.duration.labels(labels);
  }

  /** Cached entries (for tests and footprint checks). */
  get size(): number {
    return this.cache.size;
  }

  /** The key a credential is cached under: SHA-256, so the cache never holds credentials. */
  static keyOf(credential: string): string {
    return createHash('sha256').update(credential).digest('base64');
  }

  /**
   * The answer for `credential` asked on behalf of `client` (its IP): synchronous on a cache hit,
   * else a promise that always resolves (a LookupFailure on any failure, within the timeout).
   */
  resolve(credential: string, client: string): MaybePromise<T | LookupFailure> {
    const key = CachedLookup.keyOf(credential);
    const entry = this.cache.get(key);
    if (entry !== undefined) {
      if (entry.until > this.runtime.clock.now()) {
        this.hits.inc();
        return entry.value;
      }
      this.cache.delete(key);
    }
    const flight = this.flights.get(key);
    if (flight !== undefined) {
      this.joined.inc();
      return flight;
    }
    this.misses.inc();
    if (this.inFlight >= this.options.maxInFlight) return this.shed('lookups at capacity');
    const mine = this.perClient.get(client) ?? 0;
    if (mine >= this.options.perClientInFlight) return this.shed('client share of lookups exhausted');
    if (!this.breaker.tryAcquire()) {
      this.outcomes.breaker_open.inc();
      return new LookupFailure('circuit breaker open', Math.max(1, Math.ceil(this.breaker.retryAfterMs() / 1000)));
    }
    this.inFlight++;
    this.perClient.set(client, mine + 1);
    const started = performance.now();
    const promise = this.ask(credential, key).finally(() => {
      this.inFlight--;
      const left = (this.perClient.get(client) ?? 1) - 1;
      if (left <= 0) this.perClient.delete(client);
      else this.perClient.set(client, left);
      this.flights.delete(key);
      this.latency.observe((performance.now() - started) / 1000);
    });
    this.flights.set(key, promise);
    return promise;
  }

  private shed(detail: string): LookupFailure {
    this.outcomes.shed.inc();
    return new LookupFailure(detail);
  }

  private async ask(credential: string, key: string): Promise<T | LookupFailure> {
    const controller = new AbortController();
    let timer: Deadline | undefined;
    const deadline = new Promise<never>((_, reject) => {
      // Expires only if still unanswered after the loop has read its sockets (see ioDeadline).
      timer = ioDeadline(this.options.timeoutMs, () => {
        controller.abort();
        reject(new LookupError('timed out', 'timeout'));
      });
    });
    let answer: TargetAnswer;
    try {
      answer = await Promise.race([this.target.query(credential, controller.signal), deadline]);
    } catch (err) {
      this.breaker.failure();
      const failure = err instanceof LookupError ? err : new LookupError(`unexpected: ${(err as Error)?.name ?? 'error'}`);
      this.outcomes[failure.kind].inc();
      this.runtime.logger.debug({ lookup: this.options.lookup, source: this.options.source, detail: failure.detail }, 'lookup failed');
      return new LookupFailure(`lookup ${this.options.lookup}: ${failure.detail}`);
    } finally {
      timer?.cancel();
    }
    this.breaker.success();
    let decoded: Decoded<T>;
    try {
      decoded = this.decode(answer, credential);
    } catch (err) {
      this.outcomes.error.inc();
      return new LookupFailure(`lookup ${this.options.lookup}: answer not usable (${(err as Error)?.name ?? 'error'})`);
    }
    (decoded.positive ? this.outcomes.found : this.outcomes.not_found).inc();
    const now = this.runtime.clock.now();
    let until = now + (decoded.positive ? this.options.ttlMs : this.options.negativeTtlMs);
    if (decoded.expiresAtMs !== undefined) until = Math.min(until, decoded.expiresAtMs);
    if (until > now) this.cache.set(key, { value: decoded.value, until });
    return decoded.value;
  }

  /** Forget everything cached (tests, and a policy that changes the mapping gets a new instance anyway). */
  clear(): void {
    this.cache.clear();
  }
}

interface LookupMetrics {
  lookups: Counter<'lookup' | 'source' | 'outcome'>;
  cache: Counter<'lookup' | 'source' | 'result'>;
  duration: Histogram<'lookup' | 'source'>;
}

export function lookupMetrics(metrics: Runtime['metrics']): LookupMetrics {
  return {
    lookups: metrics.counter('portcullis_lookups_total', 'Lookups sent to a target, by lookup, source and outcome (found, not_found, error, timeout, shed, breaker_open).', ['lookup', 'source', 'outcome']),
    cache: metrics.counter('portcullis_lookup_cache_total', 'Lookup cache results by lookup and source (hit, miss, joined = shared an in-flight lookup).', ['lookup', 'source', 'result']),
    duration: metrics.histogram('portcullis_lookup_duration_seconds', 'Time of lookups sent to a target (cache misses), by lookup and source.', ['lookup', 'source'], [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]),
  };
}
