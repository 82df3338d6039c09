// PLACEHOLDER contract until the rate-limit issue lands (owned by the rate-limit work).
// The pipeline calls compileRateLimits once per policy load, asks forRoute() once per route at
// compile time, and per request calls evaluate() on the route's limiter after authorization.

import type { CompileContext } from '../policy/context.js';
import type { RouteConfig } from '../policy/schema.js';
import type { Denial, HeaderPair, MaybePromise, Principal, RequestAttributes } from '../types.js';

export interface RateLimitInput {
  readonly request: RequestAttributes;
  /** Client IP after x-forwarded-for trust (policy clientIp.xffTrustedHops). */
  readonly clientIp: string;
  /** Undefined on public routes. */
  readonly principal: Principal | undefined;
  /** Route name ("default" for unmatched requests allowed by `default: authenticated`). */
  readonly route: string;
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

export interface CompiledRateLimits {
  /** The limiter for a route, or undefined when no limit applies to it (the pipeline skips the phase). */
  forRoute(routeName: string, route: RouteConfig | undefined): RouteRateLimiter | undefined;
}

export function compileRateLimits(ctx: CompileContext): CompiledRateLimits | undefined {
  if (ctx.policy.rateLimits === undefined) return undefined;
  ctx.error(['rateLimits'], 'rate limits are not implemented yet');
  return undefined;
}
