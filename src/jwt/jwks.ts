// One issuer's JSON Web Key Set, kept fresh in the background. Lives in the runtime resource pool
// (it survives policy reloads) and is shared by every compiled policy that uses the issuer.
//
//   - fetched at start; `ready` resolves after the first successful fetch
//   - refreshed every refreshInterval in the background; failures retry with backoff and keep
//     serving the last good set
//   - a check never waits on a fetch when the key it needs is cached
//   - a kid it does not know triggers a refetch, whenever the last fetch was: only a fetch that
//     started after the token arrived can prove a kid unknown (a key published and used at once
//     is never refused). Concurrent refetches are merged (single-flight).
//   - spray protection: refetches come from a budget (REFETCH_BURST, then one per cooldown), and a
//     kid a refetch proved unknown is answered without a fetch for one cooldown
//   - a check waits for a refetch at most its wait (jwksRefetchWait); then, or when the issuer
//     cannot be reached, the answer is jwks_unavailable (503), and the fetch goes on in the
//     background to fill the cache. unknown_key (401) only when the issuer said so.

import type { Counter } from 'prom-client';
import type { Clock } from '../clock.js';
import { ioDeadline, type Deadline } from '../deadline.js';
import type { Logger } from '../observability/logger.js';
import { redactUrl, redactUrlsIn } from '../observability/redact.js';
import type { Runtime } from '../runtime.js';
import { FetchFailure, fetchJsonObject, type FetchFailureKind } from './http.js';
import { KeySet, parseJwks, type JwkRecord, type KeyRecord } from './keys.js';

export interface JwksSettings {
  /** Policy name of the issuer (metrics label, logs). */
  readonly issuerName: string;
  /** The configured `iss`, which a discovery document must repeat exactly. */
  readonly issuer: string | undefined;
  /** Fetch keys from this URL... */
  readonly jwksUri?: string;
  /** ...or from the jwks_uri of `<issuer>/.well-known/openid-configuration`. */
  readonly discovery: boolean;
  readonly refreshIntervalMs: number;
  /** Refill period of the refetch budget, and how long a kid proven unknown is remembered. */
  readonly cooldownMs: number;
  readonly timeoutMs: number;
}

export type KeyLookup =
  | { readonly kind: 'key'; readonly record: KeyRecord }
  | { readonly kind: 'deny'; readonly reason: 'unknown_key' | 'refused_key' | 'jwks_unavailable'; readonly detail: string };

const FIRST_RETRY_MS = 1_000;
/** Refetches unknown kids may cause at once; after that, one per cooldown. */
export const REFETCH_BURST = 3;
/** Kids proven unknown that are remembered at most (each for one cooldown). */
const MAX_PROVEN_UNKNOWN = 1_024;
/** Longer kids are not remembered (they still need the budget to cause a fetch). */
const MAX_REMEMBERED_KID = 256;
const TIMED_OUT = Symbol('timed out');

export function jwksResourceKey(settings: JwksSettings): string {
  const where = settings.jwksUri ?? `discovery:${settings.issuer}`;
  return `jwks:${settings.issuerName}:${where}#${settings.refreshIntervalMs}/${settings.cooldownMs}/${settings.timeoutMs}`;
}

/** A token bucket on the injected clock: `capacity` tokens, one more every `refillMs`. */
class RefetchBudget {
  private tokens: number;
  private updatedAt: number;

  constructor(
    private readonly capacity: number,
    private readonly refillMs: number,
    private readonly clock: Clock,
  ) {
    this.tokens = capacity;
    this.updatedAt = clock.now();
  }

  available(): boolean {
    const now = this.clock.now();
    if (now > this.updatedAt) {
      this.tokens = Math.min(this.capacity, this.tokens + (now - this.updatedAt) / this.refillMs);
      this.updatedAt = now;
    }
    return this.tokens >= 1;
  }

  take(): boolean {
    if (!this.available()) return false;
    this.tokens -= 1;
    return true;
  }
}

export class JwksManager {
  /** Resolves once a key set is available; never rejects (readiness simply stays false). */
  readonly ready: Promise<void>;
  private markReady!: () => void;
  private keys: KeySet | undefined;
  private inflight: Promise<boolean> | undefined;
  /** Fetches started so far; a fetch's sequence number is the value after its start. */
  private started = 0;
  /** Sequence number of the last fetch that completed, and whether it failed. */
  private completed = 0;
  private lastFailed = false;
  private readonly budget: RefetchBudget;
  /** `alg kid` → clock time until which a refetch is known not to find it. */
  private readonly provenUnknown = new Map<string, number>();
  private consecutiveFailures = 0;
  private timer: NodeJS.Timeout | undefined;
  private disposed = false;
  private readonly abort = new AbortController();
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly fetches: Counter<'issuer' | 'result'>;
  /** Tokens whose kid is not in the cached set, by what happened (counted per issuer). */
  private readonly unknownKids: Readonly<Record<'refetch' | 'remembered' | 'budget_spent' | 'refused', { inc(): void }>>;

  constructor(
    private readonly settings: JwksSettings,
    runtime: Pick<Runtime, 'clock' | 'logger' | 'metrics'>,
  ) {
    this.clock = runtime.clock;
    this.logger = runtime.logger;
    this.fetches = runtime.metrics.counter('portcullis_jwks_fetches_total', 'JWKS (and discovery) fetches by issuer and result.', ['issuer', 'result']);
    const unknownKids = runtime.metrics.counter(
      'portcullis_jwks_unknown_kids_total',
      'Tokens whose kid is not in the cached key set: refetch (waited for a fetch), remembered (proven unknown by a recent refetch), budget_spent (no refetch allowed), refused (the key is published but refused).',
      ['issuer', 'result'],
    );
    const issuer = settings.issuerName;
    this.unknownKids = {
      refetch: unknownKids.labels({ issuer, result: 'refetch' }),
      remembered: unknownKids.labels({ issuer, result: 'remembered' }),
      budget_spent: unknownKids.labels({ issuer, result: 'budget_spent' }),
      refused: unknownKids.labels({ issuer, result: 'refused' }),
    };
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    this.budget = new RefetchBudget(REFETCH_BURST, settings.cooldownMs, this.clock);
  }

  /** Start the first fetch (and with it the refresh cycle). */
  start(): void {
    void this.refresh();
  }

  /** Number of usable keys currently cached (0 before the first successful fetch). */
  get keyCount(): number {
    return this.keys?.records.length ?? 0;
  }

  /**
   * The key for a token. Synchronous when the key is cached (the hot path: one map lookup), when
   * the kid is refused or proven unknown, and when the refetch budget is spent; otherwise waits
   * for a refetch, at most `waitMs`.
   */
  resolve(kid: string | undefined, alg: string, waitMs: number): KeyLookup | Promise<KeyLookup> {
    const selected = this.keys?.select(kid, alg);
    if (typeof selected === 'object') return { kind: 'key', record: selected };
    // Several keys fit a token without kid: a refetch would not change that.
    if (selected === 'ambiguous') return AMBIGUOUS;
    if (kid !== undefined && this.keys?.refused(kid) !== undefined) {
      this.unknownKids.refused.inc();
      return this.withoutKey(kid, alg, false);
    }
    if (this.isProvenUnknown(kid, alg)) {
      this.unknownKids.remembered.inc();
      return this.withoutKey(kid, alg, false);
    }
    if (this.inflight === undefined && !this.budget.available()) {
      this.unknownKids.budget_spent.inc();
      return this.withoutKey(kid, alg, false);
    }
    this.unknownKids.refetch.inc();
    if (waitMs <= 0) {
      // Never wait: the refetch runs in the background, this check is told the keys are not there yet.
      if (this.inflight === undefined && this.budget.take()) void this.refresh();
      return this.notYet(0);
    }
    return this.awaitKey(kid, alg, waitMs);
  }

  private notYet(waitMs: number): KeyLookup {
    return { kind: 'deny', reason: 'jwks_unavailable', detail: `the key set of issuer ${this.settings.issuerName} did not arrive within ${waitMs} ms (the fetch goes on)` };
  }

  /** Fetch now, or join the fetch in progress. Resolves true when a new key set was installed. */
  refresh(): Promise<boolean> {
    if (this.disposed) return Promise.resolve(false);
    this.inflight ??= this.fetchAndInstall().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  dispose(): void {
    this.disposed = true;
    clearTimeout(this.timer);
    this.abort.abort();
  }

  /** Wait for a fetch that started after this call, bounded by `waitMs`. */
  private awaitKey(kid: string | undefined, alg: string, waitMs: number): Promise<KeyLookup> {
    let timer: Deadline | undefined;
    const deadline = new Promise<typeof TIMED_OUT>((resolve) => {
      // Expires only if still unanswered after the loop has read its sockets (see ioDeadline).
      timer = ioDeadline(waitMs, () => resolve(TIMED_OUT), { unref: true });
    });
    return this.untilFetchedAfter(this.started, kid, alg, deadline, waitMs).finally(() => timer?.cancel());
  }

  private async untilFetchedAfter(arrival: number, kid: string | undefined, alg: string, deadline: Promise<typeof TIMED_OUT>, waitMs: number): Promise<KeyLookup> {
    // Join the fetch under way (it may bring the key); if it started before this token arrived and
    // did not, one more fetch (merged with others in the same situation) decides.
    for (let round = 0; round < 4; round++) {
      const selected = this.keys?.select(kid, alg);
      if (typeof selected === 'object') return { kind: 'key', record: selected };
      if (selected === 'ambiguous') return AMBIGUOUS;
      if (this.completed > arrival) return this.withoutKey(kid, alg, true);
      if (this.inflight === undefined && !this.budget.take()) break;
      const fetch = this.inflight ?? this.refresh();
      if ((await Promise.race([fetch, deadline])) === TIMED_OUT) return this.notYet(waitMs);
    }
    return this.withoutKey(kid, alg, false);
  }

  /** The answer when no key fits. `proven`: a fetch that started after the token arrived succeeded. */
  private withoutKey(kid: string | undefined, alg: string, proven: boolean): KeyLookup {
    const name = this.settings.issuerName;
    const refused = kid === undefined ? undefined : this.keys?.refused(kid);
    if (refused !== undefined) return { kind: 'deny', reason: 'refused_key', detail: `issuer ${name} publishes kid ${clip(kid!)}, but the key is refused: ${refused}` };
    if (!this.keys) return { kind: 'deny', reason: 'jwks_unavailable', detail: `no keys of issuer ${name} are cached` };
    const which = `no ${alg} key${kid === undefined ? '' : ` with kid ${clip(kid)}`}`;
    if (this.lastFailed) return { kind: 'deny', reason: 'jwks_unavailable', detail: `${which} is cached and the key set of issuer ${name} cannot be fetched` };
    if (proven) this.rememberUnknown(kid, alg);
    return { kind: 'deny', reason: 'unknown_key', detail: `${which} in the key set` };
  }

  private isProvenUnknown(kid: string | undefined, alg: string): boolean {
    if (this.provenUnknown.size === 0) return false;
    const memo = `${alg} ${kid ?? ''}`;
    const until = this.provenUnknown.get(memo);
    if (until === undefined) return false;
    if (this.clock.now() < until) return true;
    this.provenUnknown.delete(memo);
    return false;
  }

  private rememberUnknown(kid: string | undefined, alg: string): void {
    if (kid !== undefined && kid.length > MAX_REMEMBERED_KID) return;
    const memo = `${alg} ${kid ?? ''}`;
    this.provenUnknown.delete(memo);
    if (this.provenUnknown.size >= MAX_PROVEN_UNKNOWN) this.provenUnknown.delete(this.provenUnknown.keys().next().value!);
    this.provenUnknown.set(memo, this.clock.now() + this.settings.cooldownMs);
  }

  private async fetchAndInstall(): Promise<boolean> {
    const sequence = ++this.started;
    clearTimeout(this.timer);
    let installed = false;
    try {
      const jwksUri = this.settings.jwksUri ?? (await this.discoverJwksUri());
      const parsed = parseJwks(await fetchJsonObject(jwksUri, this.settings.timeoutMs, this.abort.signal));
      if (typeof parsed === 'string') throw new FetchFailure('invalid', `${redactUrl(jwksUri)}: ${parsed}`);
      if (this.disposed) return false;
      if (parsed.skipped.length > 0) this.logger.warn({ issuer: this.settings.issuerName, refused: parsed.skipped }, 'JWKS keys refused');
      if (parsed.records.length === 0) throw new FetchFailure('invalid', `${redactUrl(jwksUri)}: no usable signature key (${parsed.skipped.length > 0 ? `${parsed.skipped.length} refused` : 'empty set'})`);
      this.install(parsed.records, parsed.refusedKids);
      this.consecutiveFailures = 0;
      this.fetches.inc({ issuer: this.settings.issuerName, result: 'success' });
      installed = true;
    } catch (err) {
      if (this.disposed) return false;
      const kind: FetchFailureKind = err instanceof FetchFailure ? err.kind : 'invalid';
      this.consecutiveFailures++;
      this.fetches.inc({ issuer: this.settings.issuerName, result: kind });
      this.logger.warn(
        // FetchFailure messages carry redacted URLs only; anything else is redacted here.
        { issuer: this.settings.issuerName, result: kind, error: err instanceof FetchFailure ? err.message : redactUrlsIn(String((err as Error)?.message ?? err)), keysCached: this.keyCount },
        this.keys ? 'JWKS refresh failed; keeping the cached keys' : 'JWKS fetch failed; tokens of this issuer are refused (jwks_unavailable)',
      );
    }
    this.completed = sequence;
    this.lastFailed = !installed;
    this.scheduleNext();
    return installed;
  }

  private async discoverJwksUri(): Promise<string> {
    const issuer = this.settings.issuer!;
    const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    const shown = redactUrl(url);
    const document = await fetchJsonObject(url, this.settings.timeoutMs, this.abort.signal);
    // OpenID Connect Discovery §4.3: the document must name exactly the issuer we asked about.
    if (document.issuer !== issuer) throw new FetchFailure('invalid', `${shown}: issuer is ${clip(String(document.issuer))}, expected ${JSON.stringify(issuer)}`);
    const jwksUri = document.jwks_uri;
    if (typeof jwksUri !== 'string' || !URL.canParse(jwksUri)) throw new FetchFailure('invalid', `${shown}: jwks_uri is missing or not a URL`);
    const protocol = new URL(jwksUri).protocol;
    // No downgrade: plain http keys only for an issuer that is itself plain http (local setups).
    if (protocol !== 'https:' && !(protocol === 'http:' && issuer.startsWith('http:'))) {
      throw new FetchFailure('invalid', `${shown}: jwks_uri ${redactUrl(jwksUri)} is not https`);
    }
    return jwksUri;
  }

  /** Swap in a new key set; keys no longer listed are retired, unchanged keys keep their imports. */
  private install(fresh: JwkRecord[], refusedKids: ReadonlyMap<string, string>): void {
    const previous = new Map((this.keys?.records ?? []).map((r) => [r.fingerprint, r]));
    const records = fresh.map((r) => previous.get(r.fingerprint) ?? r);
    const kept = new Set(records);
    const removed = [...previous.values()].filter((r) => !kept.has(r));
    for (const record of removed) record.retired = true;
    const added = records.filter((r) => !previous.has(r.fingerprint));
    if (this.keys && (added.length > 0 || removed.length > 0)) {
      this.logger.info({ issuer: this.settings.issuerName, added: added.map((r) => r.kid ?? '(no kid)'), removed: removed.map((r) => r.kid ?? '(no kid)') }, 'JWKS rotated');
    }
    this.keys = new KeySet(records, refusedKids);
    this.markReady();
  }

  private scheduleNext(): void {
    if (this.disposed) return;
    const delay =
      this.consecutiveFailures === 0
        ? this.settings.refreshIntervalMs
        : Math.min(FIRST_RETRY_MS * 2 ** (this.consecutiveFailures - 1), this.settings.refreshIntervalMs);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.refresh(), delay);
    this.timer.unref();
  }
}

const AMBIGUOUS: KeyLookup = Object.freeze({ kind: 'deny', reason: 'unknown_key', detail: 'the token has no kid and several keys of the set fit its alg' });

/** Attacker-chosen strings in decision details stay short and quoted. */
export function clip(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}
