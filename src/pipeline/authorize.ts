// authorize(policy, request) → Decision: the only place the phases meet.
//
//   route match → route scheme/query (match.schemes, match.query) → bans and request-keyed limits
//   (ip, route, …) → identify (ordered sources, first credential decides) → authorize (credential
//   kind, tenant, scopes) → route expressions (when:, rules) → caller-keyed limits (tenant, key,
//   subject) → allow | deny
//
// Request-keyed limits run before identification so that failed attempts count: a per-IP limit
// is what slows down someone guessing credentials.
//
// Every phase answers synchronously when it can; a promise appears only when a source or the
// rate limiter has to wait on I/O. Any exception becomes a 503 internal_error denial.

import { hostKey, INVALID_HOST, withoutPort } from '../authz/host.js';
import { isSimplePath } from '../authz/path.js';
import { claimsFromChain } from '../expr/route-conditions.js';
import { describeMatch } from '../authz/routes.js';
import { missingScopes } from '../authz/scopes.js';
import type { IdentifyResult, Rejected } from '../identity/source.js';
import { LOOKUP_SPAN, traceWait } from '../observability/tracing.js';
import type { CompiledPolicy, CompiledRoute } from '../policy/compile.js';
import { mergeQuotaHeaders } from '../ratelimit/headers.js';
import { joinNotes } from '../ratelimit/notes.js';
import type { RateLimitVerdict } from '../ratelimit/index.js';
import { isPromise, type Decision, type Denial, type HeaderPair, type MaybePromise, type Principal, type RequestAttributes } from '../types.js';
import { clientIp } from './client-ip.js';
import { allowDecisionWithIdentity, denyDecision, stripUnderscoreVariants, unsafeIdentityValue, type DenyPolicy } from './decision.js';
import type { ExplainCollector } from './explain.js';
import { routeCandidates } from './route-candidates.js';

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

export function internalError(policy: DenyPolicy, request: Pick<RequestAttributes, 'requestId'>, route: string, err: unknown): Decision {
  return denyDecision(policy, request.requestId, route, { reason: 'internal_error', detail: describeError(err) });
}

const INVALID_HOST_DENIAL = Object.freeze({ reason: 'invalid_host', detail: 'host is not a name[:port] Envoy would route (trailing dot, empty label, bad port or character)' } as const);

function decide(policy: CompiledPolicy, request: RequestAttributes, explain: ExplainCollector | undefined): MaybePromise<Decision> {
  const decision = decideFor(policy, request, explain);
  // Rare: a client sent x_tenant_id or similar; the shared removal lists stay untouched otherwise.
  if (request.headers.underscored === undefined) return decision;
  return isPromise(decision) ? decision.then((d) => stripUnderscoreVariants(policy, request, d)) : stripUnderscoreVariants(policy, request, decision);
}

function decideFor(policy: CompiledPolicy, original: RequestAttributes, explain: ExplainCollector | undefined): MaybePromise<Decision> {
  if (policy.mode === 'dev') {
    if (explain) explain.note('mode: dev allows every request as the dev principal');
    return allowDecisionWithIdentity(policy, original.requestId, 'dev', policy.devPrincipal, undefined, NO_REMOVE, NO_HEADERS, undefined, policy.identityToken?.defaults);
  }
  // One host rule for routes and the host source alike (authz/host.ts).
  const host = hostKey(original.host, original.scheme);
  if (host === INVALID_HOST) {
    if (explain) explain.denied('host');
    return denyDecision(policy, original.requestId, 'none', INVALID_HOST_DENIAL);
  }
  const request = host === original.host ? original : { ...original, host };

  // A host with a port: see decideOnReadings.
  const bare = withoutPort(host);
  if (request.method === 'HEAD' || bare !== undefined) return decideOnReadings(policy, request, bare, explain);
  // Hot path: one reading. Anything else: every route any reading reaches must allow.
  if (isSimplePath(request.path) && !policy.paths.everyPathHasReadings) {
    const route = policy.routes.match(host, request.method, request.path) ?? policy.defaultRoute;
    if (explain) explainRoute(policy, request, route, explain);
    return decideOnRoute(policy, request, route, explain);
  }
  const candidates = routeCandidates(policy, request);
  if (Array.isArray(candidates)) {
    if (explain) explain.note(`the path has several readings; every route they reach must allow: ${candidates.map((c) => c.name).join(', ')}`);
    return decideOnAll(policy, request, candidates, explain);
  }
  if ('reason' in candidates) {
    if (explain) explain.denied('path');
    return denyDecision(policy, request.requestId, 'none', candidates);
  }
  if (explain) explainRoute(policy, request, candidates as CompiledRoute, explain);
  return decideOnRoute(policy, request, candidates as CompiledRoute, explain);
}

/**
 * Requests the upstream may serve as another one; every route any reading reaches must allow:
 *   - HEAD: Express, Spring, Tomcat, Flask and Django serve HEAD with the GET handler, so a HEAD
 *     request is judged by the routes a GET of the same path reaches as well as by its own (a
 *     `methods: [GET]` rule must not be escaped by sending HEAD to a weaker fallback);
 *   - a host with a port (`bare` is its name): nginx (server_name), Traefik (Host()), Caddy and
 *     Istio (its "name:*" domains) serve "name:port" as "name"; Envoy with per-port domains may
 *     not. Unless every route the host as sent reaches was written for that exact host and port,
 *     the name's routes are judged too: a port must never escape the rules written for the name.
 * The GET routes, then those of the host as sent, come first.
 */
function decideOnReadings(policy: CompiledPolicy, request: RequestAttributes, bare: string | undefined, explain: ExplainCollector | undefined): MaybePromise<Decision> {
  const methods = request.method === 'HEAD' ? ['GET', 'HEAD'] : [request.method];
  const routes = new Set<CompiledRoute>();
  let byName = false;
  for (const method of methods) {
    const sent = routeCandidates(policy, { ...request, method });
    if (!Array.isArray(sent) && 'reason' in sent) return refusedPath(policy, request, sent as Denial, explain);
    const reached = listOf(sent as CompiledRoute | readonly CompiledRoute[]);
    for (const route of reached) routes.add(route);
    if (bare === undefined || reached.every((route) => route.hostNamesPort)) continue;
    byName = true;
    const named = routeCandidates(policy, { ...request, method, host: bare });
    if (!Array.isArray(named) && 'reason' in named) return refusedPath(policy, request, named as Denial, explain);
    for (const route of listOf(named as CompiledRoute | readonly CompiledRoute[])) routes.add(route);
  }
  const list = [...routes];
  if (list.length === 1) {
    if (explain) explainRoute(policy, request, list[0]!, explain);
    return decideOnRoute(policy, request, list[0]!, explain);
  }
  if (explain) {
    const why = [request.method === 'HEAD' ? 'HEAD is also judged as GET' : '', byName ? `the host's port is named by none of the routes reached: also judged as host ${bare}` : ''].filter(Boolean).join('; ');
    explain.note(`${why}; every route they reach must allow: ${list.map((c) => c.name).join(', ')}`);
  }
  return decideOnAll(policy, request, list, explain);
}

function refusedPath(policy: CompiledPolicy, request: RequestAttributes, denial: Denial, explain: ExplainCollector | undefined): Decision {
  if (explain) explain.denied('path');
  return denyDecision(policy, request.requestId, 'none', denial);
}

function listOf(candidates: CompiledRoute | readonly CompiledRoute[]): readonly CompiledRoute[] {
  return Array.isArray(candidates) ? candidates : [candidates as CompiledRoute];
}

/**
 * Several routes can be what the upstream serves: allowed only if each of them allows, in turn.
 * Each one's limits count too, each counter once, at the highest cost any of the routes gives (a
 * limit the routes share is not charged twice for one request). The first denial is the answer;
 * an allow carries the union of the candidates' header removals.
 */
async function decideOnAll(policy: CompiledPolicy, original: RequestAttributes, routes: readonly CompiledRoute[], explain: ExplainCollector | undefined): Promise<Decision> {
  const allowed: Decision[] = [];
  const request: RequestAttributes = { ...original, chargedLimits: new Map() };
  for (const route of routes) {
    const decision = await decideOnRoute(policy, request, route, explain);
    if (!decision.allowed) return decision;
    allowed.push(decision);
  }
  // The identity headers come from a candidate that identified the caller (public routes do not).
  // Routes with their own identity chains may see different callers in one request: the upstream
  // would get one of them while serving the other's route. Refused rather than guessed.
  let chosen: Decision = allowed[0]!;
  let who: string | undefined;
  for (const d of allowed) {
    if (d.principal === undefined) continue;
    const key = principalKey(d.principal);
    if (who === undefined) {
      who = key;
      chosen = d;
    } else if (key !== who) {
      if (explain) explain.denied('path');
      return denyDecision(policy, request.requestId, d.route, { reason: 'invalid_path', detail: 'readings of the request (its path, HEAD as GET, its host without the port) reach routes that identify the caller differently' });
    }
  }
  if (!chosen.allowed) return chosen;
  const remove = new Set<string>();
  for (const d of allowed) if (d.allowed) for (const h of d.removeHeaders) remove.add(h);
  for (const h of chosen.upstreamHeaders) remove.delete(h.name);
  return { ...chosen, removeHeaders: Object.freeze([...remove]), encodeCache: undefined };
}

function principalKey(p: Principal): string {
  return JSON.stringify([p.method, p.tenant, p.subject, p.keyId, p.email, p.scopes]);
}

function decideOnRoute(policy: CompiledPolicy, request: RequestAttributes, route: CompiledRoute, explain: ExplainCollector | undefined): MaybePromise<Decision> {
  const conditions = route.conditions;
  if (conditions !== undefined) {
    const refusal = conditions.beforeIdentity?.(request) ?? (route.public ? conditions.afterIdentity?.(request, undefined) : undefined);
    if (refusal) {
      if (explain) explain.denied('rule');
      return denyDecision(policy, request.requestId, route.name, refusal);
    }
  }
  if (route.public) return rateLimitThenAllow(policy, request, route, undefined, carriedCredential(route, request), NO_HEADERS, undefined, explain);

  const pre = route.preIdentityLimiter;
  if (!pre) return identifyThenDecide(policy, request, route, NO_HEADERS, undefined, explain);
  if (explain) explain.phase = 'before-identity';
  const verdict = pre.evaluate({ request, clientIp: clientIp(request, policy.clientIp), principal: undefined, route: route.name, explain, charged: request.chargedLimits });
  if (isPromise(verdict) && request.trace !== undefined) traceWait(request.trace, verdict, RATE_LIMIT_SPAN);
  const next = (v: RateLimitVerdict): MaybePromise<Decision> => {
    if (v.denial && explain) explain.denied('rate-limit');
    return v.denial ? denyDecision(policy, request.requestId, route.name, v.denial) : identifyThenDecide(policy, request, route, v.responseHeaders, v.note, explain);
  };
  return isPromise(verdict) ? verdict.then(next) : next(verdict);
}

/** On a public route: the headers of a credential found by inspection (API key as Bearer), stripped anyway. */
function carriedCredential(route: CompiledRoute, request: RequestAttributes): readonly string[] | undefined {
  const sources = route.carrierSources;
  for (let i = 0; i < sources.length; i++) {
    const found = sources[i]!.carrier!(request);
    if (found !== undefined) return found;
  }
  return undefined;
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
      if (request.trace !== undefined) traceWait(request.trace, result, sourceSpan(chain[i]!.method), chain[i]!.name);
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
  const enrich = policy.enrich;
  if (enrich === undefined) return permitThenLimit(policy, request, route, result.principal, result.removeHeaders, preHeaders, preNote, explain);
  // `by: claim:<name>` reads the verified token's claims: only for a principal that token proved.
  const principal = result.principal;
  const enriched = enrich(principal, request, () => (principal.method === 'jwt' ? claimsFromChain(route.chain, request) : undefined));
  const next = (p: Principal | Rejected): MaybePromise<Decision> => {
    if ('kind' in p) {
      if (explain) explain.denied('enrich');
      return denyDecision(policy, request.requestId, route.name, p.denial, result.principal);
    }
    return permitThenLimit(policy, request, route, p, result.removeHeaders, preHeaders, preNote, explain);
  };
  return isPromise(enriched) ? enriched.then(next) : next(enriched);
}

function permitThenLimit(
  policy: CompiledPolicy,
  request: RequestAttributes,
  route: CompiledRoute,
  principal: Principal,
  removeHeaders: readonly string[] | undefined,
  preHeaders: readonly HeaderPair[],
  preNote: string | undefined,
  explain: ExplainCollector | undefined,
): MaybePromise<Decision> {
  if (explain) explain.principal(principal);
  const refusal = checkPermission(policy, route, principal, explain);
  if (refusal) return refusal(request.requestId);
  const ruleDenial = route.conditions?.afterIdentity?.(request, principal);
  if (ruleDenial) {
    if (explain) {
      explain.check(`rule ${ruleDenial.reason}`, false, ruleDenial.detail);
      explain.denied('rule');
    }
    return denyDecision(policy, request.requestId, route.name, ruleDenial, principal);
  }
  if (explain && route.conditions?.afterIdentity) explain.check('rules', true);
  return rateLimitThenAllow(policy, request, route, principal, removeHeaders, preHeaders, preNote, explain);
}

type PendingDenial = (requestId: string) => Decision;

function checkPermission(policy: CompiledPolicy, route: CompiledRoute, principal: Principal, explain: ExplainCollector | undefined): PendingDenial | undefined {
  const unsafe = unsafeIdentityValue(principal);
  if (unsafe) return permissionDenied(policy, route, principal, explain, 'invalid_identity', `${unsafe} too long, or with a control character or surrounding whitespace (fix it where it comes from: the claim, the lookup's query, the expression)`);
  if (route.kind === 'default-deny') return permissionDenied(policy, route, principal, explain, 'route_not_allowed', 'no route matches');
  if (route.credentials && !route.credentials.has(principal.method)) {
    return permissionDenied(policy, route, principal, explain, 'credential_not_allowed', `${principal.method} credentials are not accepted here`);
  }
  const tenant = principal.tenant;
  if (tenant === undefined || tenant === '') {
    if (route.requireTenant) return permissionDenied(policy, route, principal, explain, 'missing_tenant');
  } else {
    if (policy.disabledTenants.has(tenant)) return permissionDenied(policy, route, principal, explain, 'tenant_disabled');
    if (route.tenants && !route.tenants.has(tenant)) return permissionDenied(policy, route, principal, explain, 'tenant_not_allowed');
  }
  const missing = missingScopes(principal.scopes, route.allOf, route.anyOf);
  if (missing) return permissionDenied(policy, route, principal, explain, 'insufficient_scope', `missing ${missing.join(' ')}`, missing);
  if (explain) explainPermission(route, principal, explain);
  return undefined;
}

/** checkPermission's denial (a function, not a closure made on every check: allows are the common case). */
function permissionDenied(
  policy: CompiledPolicy,
  route: CompiledRoute,
  principal: Principal,
  explain: ExplainCollector | undefined,
  reason: Parameters<typeof denyDecision>[3]['reason'],
  detail?: string,
  scopes?: readonly string[],
): PendingDenial {
  if (explain) {
    explain.check(reason, false, detail);
    explain.denied('permission');
  }
  return (requestId) => denyDecision(policy, requestId, route.name, { reason, detail }, principal, scopes);
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
  if (!limiter) return allowDecisionWithIdentity(policy, request.requestId, route.name, principal, credentialHeaders, route.removeHeaders, preHeaders, preNote, route.identityToken);
  if (explain) explain.phase = route.public ? 'all' : 'after-identity';
  const verdict = limiter.evaluate({ request, clientIp: clientIp(request, policy.clientIp), principal, route: route.name, explain, charged: request.chargedLimits });
  if (isPromise(verdict) && request.trace !== undefined) traceWait(request.trace, verdict, RATE_LIMIT_SPAN);
  const finish = (v: RateLimitVerdict): MaybePromise<Decision> => {
    if (v.denial && explain) explain.denied('rate-limit');
    return v.denial
      ? denyDecision(policy, request.requestId, route.name, v.denial, principal)
      : allowDecisionWithIdentity(
          policy,
          request.requestId,
          route.name,
          principal,
          credentialHeaders,
          route.removeHeaders,
          mergeQuotaHeaders(preHeaders, v.responseHeaders),
          joinNotes(preNote, v.note),
          route.identityToken,
        );
  };
  return isPromise(verdict) ? verdict.then(finish) : finish(verdict);
}

// ---- explanations (only ever called with a collector) ----

function explainRoute(policy: CompiledPolicy, request: RequestAttributes, route: CompiledRoute, explain: ExplainCollector): void {
  const { considered } = policy.routes.explain(request.host, request.method, request.path);
  const list = considered.map((c) => ({ name: c.value.name, match: describeMatch(c.spec), matched: c.matched, why: c.why }));
  if (route === policy.defaultRoute) {
    list.push({
      name: 'default',
      match: '(no route matched)',
      matched: true,
      why: route.kind === 'default-deny' ? 'default: deny — identified callers get 403 route_not_allowed' : 'default: authenticated — any identified caller',
    });
  }
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

// Traced checks only: a child span around each wait on I/O — a source that could not answer from
// its cache (JWKS fetch, key-store or lookup call) or a rate limit that went to Redis. Enrichment
// lookups make theirs in lookup/enrich.ts (one per step that waits).
const RATE_LIMIT_SPAN = 'portcullis.ratelimit';
function sourceSpan(method: string): string {
  return method === 'jwt' ? 'portcullis.jwt.keys' : method === 'api-key' ? 'portcullis.keystore.lookup' : LOOKUP_SPAN;
}

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}
