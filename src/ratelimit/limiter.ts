// Per-request evaluation: bans, then every policy that applies to the route, in one backend call.
// Synchronous with the memory backend, with a remembered over-limit key, an open circuit breaker
// and a ban; a promise only when Redis has to be asked.

import type { Counter } from 'prom-client';
import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';
import { isPromise, type Denial, type MaybePromise } from '../types.js';
import type { ExplainCollector } from '../pipeline/explain.js';
import type { BanWatcher } from './bans-watcher.js';
import type { Escalation } from './escalation.js';
import type { ClientNetworkPrefixes } from './keys.js';
import { FAIL_OPEN_NOTE, SHADOW_NOTE_PREFIX } from './notes.js';
import { renderHeaders, type HeaderStyle, type QuotaDescription, type ReportedLimit } from './headers.js';
import { BackendUnavailableError } from './redis-store.js';
import {
  ALLOWED,
  LOCKED,
  UNAVAILABLE,
  type LimitCheck,
  type LimitOutcome,
  type LimitShape,
  type LimitStore,
  type LockoutShape,
  type RateLimitInput,
  type RateLimitVerdict,
  type RouteRateLimiter,
} from './types.js';

/** A policy's numbers for one plan. */
export interface Variant {
  readonly shape: LimitShape;
  readonly quota: QuotaDescription;
}

export interface PolicyCounters {
  readonly allowed: Counter.Internal;
  readonly rateLimited: Counter.Internal;
  readonly lockedOut: Counter.Internal;
  readonly shadowRateLimited: Counter.Internal;
  readonly shadowLockedOut: Counter.Internal;
  readonly failOpen: Counter.Internal;
  readonly failClosed: Counter.Internal;
}

export interface CompiledLimitPolicy {
  readonly name: string;
  readonly keyOf: (input: RateLimitInput) => string | undefined;
  readonly base: Variant;
  /** Tenant plans: tenant → its variant, or null when the tenant is not limited by this policy. */
  readonly plans: ReadonlyMap<string, Variant | null> | undefined;
  readonly lockout: LockoutShape | undefined;
  /** Repeated lockouts → bans (escalate:); undefined when the policy does not escalate. */
  readonly escalation: Escalation | undefined;
  readonly cost: number;
  readonly shadow: boolean;
  readonly failOpen: boolean;
  readonly counters: PolicyCounters;
}

/** What every route limiter of one compiled policy shares. */
export interface SharedLimits {
  readonly store: LimitStore;
  readonly clock: Clock;
  readonly headerStyle: HeaderStyle;
  readonly quotaHeaders: boolean;
  /** rateLimits.failure: used when the ban list is not loaded yet. */
  readonly failOpen: boolean;
  readonly bans: BanWatcher | undefined;
  /** What per-IP bans match on (policy clientIp prefixes). */
  readonly clientNetwork: ClientNetworkPrefixes;
  readonly bannedCounter: Counter.Internal;
  readonly bansUnavailableCounter: Counter.Internal;
  /** Remote backends only: keys known to be over their limit, skipped until they may pass. */
  readonly overLimit: OverLimitMemory | undefined;
}

const NO_HEADERS: readonly never[] = Object.freeze([]);
const ALLOW: RateLimitVerdict = Object.freeze({ responseHeaders: NO_HEADERS });
const FAIL_OPEN: RateLimitVerdict = Object.freeze({ responseHeaders: NO_HEADERS, note: FAIL_OPEN_NOTE });

/** Placeholder outcome for limits not evaluated on a remembered refusal (neither counted nor advertised). */
const NOT_EVALUATED: LimitOutcome = Object.freeze({ status: ALLOWED, remaining: 0, resetMs: 0, retryMs: 0 });

interface Applied {
  readonly policy: CompiledLimitPolicy;
  readonly variant: Variant;
  readonly check: LimitCheck;
}

export class RouteLimiter implements RouteRateLimiter {
  constructor(
    private readonly shared: SharedLimits,
    private readonly policies: readonly CompiledLimitPolicy[],
    /** routes[i].rateLimits.cost: overrides every policy's cost on this route. */
    private readonly routeCost: number | undefined,
  ) {}

  evaluate(input: RateLimitInput): MaybePromise<RateLimitVerdict> {
    const shared = this.shared;
    if (shared.bans !== undefined) {
      const ban = shared.bans.list.match(input, shared.clientNetwork);
      if (ban === 'unavailable') {
        shared.bansUnavailableCounter.inc();
        if (!shared.failOpen) return { denial: { reason: 'ratelimit_unavailable', detail: 'the ban list has not been loaded yet' }, responseHeaders: NO_HEADERS };
      } else if (ban !== undefined) {
        if (input.explain) input.explain.note(`banned by ${ban}`);
        shared.bannedCounter.inc();
        return { denial: { reason: 'banned', detail: `banned by ${ban}` }, responseHeaders: NO_HEADERS };
      }
    }

    const applied = this.collect(input);
    if (applied === undefined) return ALLOW;

    const remembered = shared.overLimit?.find(applied, shared.clock.now());
    if (remembered !== undefined) {
      if (input.explain) explainLimits(input.explain, applied, remembered);
      return this.verdict(applied, remembered, false, input);
    }

    let result: MaybePromise<readonly LimitOutcome[]>;
    try {
      result = shared.store.check(applied.map((a) => a.check));
    } catch (err) {
      return this.failure(err, applied);
    }
    if (isPromise(result)) {
      return result.then(
        (outcomes) => {
          if (input.explain) explainLimits(input.explain, applied, outcomes);
          return this.verdict(applied, outcomes, true, input);
        },
        (err: unknown) => this.failure(err, applied),
      );
    }
    if (input.explain) explainLimits(input.explain, applied, result);
    return this.verdict(applied, result, true, input);
  }

  /** The policies that apply to this request with their keys and plans; undefined when none. */
  private collect(input: RateLimitInput): Applied[] | undefined {
    let applied: Applied[] | undefined;
    const tenant = input.principal?.tenant;
    const charged = input.charged;
    for (const policy of this.policies) {
      const key = policy.keyOf(input);
      if (key === undefined) continue;
      let variant: Variant | null = policy.base;
      if (policy.plans !== undefined && tenant !== undefined) {
        const plan = policy.plans.get(tenant);
        if (plan !== undefined) variant = plan;
      }
      if (variant === null) continue;
      let cost = this.routeCost ?? policy.cost;
      if (charged !== undefined) {
        // Another route judging this same request charged this counter already: the request
        // counts once, at the highest cost of those routes (a cheap route first cannot dodge an
        // expensive one's `cost:`).
        const already = charged.get(key) ?? 0;
        if (already >= cost) continue;
        charged.set(key, cost);
        cost -= already;
      }
      const check: LimitCheck = { key, shape: variant.shape, lockout: policy.lockout, cost, enforce: !policy.shadow };
      (applied ??= []).push({ policy, variant, check });
    }
    return applied;
  }

  private verdict(applied: readonly Applied[], outcomes: readonly LimitOutcome[], fromBackend: boolean, input: RateLimitInput): RateLimitVerdict {
    let deciding = -1;
    let note: string | undefined;
    /** A counter whose Redis node could not answer and whose policy fails closed. */
    let unavailable: LimitOutcome | undefined;
    let failedOpen = false;
    for (let i = 0; i < applied.length; i++) {
      const { policy } = applied[i]!;
      const outcome = outcomes[i]!;
      if (outcome === NOT_EVALUATED) continue;
      const counters = policy.counters;
      if (outcome.status === ALLOWED) {
        counters.allowed.inc();
        continue;
      }
      if (outcome.status === UNAVAILABLE) {
        // Only this counter's node is down: it follows its policy, the others keep their answers.
        if (policy.shadow || policy.failOpen) {
          counters.failOpen.inc();
          if (!policy.shadow) failedOpen = true;
        } else {
          counters.failClosed.inc();
          if (unavailable === undefined || outcome.retryMs > unavailable.retryMs) unavailable = outcome;
        }
        continue;
      }
      const locked = outcome.status === LOCKED;
      if (policy.shadow) {
        (locked ? counters.shadowLockedOut : counters.shadowRateLimited).inc();
        note = (note === undefined ? '' : note + ' ') + `${SHADOW_NOTE_PREFIX}${policy.name}${locked ? ':locked_out' : ''}`;
        continue;
      }
      (locked ? counters.lockedOut : counters.rateLimited).inc();
      if (outcome.lockedNow === true && policy.escalation !== undefined) policy.escalation.offend(input);
      if (deciding < 0 || outcome.retryMs > outcomes[deciding]!.retryMs) deciding = i;
    }
    if (fromBackend && deciding >= 0) this.shared.overLimit?.remember(applied, outcomes, this.shared.clock.now());
    if (failedOpen) note = note === undefined ? FAIL_OPEN_NOTE : `${FAIL_OPEN_NOTE} ${note}`;
    // A definite refusal (429) outranks a counter that could not be asked; otherwise fail closed.
    if (unavailable !== undefined && deciding < 0) {
      return {
        denial: { reason: 'ratelimit_unavailable', retryAfter: Math.max(1, Math.ceil(unavailable.retryMs / 1000)), detail: unavailable.detail },
        responseHeaders: NO_HEADERS,
      };
    }

    const wantHeaders = this.shared.headerStyle !== 'none' && (deciding >= 0 || this.shared.quotaHeaders);
    const headers = wantHeaders ? renderHeaders(this.shared.headerStyle, reported(applied, outcomes), deciding < 0 ? -1 : enforcedIndex(applied, outcomes, deciding)) : NO_HEADERS;
    if (deciding < 0) {
      if (note === undefined && headers === NO_HEADERS) return ALLOW;
      return { responseHeaders: headers, note };
    }
    const outcome = outcomes[deciding]!;
    const denial: Denial = {
      reason: outcome.status === LOCKED ? 'locked_out' : 'rate_limited',
      retryAfter: Math.max(1, Math.ceil(outcome.retryMs / 1000)),
      headers,
      detail: `policy ${applied[deciding]!.policy.name}`,
    };
    return { denial, responseHeaders: NO_HEADERS, note };
  }

  private failure(err: unknown, applied: readonly Applied[]): RateLimitVerdict {
    // Anything but a backend failure is a bug: the pipeline turns it into 503 internal_error.
    if (!(err instanceof BackendUnavailableError)) throw err;
    let closed = false;
    for (const { policy } of applied) {
      if (!policy.shadow && !policy.failOpen) closed = true;
    }
    for (const { policy } of applied) (closed && !policy.shadow ? policy.counters.failClosed : policy.counters.failOpen).inc();
    if (!closed) return FAIL_OPEN;
    return {
      denial: { reason: 'ratelimit_unavailable', retryAfter: Math.max(1, Math.ceil(err.retryAfterMs / 1000)), detail: err.message },
      responseHeaders: NO_HEADERS,
    };
  }
}

function explainLimits(explain: ExplainCollector, applied: readonly Applied[], outcomes: readonly LimitOutcome[]): void {
  for (let i = 0; i < applied.length; i++) {
    const { policy, check } = applied[i]!;
    const o = outcomes[i]!;
    const outcome = o === NOT_EVALUATED ? 'not_evaluated' : o.status === ALLOWED ? 'allowed' : o.status === LOCKED ? 'locked_out' : 'rate_limited';
    explain.limit({ policy: policy.name, key: check.key, outcome, remaining: o.remaining, resetMs: o.resetMs, shadow: policy.shadow });
  }
}

/** The enforced limits, for headers (shadow policies are never advertised). */
function reported(applied: readonly Applied[], outcomes: readonly LimitOutcome[]): ReportedLimit[] {
  const out: ReportedLimit[] = [];
  for (let i = 0; i < applied.length; i++) {
    if (!applied[i]!.policy.shadow && outcomes[i] !== NOT_EVALUATED && outcomes[i]!.status !== UNAVAILABLE) out.push({ quota: applied[i]!.variant.quota, outcome: outcomes[i]! });
  }
  return out;
}

/** Position of applied[index] among the enforced limits. */
function enforcedIndex(applied: readonly Applied[], outcomes: readonly LimitOutcome[], index: number): number {
  let n = 0;
  for (let i = 0; i < index; i++) if (!applied[i]!.policy.shadow && outcomes[i] !== NOT_EVALUATED && outcomes[i]!.status !== UNAVAILABLE) n++;
  return n;
}

interface Remembered {
  readonly until: number;
  readonly cost: number;
  readonly shape: LimitShape;
  readonly status: LimitOutcome['status'];
}

/**
 * Keys a remote backend refused, remembered until they could pass again. Exact: other instances'
 * requests only ever push that time further out, and a request costing at least as much cannot
 * pass earlier. Plain rate_limited answers of lockout policies are not remembered: each refused
 * request must reach the backend to count as a violation. Locks are.
 */
export class OverLimitMemory {
  private readonly entries: LRUCache<string, Remembered>;

  constructor(maxKeys: number) {
    this.entries = new LRUCache({ max: maxKeys });
  }

  /** Outcomes for every applied limit when an enforced one is remembered; undefined otherwise. */
  find(applied: readonly Applied[], now: number): LimitOutcome[] | undefined {
    if (this.entries.size === 0) return undefined;
    let hit = -1;
    let entry: Remembered | undefined;
    for (let i = 0; i < applied.length; i++) {
      const { check } = applied[i]!;
      if (!check.enforce) continue;
      const e = this.entries.get(check.key);
      // An expired entry stays until overwritten or evicted (deleting the last one makes
      // lru-cache clear all its arrays: O(max) per check).
      if (e === undefined || e.until <= now) continue;
      if (e.shape === check.shape && check.cost >= e.cost) {
        hit = i;
        entry = e;
        break;
      }
    }
    if (entry === undefined) return undefined;
    const wait = Math.ceil(entry.until - now);
    const outcomes: LimitOutcome[] = new Array(applied.length);
    for (let i = 0; i < applied.length; i++) {
      // Only the remembered limit is known; the others are reported as unknown-but-fine.
      outcomes[i] = i === hit ? { status: entry.status, remaining: 0, resetMs: wait, retryMs: wait } : NOT_EVALUATED;
    }
    return outcomes;
  }

  remember(applied: readonly Applied[], outcomes: readonly LimitOutcome[], now: number): void {
    for (let i = 0; i < applied.length; i++) {
      const { check } = applied[i]!;
      const outcome = outcomes[i]!;
      if (!check.enforce || outcome.status === ALLOWED || outcome.status === UNAVAILABLE || outcome.retryMs <= 0) continue;
      if (outcome.status !== LOCKED && check.lockout !== undefined) continue;
      this.entries.set(check.key, { until: now + outcome.retryMs, cost: check.cost, shape: check.shape, status: outcome.status });
    }
  }
}
