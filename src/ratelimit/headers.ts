// Rate-limit response headers.
//
// draft: draft-ietf-httpapi-ratelimit-headers-09 (same form in -10):
//   RateLimit-Policy: "per-tenant";q=200;w=120      quota q units per w seconds
//   RateLimit: "per-tenant";r=57;t=34                r units left, full quota back in t seconds
//   One list member per enforced policy that applied to the request.
//   A token bucket of burst B refilling one unit every T is advertised as q=B, w=B×T: the same
//   sustained rate, and r never exceeds q.
// legacy: X-RateLimit-Limit / X-RateLimit-Remaining / X-RateLimit-Reset (seconds from now), for
//   the policy that refused the request, else the one with the fewest units left.
// Retry-After on a 429 comes from Denial.retryAfter (the pipeline writes it).

import type { HeaderPair } from '../types.js';
import type { LimitOutcome, LimitShape } from './types.js';

export type HeaderStyle = 'draft' | 'legacy' | 'none';

/** A policy's advertised quota, computed once per (policy, plan). */
export interface QuotaDescription {
  readonly policyName: string;
  /** Quota units (burst or window limit). */
  readonly quota: number;
  /** Seconds over which the quota refills. */
  readonly windowSeconds: number;
  /** `"name";q=..;w=..`, the RateLimit-Policy member. */
  readonly policyItem: string;
}

export function describeQuota(policyName: string, shape: LimitShape): QuotaDescription {
  const quota = shape.algorithm === 'bucket' ? shape.burst : shape.limit;
  const windowMs = shape.algorithm === 'bucket' ? shape.toleranceMs : shape.windowMs;
  const windowSeconds = Math.max(1, Math.ceil(windowMs / 1000));
  return { policyName, quota, windowSeconds, policyItem: `"${policyName}";q=${quota};w=${windowSeconds}` };
}

export interface ReportedLimit {
  readonly quota: QuotaDescription;
  readonly outcome: LimitOutcome;
}

/** Seconds for a header from milliseconds: whole, rounded up, never below 0. */
export function headerSeconds(ms: number): number {
  return ms <= 0 ? 0 : Math.ceil(ms / 1000);
}

/**
 * Headers for the limits that applied. `deciding` is the index of the limit that refused the
 * request (legacy style reports it), or -1 on an allowed request.
 */
export function renderHeaders(style: HeaderStyle, limits: readonly ReportedLimit[], deciding: number): HeaderPair[] {
  if (style === 'none' || limits.length === 0) return [];
  if (style === 'draft') {
    let policy = '';
    let state = '';
    for (const { quota, outcome } of limits) {
      if (policy !== '') {
        policy += ', ';
        state += ', ';
      }
      policy += quota.policyItem;
      state += `"${quota.policyName}";r=${outcome.remaining};t=${headerSeconds(outcome.resetMs)}`;
    }
    return [
      { name: 'ratelimit-policy', value: policy },
      { name: 'ratelimit', value: state },
    ];
  }
  let pick = deciding;
  if (pick < 0) {
    pick = 0;
    for (let i = 1; i < limits.length; i++) if (limits[i]!.outcome.remaining < limits[pick]!.outcome.remaining) pick = i;
  }
  const { quota, outcome } = limits[pick]!;
  return [
    { name: 'x-ratelimit-limit', value: String(quota.quota) },
    { name: 'x-ratelimit-remaining', value: String(outcome.remaining) },
    { name: 'x-ratelimit-reset', value: String(headerSeconds(outcome.resetMs)) },
  ];
}

/**
 * Quota headers of the two limiter phases of one request (request-keyed, then caller-keyed) as
 * one set: draft lists are joined (pre first); legacy headers describe the limit with the least
 * left, as they do within one phase.
 */
export function mergeQuotaHeaders(pre: readonly HeaderPair[], post: readonly HeaderPair[]): readonly HeaderPair[] {
  if (pre.length === 0) return post;
  if (post.length === 0) return pre;
  if (pre[0]!.name === 'ratelimit-policy' && post[0]!.name === 'ratelimit-policy') {
    return pre.map((h, i) => ({ name: h.name, value: `${h.value}, ${post[i]!.value}` }));
  }
  const remaining = (headers: readonly HeaderPair[]) => Number(headers.find((h) => h.name === 'x-ratelimit-remaining')?.value ?? Infinity);
  return remaining(pre) < remaining(post) ? pre : post;
}
