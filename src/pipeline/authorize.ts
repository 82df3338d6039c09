// authorize(policy, request) → Decision: the only place the phases meet.
//
//   route match → bans and request-keyed limits (ip, route, …) → identify (ordered sources, first
//   credential decides) → authorize (credential kind, tenant, scopes) → caller-keyed limits
//   (tenant, key, subject) → allow | deny
//
// Request-keyed limits run before identification so that failed attempts count: a per-IP limit
// is what slows down someone guessing credentials.
//
// Every phase answers synchronously when it can; a promise appears only when a source or the
// rate limiter has to wait on I/O. Any exception becomes a 503 internal_error denial.

import { normalizePath } from '../authz/path.js';
import { describeMatch } from '../authz/routes.js';
import { missingScopes } from '../authz/scopes.js';
import type { IdentifyResult } from '../identity/source.js';
import type { CompiledPolicy, CompiledRoute } from '../policy/compile.js';
import { mergeQuotaHeaders } from '../ratelimit/headers.js';
import type { RateLimitVerdict } from '../ratelimit/index.js';
import { isPromise, type Decision, type HeaderPair, type MaybePromise, type Principal, type RequestAttributes } from '../types.js';
import { clientIp } from './client-ip.js';
import { allowDecision, denyDecision, unsafeIdentityValue } from './decision.js';
import type { ExplainCollector } from './explain.js';

const NO_HEADERS: readonly HeaderPair[] = Object.freeze([]);
const NO_REMOVE: readonly string[] = Object.freeze([]);

/**
 * `explain`: when given, every phase records what it did (portcullis check, server.explain).
 * When undefined, nothing is recorded and nothing is allocated.
 */
export function authorize(policy: CompiledPolicy, request: RequestAttributes, explain?: ExplainCollector): MaybePromise<Decision> {
  try {
    const result = decide(policy, request, explain);
    return isPromise(result) ? result.catch((err: unknown) => internalError(policy, request, 'unknown', err)) : result;
  } catch (err) {
    return internalError(policy, request, 'unknown', err);
  }
}

export function internalError(policy: Pick<CompiledPolicy, 'realm'>, request: Pick<RequestAttributes, 'requestId'>, route: string, err: unknown): Decision {
  return denyDecision(policy, request.requestId, route, { reason: 'internal_error', detail: describeError(err) });
}

function decide(policy: CompiledPolicy, request: RequestAttributes, explain: ExplainCollector | undefined): MaybePromise<Decision> {
  if (policy.mode === 'dev') {
    if (explain) explain.note('mode: dev allows every request as the dev principal');
    return allowDecision(policy, request.requestId, 'dev', policy.devPrincipal, undefined, NO_REMOVE, NO_HEADERS);
  }
  const path = normalizePath(request.path);
  if (path === undefined) {
    if (explain) explain.denied('path');
    return denyDecision(policy, request.requestId, 'none', { reason: 'invalid_request', detail: 'path is not an absolute path' });
  }
  const route = policy.routes.match(request.host, request.method, path) ?? policy.defaultRoute;
  if (explain) explainRoute(policy, request, path, route, explain);
  if (route.public) return rateLimitThenAllow(policy, request, route, undefined, undefined, NO_HEADERS, undefined, explain);

  const pre = route.preIdentityLimiter;
  if (!pre) return identifyThenDecide(policy, request, route, NO_HEADERS, undefined, explain);
  if (explain) explain.phase = 'before-identity';
  const verdict = pre.evaluate({ request, clientIp: clientIp(request, policy.xffTrustedHops), principal: undefined, route: route.name, explain });
  const next = (v: RateLimitVerdict): MaybePromise<Decision> => {
    if (v.denial && explain) explain.denied('rate-limit');
    return v.denial ? denyDecision(policy, request.requestId, route.name, v.denial) : identifyThenDecide(policy, request, route, v.responseHeaders, v.note, explain);
  };
  return isPromise(verdict) ? verdict.then(next) : next(verdict);
}

function identifyThenDecide(
  policy: CompiledPolicy,
  request: RequestAttributes,
  route: CompiledRoute,
  preHeaders: readonly HeaderPair[],
  preNote: string | undefined,
  explain: ExplainCollector | undefined,
): MaybePromise<Decision> {
  const identified = identify(route, request, 0, explain);
  if (isPromise(identified)) return identified.then((result) => afterIdentify(policy, request, route, result, preHeaders, preNote, explain));
  return afterIdentify(policy, request, route, identified, preHeaders, preNote, explain);
}

/** Try sources from `start` on; the first that finds a credential decides. */
function identify(route: CompiledRoute, request: RequestAttributes, start: number, explain: ExplainCollector | undefined): MaybePromise<IdentifyResult | undefined> {
  const chain = route.chain;
  for (let i = start; i < chain.length; i++) {
    const result = chain[i]!.identify(request);
    if (isPromise(result)) {
      return result.then((resolved) => {
        if (explain) explainSource(explain, chain[i]!.name, resolved);
        return resolved.kind === 'none' ? identify(route, request, i + 1, explain) : resolved;
      });
    }
    if (explain) explainSource(explain, chain[i]!.name, result);
    if (result.kind !== 'none') return result;
  }
  return undefined;
}

function afterIdentify(
  policy: CompiledPolicy,
  request: RequestAttributes,
  route: CompiledRoute,
  result: IdentifyResult | undefined,
  preHeaders: readonly HeaderPair[],
  preNote: string | undefined,
  explain: ExplainCollector | undefined,
): MaybePromise<Decision> {
  if (result === undefined || result.kind === 'none') {
    if (explain) {
      explain.denied('identity');
      explain.note(route.chain.length === 0 ? 'the route has no identity chain' : 'no source of the identity chain found a credential');
    }
    return denyDecision(policy, request.requestId, route.name, { reason: 'missing_credential' });
  }
  if (result.kind === 'deny') {
    if (explain) explain.denied('identity');
    return denyDecision(policy, request.requestId, route.name, result.denial);
  }
  const principal = result.principal;
  if (explain) explain.principal(principal);
  const refusal = checkPermission(policy, route, principal, explain);
  if (refusal) return refusal(request.requestId);
  return rateLimitThenAllow(policy, request, route, principal, result.removeHeaders, preHeaders, preNote, explain);
}

type PendingDenial = (requestId: string) => Decision;

function checkPermission(policy: CompiledPolicy, route: CompiledRoute, principal: Principal, explain: ExplainCollector | undefined): PendingDenial | undefined {
  const deny = (reason: Parameters<typeof denyDecision>[3]['reason'], detail?: string, scopes?: readonly string[]): PendingDenial => {
    if (explain) {
      explain.check(reason, false, detail);
      explain.denied('permission');
    }
    return (requestId) => denyDecision(policy, requestId, route.name, { reason, detail }, principal, scopes);
  };

  const unsafe = unsafeIdentityValue(principal);
  if (unsafe) return deny('invalid_identity', `control character in ${unsafe}`);
  if (route.kind === 'default-deny') return deny('route_not_allowed', 'no route matches');
  if (route.credentials && !route.credentials.has(principal.method)) {
    return deny('credential_not_allowed', `${principal.method} credentials are not accepted here`);
  }
  const tenant = principal.tenant;
  if (tenant === undefined || tenant === '') {
    if (route.requireTenant) return deny('missing_tenant');
  } else {
    if (policy.disabledTenants.has(tenant)) return deny('tenant_disabled');
    if (route.tenants && !route.tenants.has(tenant)) return deny('tenant_not_allowed');
  }
  const missing = missingScopes(principal.scopes, route.allOf, route.anyOf);
  if (missing) return deny('insufficient_scope', `missing ${missing.join(' ')}`, missing);
  if (explain) explainPermission(route, principal, explain);
  return undefined;
}

function rateLimitThenAllow(
  policy: CompiledPolicy,
  request: RequestAttributes,
  route: CompiledRoute,
  principal: Principal | undefined,
  credentialHeaders: readonly string[] | undefined,
  preHeaders: readonly HeaderPair[],
  preNote: string | undefined,
  explain: ExplainCollector | undefined,
): MaybePromise<Decision> {
  const limiter = route.rateLimiter;
  if (!limiter) return allowDecision(policy, request.requestId, route.name, principal, credentialHeaders, route.removeHeaders, preHeaders, preNote);
  if (explain) explain.phase = route.public ? 'all' : 'after-identity';
  const verdict = limiter.evaluate({ request, clientIp: clientIp(request, policy.xffTrustedHops), principal, route: route.name, explain });
  const finish = (v: RateLimitVerdict): Decision => {
    if (v.denial && explain) explain.denied('rate-limit');
    return v.denial
      ? denyDecision(policy, request.requestId, route.name, v.denial, principal)
      : allowDecision(
          policy,
          request.requestId,
          route.name,
          principal,
          credentialHeaders,
          route.removeHeaders,
          mergeQuotaHeaders(preHeaders, v.responseHeaders),
          joinNotes(preNote, v.note),
        );
  };
  return isPromise(verdict) ? verdict.then(finish) : finish(verdict);
}

// ---- explanations (only ever called with a collector) ----

function explainRoute(policy: CompiledPolicy, request: RequestAttributes, path: string, route: CompiledRoute, explain: ExplainCollector): void {
  const { considered } = policy.routes.explain(request.host, request.method, path);
  const list = considered.map((c) => ({ name: c.value.name, match: describeMatch(c.spec), matched: c.matched, why: c.why }));
  if (route === policy.defaultRoute) {
    list.push({
      name: 'default',
      match: '(no route matched)',
      matched: true,
      why: route.kind === 'default-deny' ? 'default: deny — identified callers get 403 route_not_allowed' : 'default: authenticated — any identified caller',
    });
  }
  if (path !== request.path) explain.note(`path normalised to "${path}" for matching`);
  explain.routes(route.name, route.public ? 'public' : route.kind, route.public, list);
}

function explainSource(explain: ExplainCollector, name: string, result: IdentifyResult): void {
  if (result.kind === 'none') explain.source({ source: name, outcome: 'none', detail: 'no credential of this kind in the request' });
  else if (result.kind === 'deny') explain.source({ source: name, outcome: 'deny', reason: result.denial.reason, detail: result.denial.detail });
  else explain.source({ source: name, outcome: 'principal', detail: `proved ${result.principal.method} caller ${result.principal.subject ?? '(no subject)'}` });
}

function explainPermission(route: CompiledRoute, principal: Principal, explain: ExplainCollector): void {
  if (route.kind === 'default-authenticated') explain.check('default: authenticated', true);
  if (route.credentials) explain.check('credentials', true, `${principal.method} is one of ${[...route.credentials].join(', ')}`);
  if (principal.tenant) {
    explain.check('tenant', true, route.tenants ? `${principal.tenant} is one of ${[...route.tenants].join(', ')}` : `${principal.tenant} is not disabled`);
  } else {
    explain.check('tenant', true, 'no tenant, and the route does not require one');
  }
  if (route.allOf.length > 0) explain.check('require.allOf', true, `has ${route.allOf.join(' ')}`);
  if (route.anyOf.length > 0) explain.check('require.anyOf', true, `has one of ${route.anyOf.join(' ')}`);
}

function joinNotes(a: string | undefined, b: string | undefined): string | undefined {
  if (!a) return b;
  if (!b) return a;
  return `${a},${b}`;
}

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}
