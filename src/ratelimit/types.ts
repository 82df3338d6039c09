// The contract between the pipeline and the rate limiter, and the data the limiter passes to its
// backends. The pipeline calls compileRateLimits once per policy load and asks forRoute() once per
// route and phase at compile time. Per request, on protected routes, the 'before-identity' limiter
// runs first (bans and policies keyed only by ip/route/method/host/header: they also count
// requests that will fail authentication, which is what stops credential guessing), then, after
// authorization, the 'after-identity' limiter (policies that need the caller). Public routes run
// one 'all' limiter.

import type { ExplainCollector } from '../pipeline/explain.js';
import type { RouteConfig } from '../policy/schema.js';
import type { Denial, HeaderPair, MaybePromise, Principal, RequestAttributes } from '../types.js';

export interface RateLimitInput {
  readonly request: RequestAttributes;
  /** The client address as Envoy trusts it (policy clientIp; src/pipeline/client-ip.ts), canonical text. */
  readonly clientIp: string;
  /** Undefined on public routes and before identification. */
  readonly principal: Principal | undefined;
  /** Route name ("default" for unmatched requests allowed by `default: authenticated`). */
  readonly route: string;
  /** Set only when the decision is being explained (portcullis check, server.explain). */
  readonly explain?: ExplainCollector;
  /** The request's counters already charged by another route judging it (RequestAttributes.chargedLimits). */
  readonly charged?: Map<string, number>;
}

export interface RateLimitVerdict {
  /** Set when the request must be refused (429 rate_limited / locked_out / banned, 503 ratelimit_unavailable). */
  readonly denial?: Denial;
  /** Quota headers for the client on an allowed response (may be empty). */
  readonly responseHeaders: readonly HeaderPair[];
  /** "shadow:<policy>" or "fail-open" etc., for the decision log; "" or absent when none. */
  readonly note?: string;
}

export interface RouteRateLimiter {
  evaluate(input: RateLimitInput): MaybePromise<RateLimitVerdict>;
}

/**
 * Which policies a limiter evaluates: 'before-identity' = bans + policies whose key needs no
 * caller; 'after-identity' = bans + policies whose key needs one (tenant, apiKey, subject);
 * 'all' = bans + every policy (public routes, where nobody is identified).
 */
export type LimitPhase = 'all' | 'before-identity' | 'after-identity';

export interface CompiledRateLimits {
  /** The limiter for a route and phase, or undefined when nothing applies (the pipeline skips it). */
  forRoute(routeName: string, route: RouteConfig | undefined, phase?: LimitPhase): RouteRateLimiter | undefined;
}

// ---- between the limiter and its backends ----

/** The numbers of one limit, for one algorithm. */
export type LimitShape = BucketShape | WindowShape;

/** Token bucket as GCRA: one unit every `intervalMs`, at most `burst` units at once. */
export interface BucketShape {
  readonly algorithm: 'bucket';
  readonly intervalMs: number;
  readonly burst: number;
  /** burst × intervalMs: how far the theoretical arrival time may run ahead of now. */
  readonly toleranceMs: number;
}

/** Sliding window (exact log): at most `limit` units in any `windowMs`. */
export interface WindowShape {
  readonly algorithm: 'window';
  readonly limit: number;
  readonly windowMs: number;
}

export interface LockoutShape {
  readonly after: number;
  readonly withinMs: number;
  readonly forMs: number;
}

/** One limit to apply in one check. */
export interface LimitCheck {
  /** Storage key of this counter (policy name + key parts); backends add their suffixes. */
  readonly key: string;
  readonly shape: LimitShape;
  readonly lockout: LockoutShape | undefined;
  readonly cost: number;
  /** False for shadow policies: evaluated and counted on their own, never part of the verdict. */
  readonly enforce: boolean;
}

export const ALLOWED = 0;
export const LIMITED = 1;
export const LOCKED = 2;
/** The part of the backend holding this counter could not answer (one Redis Cluster node down). */
export const UNAVAILABLE = 3;
export type LimitStatus = typeof ALLOWED | typeof LIMITED | typeof LOCKED | typeof UNAVAILABLE;

export interface LimitOutcome {
  readonly status: LimitStatus;
  /** Units left after this request (0 when refused). */
  readonly remaining: number;
  /** Milliseconds until the quota is fully restored. */
  readonly resetMs: number;
  /** Milliseconds until a request of this cost can succeed (0 when allowed); UNAVAILABLE: until the next attempt. */
  readonly retryMs: number;
  /** UNAVAILABLE only: why (for the denial's detail). */
  readonly detail?: string;
  /** LOCKED by this very request (the violation that reached lockout.after): counted once, by whoever sees it. */
  readonly lockedNow?: boolean;
}

/** Offences (lockouts) of one escalation key in its current `within` window. */
export interface OffenceCount {
  readonly count: number;
  /** Epoch ms of the first and the latest offence of the window. */
  readonly firstMs: number;
  readonly lastMs: number;
}

/**
 * A backend. `check` applies every limit of one request atomically: enforced limits consume only
 * when all enforced limits allow (a refused request is not counted), shadow limits consume when
 * they allow. A limit refusing with a lockout counts a violation and may lock the key. Throws or
 * rejects when the backend cannot answer any of the limits; when only some could not be answered
 * (their Cluster node is down) those come back UNAVAILABLE and the others are real answers.
 */
export interface LimitStore {
  readonly kind: 'memory' | 'redis';
  check(checks: readonly LimitCheck[]): MaybePromise<readonly LimitOutcome[]>;
  /**
   * Count one offence of `key` (a lockout), in a window of `withinMs` that starts with the first;
   * atomic, so instances sharing the backend never double-count. Rejects when unreachable.
   */
  recordOffence(key: string, withinMs: number): Promise<OffenceCount>;
  /** Forget the offences of `key` (its ban was lifted). */
  clearOffences(key: string): Promise<void>;
}
