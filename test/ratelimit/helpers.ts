// Shared helpers for the rate-limit tests: compile a policy, find a route's limiter, build inputs.
import { PolicyError } from '../../src/errors.js';
import { mergeQuotaHeaders } from '../../src/ratelimit/headers.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import type { RateLimitInput, RateLimitVerdict, RouteRateLimiter } from '../../src/ratelimit/index.js';
import type { Runtime } from '../../src/runtime.js';
import { isPromise, type MaybePromise, type Principal } from '../../src/types.js';
import { request, type RequestInit } from '../support/request.js';
import { compileYaml } from '../support/runtime.js';

/** An identity chain so non-public routes compile; tests hand principals to the limiter directly. */
export const IDENTITY = `
identity:
  - host: { domains: { acme.example.com: { tenant: acme, scopes: [read] } } }
`;

export function compile(yaml: string, runtime: Runtime): CompiledPolicy {
  return compileYaml(IDENTITY + yaml, runtime);
}

/** The messages of a policy that must not compile. */
export function compileErrors(yaml: string, runtime: Runtime): string[] {
  try {
    compile(yaml, runtime);
  } catch (err) {
    if (err instanceof PolicyError) return err.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw err;
  }
  throw new Error('the policy compiled');
}

/**
 * The rate limiting of the route a request to `path` is routed to, both phases as the pipeline
 * runs them: request-keyed limits first, then (when those allow) caller-keyed limits.
 */
export function limiterAt(policy: CompiledPolicy, path: string, method = 'GET'): RouteRateLimiter {
  const route = policy.routes.match('api.example.com', method, path) ?? policy.defaultRoute;
  const phases = [route.preIdentityLimiter, route.rateLimiter].filter((l): l is RouteRateLimiter => l !== undefined);
  if (phases.length === 0) throw new Error(`no rate limiter on ${route.name}`);
  if (phases.length === 1) return phases[0]!;
  const [pre, post] = phases as [RouteRateLimiter, RouteRateLimiter];
  const combine = (first: RateLimitVerdict, second: RateLimitVerdict): RateLimitVerdict => {
    if (second.denial) return second;
    const note = [first.note, second.note].filter(Boolean).join(',') || undefined;
    return { responseHeaders: mergeQuotaHeaders(first.responseHeaders, second.responseHeaders), note };
  };
  return {
    evaluate(input) {
      const first = pre.evaluate(input);
      const then = (v: RateLimitVerdict): MaybePromise<RateLimitVerdict> => {
        if (v.denial) return v;
        const second = post.evaluate(input);
        return isPromise(second) ? second.then((s) => combine(v, s)) : combine(v, second);
      };
      return isPromise(first) ? first.then(then) : then(first);
    },
  };
}

export interface InputInit extends RequestInit {
  ip?: string;
  route?: string;
  tenant?: string;
  subject?: string;
  keyId?: string;
  principal?: Principal | null;
}

export function input(init: InputInit = {}): RateLimitInput {
  const principal =
    init.principal === null
      ? undefined
      : (init.principal ?? {
          method: init.keyId ? 'api-key' : 'jwt',
          tenant: init.tenant ?? 'acme',
          subject: init.subject ?? 'user-1',
          keyId: init.keyId,
          issuer: init.keyId ? undefined : 'auth0',
          scopes: [],
        });
  return { request: request(init), clientIp: init.ip ?? '203.0.113.7', principal, route: init.route ?? 'api' };
}

/** Evaluate and insist the answer came synchronously (memory backend, remembered denials, open breaker). */
export function evaluateSync(limiter: RouteRateLimiter, value: RateLimitInput): RateLimitVerdict {
  const verdict = limiter.evaluate(value);
  if (isPromise(verdict)) throw new Error('expected a synchronous verdict');
  return verdict;
}

export async function evaluate(limiter: RouteRateLimiter, value: RateLimitInput): Promise<RateLimitVerdict> {
  return limiter.evaluate(value);
}

/** "allow" or the denial reason, for compact assertions. */
export function outcome(verdict: RateLimitVerdict): string {
  return verdict.denial ? verdict.denial.reason : 'allow';
}

/** Run `n` evaluations and count the outcomes. */
export function tally(limiter: RouteRateLimiter, n: number, make: (i: number) => RateLimitInput): Record<string, number> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const o = outcome(evaluateSync(limiter, make(i)));
    counts[o] = (counts[o] ?? 0) + 1;
  }
  return counts;
}

export function header(verdict: RateLimitVerdict, name: string): string | undefined {
  const headers = verdict.denial?.headers ?? verdict.responseHeaders;
  return headers.find((h) => h.name === name)?.value;
}

export async function settle<T>(value: MaybePromise<T>): Promise<T> {
  return value;
}

export async function metricValue(runtime: Runtime, name: string, labels: Record<string, string>): Promise<number> {
  const metric = await runtime.metrics.registry.getSingleMetric(name)?.get();
  const found = metric?.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
  return found?.value ?? 0;
}
