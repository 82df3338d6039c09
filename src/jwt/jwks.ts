// One issuer's JSON Web Key Set, kept fresh in the background. Lives in the runtime resource pool
// (it survives policy reloads) and is shared by every compiled policy that uses the issuer.
//
//   - fetched at start; `ready` resolves after the first successful fetch
//   - refreshed every refreshInterval in the background; failures retry with backoff and keep
//     serving the last good set
//   - a kid it does not know triggers a refetch: concurrent ones share one fetch (single-flight),
//     and at most one such fetch starts per cooldown, so a spray of random kids cannot hammer
//     the issuer
//   - a check never waits on a fetch when the key it needs is cached

import type { Counter } from 'prom-client';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
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
  readonly cooldownMs: number;
  readonly timeoutMs: number;
}

export type KeyLookup =
  | { readonly kind: 'key'; readonly record: KeyRecord }
  | { readonly kind: 'deny'; readonly reason: 'unknown_key' | 'jwks_unavailable'; readonly detail: string };

const FIRST_RETRY_MS = 1_000;

export function jwksResourceKey(settings: JwksSettings): string {
  const where = settings.jwksUri ?? `discovery:${settings.issuer}`;
  return `jwks:${settings.issuerName}:${where}#${settings.refreshIntervalMs}/${settings.cooldownMs}/${settings.timeoutMs}`;
}

export class JwksManager {
  /** Resolves once a key set is available; never rejects (readiness simply stays false). */
  readonly ready: Promise<void>;
  private markReady!: () => void;
  private keys: KeySet | undefined;
  private inflight: Promise<boolean> | undefined;
  /** Clock time the last fetch started (any trigger), for the unknown-kid cooldown. */
  private lastFetchStartedAt = Number.NEGATIVE_INFINITY;
  private consecutiveFailures = 0;
  private timer: NodeJS.Timeout | undefined;
  private disposed = false;
  private readonly abort = new AbortController();
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly fetches: Counter<'issuer' | 'result'>;

  constructor(
    private readonly settings: JwksSettings,
    runtime: Pick<Runtime, 'clock' | 'logger' | 'metrics'>,
  ) {
    this.clock = runtime.clock;
    this.logger = runtime.logger;
    this.fetches = runtime.metrics.counter('portcullis_jwks_fetches_total', 'JWKS (and discovery) fetches by issuer and result.', ['issuer', 'result']);
    this.ready = new Promise((resolve) => (this.markReady = resolve));
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
   * The key for a token. Synchronous when the key is cached; otherwise refetches (unless the
   * cooldown forbids it) and answers after that fetch.
   */
  resolve(kid: string | undefined, alg: string): KeyLookup | Promise<KeyLookup> {
    const selected = this.keys?.select(kid, alg);
    if (typeof selected === 'object') return { kind: 'key', record: selected };
    // Several keys fit a token without kid: a refetch would not change that.
    if (selected === 'ambiguous') return AMBIGUOUS;
    if (this.inflight === undefined && this.clock.now() - this.lastFetchStartedAt < this.settings.cooldownMs) return this.lookup(kid, alg);
    return this.refresh().then(() => this.lookup(kid, alg));
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

  private lookup(kid: string | undefined, alg: string): KeyLookup {
    if (!this.keys) return { kind: 'deny', reason: 'jwks_unavailable', detail: `no keys of issuer ${this.settings.issuerName} are cached` };
    const selected = this.keys.select(kid, alg);
    if (selected === 'ambiguous') return AMBIGUOUS;
    if (selected === 'none') return { kind: 'deny', reason: 'unknown_key', detail: `no ${alg} key${kid === undefined ? '' : ` with kid ${clip(kid)}`} in the key set` };
    return { kind: 'key', record: selected };
  }

  private async fetchAndInstall(): Promise<boolean> {
    this.lastFetchStartedAt = this.clock.now();
    clearTimeout(this.timer);
    let installed = false;
    try {
      const jwksUri = this.settings.jwksUri ?? (await this.discoverJwksUri());
      const parsed = parseJwks(await fetchJsonObject(jwksUri, this.settings.timeoutMs, this.abort.signal));
      if (typeof parsed === 'string') throw new FetchFailure('invalid', `${jwksUri}: ${parsed}`);
      if (parsed.records.length === 0) throw new FetchFailure('invalid', `${jwksUri}: no usable signature key (${parsed.skipped.join('; ') || 'empty set'})`);
      if (this.disposed) return false;
      if (parsed.skipped.length > 0) this.logger.warn({ issuer: this.settings.issuerName, skipped: parsed.skipped }, 'JWKS keys ignored');
      this.install(parsed.records);
      this.consecutiveFailures = 0;
      this.fetches.inc({ issuer: this.settings.issuerName, result: 'success' });
      installed = true;
    } catch (err) {
      if (this.disposed) return false;
      const kind: FetchFailureKind = err instanceof FetchFailure ? err.kind : 'invalid';
      this.consecutiveFailures++;
      this.fetches.inc({ issuer: this.settings.issuerName, result: kind });
      this.logger.warn(
        { issuer: this.settings.issuerName, result: kind, error: (err as Error).message, keysCached: this.keyCount },
        this.keys ? 'JWKS refresh failed; keeping the cached keys' : 'JWKS fetch failed; tokens of this issuer are refused (jwks_unavailable)',
      );
    }
    this.scheduleNext();
    return installed;
  }

  private async discoverJwksUri(): Promise<string> {
    const issuer = this.settings.issuer!;
    const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    const document = await fetchJsonObject(url, this.settings.timeoutMs, this.abort.signal);
    // OpenID Connect Discovery §4.3: the document must name exactly the issuer we asked about.
    if (document.issuer !== issuer) throw new FetchFailure('invalid', `${url}: issuer is ${JSON.stringify(document.issuer)}, expected ${JSON.stringify(issuer)}`);
    const jwksUri = document.jwks_uri;
    if (typeof jwksUri !== 'string' || !URL.canParse(jwksUri)) throw new FetchFailure('invalid', `${url}: jwks_uri is missing or not a URL`);
    const protocol = new URL(jwksUri).protocol;
    // No downgrade: plain http keys only for an issuer that is itself plain http (local setups).
    if (protocol !== 'https:' && !(protocol === 'http:' && issuer.startsWith('http:'))) {
      throw new FetchFailure('invalid', `${url}: jwks_uri ${jwksUri} is not https`);
    }
    return jwksUri;
  }

  /** Swap in a new key set; keys no longer listed are retired, unchanged keys keep their imports. */
  private install(fresh: JwkRecord[]): void {
    const previous = new Map((this.keys?.records ?? []).map((r) => [r.fingerprint, r]));
    const records = fresh.map((r) => previous.get(r.fingerprint) ?? r);
    const kept = new Set(records);
    const removed = [...previous.values()].filter((r) => !kept.has(r));
    for (const record of removed) record.retired = true;
    const added = records.filter((r) => !previous.has(r.fingerprint));
    if (this.keys && (added.length > 0 || removed.length > 0)) {
      this.logger.info({ issuer: this.settings.issuerName, added: added.map((r) => r.kid ?? '(no kid)'), removed: removed.map((r) => r.kid ?? '(no kid)') }, 'JWKS rotated');
    }
    this.keys = new KeySet(records);
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
