// Building the two kinds of Decision from plain inputs. The JSON body and challenge headers follow
// DESIGN.md's response contract exactly.

import { MAX_EMAIL_CHARS, MAX_IDENTITY_CHARS, MAX_SCOPES, MAX_SUBJECT_CHARS } from '../identity/value-limits.js';
import { LRUCache } from 'lru-cache';
import { REASONS, STATUS_LABELS, type ReasonCode } from '../reasons.js';
import type { CompiledPolicy } from '../policy/compile.js';
import { defaultBodyParts, renderBody, type BodyParts } from '../policy/deny-body.js';
import type { IssuedToken, RouteIdentityToken } from '../mesh/identity-token.js';
import { isPromise, newEncodeCache, type MaybePromise, type RequestAttributes, type Decision, type AllowDecision, type Denial, type DenyDecision, type EncodeCache, type HeaderPair, type Principal } from '../types.js';

const JSON_CONTENT_TYPE: HeaderPair = Object.freeze({ name: 'content-type', value: 'application/json' });
const NO_HEADERS: readonly HeaderPair[] = Object.freeze([]);

interface DenyParts {
  readonly status: number;
  readonly code: string;
  readonly headers: readonly HeaderPair[];
  /** The body around its request-id slots, rendered at load (denyBody) or once per reason. */
  readonly body: BodyParts;
  readonly cache: EncodeCache;
}

/** What a denial needs of a policy: errors outside any policy (the transport's) have the default body. */
export type DenyPolicy = Pick<CompiledPolicy, 'realm'> & { readonly denyBody?: CompiledPolicy['denyBody'] };

/** Denials that differ only by request id (no principal, no extra headers): built once per policy. */
const denyPartsCache = new WeakMap<object, Map<string, DenyParts>>();

export function denyDecision(
  policy: DenyPolicy,
  requestId: string,
  route: string,
  denial: Denial,
  principal?: Principal,
  requiredScopes?: readonly string[],
): DenyDecision {
  const cacheable =
    principal === undefined && requiredScopes === undefined && denial.headers === undefined && denial.retryAfter === undefined && denial.rule === undefined;
  let parts: DenyParts | undefined;
  if (cacheable) {
    let byKey = denyPartsCache.get(policy);
    if (!byKey) denyPartsCache.set(policy, (byKey = new Map()));
    const key = `${route}\u0000${denial.reason}\u0000${denial.credentialPresented === true ? 1 : 0}`;
    parts = byKey.get(key);
    if (!parts) {
      parts = denyParts(policy, denial, undefined);
      // Route names are bounded by the policy; the guard only protects against surprises.
      if (byKey.size < 10_000) byKey.set(key, parts);
    }
  } else {
    parts = denyParts(policy, denial, requiredScopes);
  }
  return {
    allowed: false,
    requestId,
    route,
    principal,
    status: parts.status,
    code: parts.code,
    reason: denial.rule?.reason ?? denial.reason,
    headers: parts.headers,
    body: renderBody(parts.body, requestId),
    detail: denial.detail,
    encodeCache: cacheable ? parts.cache : undefined,
  };
}

function denyParts(policy: DenyPolicy, denial: Denial, requiredScopes: readonly string[] | undefined): DenyParts {
  const realm = policy.realm;
  const reason = denial.reason;
  const rule = denial.rule;
  const status = rule?.status ?? REASONS[reason].status;
  const label = STATUS_LABELS[status];
  const headers: HeaderPair[] = [JSON_CONTENT_TYPE];
  const challenge = challengeFor(realm, reason, status, denial.credentialPresented === true, requiredScopes);
  if (challenge) headers.push({ name: 'www-authenticate', value: challenge });
  if (denial.retryAfter !== undefined) headers.push({ name: 'retry-after', value: String(Math.max(1, Math.ceil(denial.retryAfter))) });
  else if (status === 503) headers.push({ name: 'retry-after', value: '1' });
  if (denial.headers) for (const h of denial.headers) headers.push(h);
  return {
    status,
    code: label.code,
    headers,
    body: policy.denyBody ? policy.denyBody.parts(reason, rule) : defaultBodyParts(reason, rule),
    cache: newEncodeCache(),
  };
}

/** RFC 6750 §3 challenge for 401s and insufficient_scope 403s. */
function challengeFor(
  realm: string,
  reason: ReasonCode,
  status: number,
  credentialPresented: boolean,
  requiredScopes: readonly string[] | undefined,
): string | undefined {
  const row = REASONS[reason] as { bearerError?: string };
  if (status === 401) {
    // No credential at all: a bare challenge, per RFC 6750 §3.1 (no error code).
    if (!credentialPresented || !row.bearerError) return `Bearer realm="${realm}"`;
    return `Bearer realm="${realm}", error="${row.bearerError}"`;
  }
  if (reason === 'insufficient_scope') {
    const scope = requiredScopes && requiredScopes.length > 0 ? `, scope="${requiredScopes.join(' ').replace(/["\\]/g, '')}"` : '';
    return `Bearer realm="${realm}", error="insufficient_scope"${scope}`;
  }
  return undefined;
}

interface AllowParts {
  readonly routeRemoveHeaders: readonly string[];
  readonly credentialHeaders: readonly string[] | undefined;
  /** The route's identity token setting these parts were built for (undefined: none). */
  readonly identityToken: RouteIdentityToken | undefined;
  /** The identity token in upstreamHeaders, if any. */
  readonly token: IssuedToken | undefined;
  readonly upstreamHeaders: readonly HeaderPair[];
  readonly removeHeaders: readonly string[];
  readonly cache: EncodeCache;
}

/**
 * The parts of a caller's allow decisions, one per route and credential carrier it was seen with
 * (usually one). Principals of cached tokens and keys are stable objects, so a repeated caller
 * reuses its headers and their encoding. Bounded per policy (LRU): 100k cached tokens must not
 * carry 100k encodings, and the callers that repeat within the last few thousand are the ones an
 * encoding pays off for. Public routes (no principal) keep theirs on the policy. Parts carrying an
 * identity token are rebuilt when the token is past its reuse window (mesh/identity-token.ts).
 */
const MAX_CALLERS_PER_POLICY = 4096;
const MAX_PARTS_PER_OWNER = 64;
type OwnedParts = AllowParts | AllowParts[];
const partsByCaller = new WeakMap<CompiledPolicy, LRUCache<Principal, OwnedParts>>();
const publicParts = new WeakMap<CompiledPolicy, OwnedParts>();

export function allowDecision(
  policy: CompiledPolicy,
  requestId: string,
  route: string,
  principal: Principal | undefined,
  credentialHeaders: readonly string[] | undefined,
  routeRemoveHeaders: readonly string[],
  responseHeaders: readonly HeaderPair[],
  note?: string,
): AllowDecision {
  return allowDecisionWithIdentity(policy, requestId, route, principal, credentialHeaders, routeRemoveHeaders, responseHeaders, note, undefined) as AllowDecision;
}

/**
 * allowDecision for a route whose allows carry an identity token: synchronous while the caller's
 * token is reusable, a promise when one has to be signed. Without a token setting (or a principal)
 * it is allowDecision and never a promise.
 */
export function allowDecisionWithIdentity(
  policy: CompiledPolicy,
  requestId: string,
  route: string,
  principal: Principal | undefined,
  credentialHeaders: readonly string[] | undefined,
  routeRemoveHeaders: readonly string[],
  responseHeaders: readonly HeaderPair[],
  note: string | undefined,
  identityToken: RouteIdentityToken | undefined,
): MaybePromise<AllowDecision> {
  let callers: LRUCache<Principal, OwnedParts> | undefined;
  let known: OwnedParts | undefined;
  if (principal === undefined) {
    identityToken = undefined;
    known = publicParts.get(policy);
  } else {
    callers = partsByCaller.get(policy);
    if (callers === undefined) partsByCaller.set(policy, (callers = new LRUCache({ max: MAX_CALLERS_PER_POLICY })));
    known = callers.get(principal);
  }
  let parts: AllowParts | undefined;
  if (known !== undefined) {
    if (!Array.isArray(known)) {
      if (known.routeRemoveHeaders === routeRemoveHeaders && known.credentialHeaders === credentialHeaders && known.identityToken === identityToken) parts = known;
    } else {
      for (const p of known) {
        if (p.routeRemoveHeaders === routeRemoveHeaders && p.credentialHeaders === credentialHeaders && p.identityToken === identityToken) {
          parts = p;
          break;
        }
      }
    }
  }
  if (parts !== undefined && (parts.token === undefined || identityToken!.issuer.reusable(parts.token))) {
    return finishAllow(requestId, route, principal, parts, responseHeaders, note);
  }
  const stale = parts;
  const build = (token: IssuedToken | undefined): AllowDecision => {
    const fresh = allowParts(policy, principal, credentialHeaders, routeRemoveHeaders, identityToken, token);
    remember(policy, callers, principal, known, stale, fresh);
    return finishAllow(requestId, route, principal, fresh, responseHeaders, note);
  };
  if (identityToken === undefined) return build(undefined);
  const token = identityToken.issuer.tokenFor(principal!, identityToken.audience);
  return isPromise(token) ? token.then(build) : build(token);
}

function remember(
  policy: CompiledPolicy,
  callers: LRUCache<Principal, OwnedParts> | undefined,
  principal: Principal | undefined,
  known: OwnedParts | undefined,
  stale: AllowParts | undefined,
  parts: AllowParts,
): void {
  let owned: OwnedParts | undefined = parts;
  if (known !== undefined) {
    if (!Array.isArray(known)) owned = known === stale ? parts : [known, parts];
    else {
      const at = stale === undefined ? -1 : known.indexOf(stale);
      if (at >= 0) known[at] = parts;
      else if (known.length < MAX_PARTS_PER_OWNER) known.push(parts);
      owned = undefined;
    }
  }
  if (owned !== undefined) {
    if (callers !== undefined) callers.set(principal!, owned);
    else publicParts.set(policy, owned);
  }
}

function finishAllow(
  requestId: string,
  route: string,
  principal: Principal | undefined,
  parts: AllowParts,
  responseHeaders: readonly HeaderPair[],
  note: string | undefined,
): AllowDecision {
  return {
    allowed: true,
    requestId,
    route,
    principal,
    upstreamHeaders: parts.upstreamHeaders,
    removeHeaders: parts.removeHeaders,
    responseHeaders: responseHeaders.length === 0 ? NO_HEADERS : responseHeaders,
    note,
    encodeCache: parts.cache,
  };
}

function allowParts(
  policy: CompiledPolicy,
  principal: Principal | undefined,
  credentialHeaders: readonly string[] | undefined,
  routeRemoveHeaders: readonly string[],
  identityToken: RouteIdentityToken | undefined,
  token: IssuedToken | undefined,
): AllowParts {
  const names = policy.headerNames;
  const upstreamHeaders: HeaderPair[] = [];
  // Which identity headers are set, one bit each; 32 marks a caller (x-auth-method is then set).
  let setMask = 0;
  if (principal) {
    // Empty values are never sent (Envoy drops empty headers, which would leave a smuggled value
    // in place); an owned header that is not set is removed instead (removeHeadersFor).
    setMask |= addIfPresent(upstreamHeaders, names.tenant, principal.tenant) ? 1 : 0;
    setMask |= addIfPresent(upstreamHeaders, names.subject, principal.subject) ? 2 : 0;
    setMask |= addIfPresent(upstreamHeaders, names.scopes, principal.scopes.join(' ')) ? 4 : 0;
    upstreamHeaders.push({ name: names.method, value: principal.method });
    setMask |= addIfPresent(upstreamHeaders, names.keyId, principal.keyId) ? 8 : 0;
    setMask |= addIfPresent(upstreamHeaders, names.email, principal.email) ? 16 : 0;
    setMask |= 32;
    if (identityToken !== undefined && token !== undefined) {
      upstreamHeaders.push({ name: identityToken.header, value: token.value });
      setMask |= 64;
    }
  }
  return {
    routeRemoveHeaders,
    credentialHeaders,
    identityToken,
    token,
    upstreamHeaders: Object.freeze(upstreamHeaders),
    removeHeaders: removeHeadersFor(policy, setMask, upstreamHeaders, credentialHeaders, routeRemoveHeaders),
    cache: newEncodeCache(),
  };
}

/**
 * Every owned header not set upstream is removed, so nothing a client sent under those names
 * reaches the upstream. Headers that are set use OVERWRITE_IF_EXISTS_OR_ADD, which replaces any
 * smuggled value; listing them for removal too would make the outcome depend on the order in
 * which Envoy applies the two lists. The list depends only on which identity headers are set, the
 * credential and the route: built once per combination and policy, shared by every caller.
 */
const MAX_CREDENTIAL_LISTS = 64;
const removeListsCache = new WeakMap<CompiledPolicy, Map<readonly string[], Map<readonly string[] | undefined, (readonly string[])[]>>>();

function removeHeadersFor(
  policy: CompiledPolicy,
  setMask: number,
  upstreamHeaders: readonly HeaderPair[],
  credentialHeaders: readonly string[] | undefined,
  routeRemoveHeaders: readonly string[],
): readonly string[] {
  let byRoute = removeListsCache.get(policy);
  if (byRoute === undefined) removeListsCache.set(policy, (byRoute = new Map()));
  // Keyed by the route's and the credential's own lists (one object each per compiled policy).
  let byCredential = byRoute.get(routeRemoveHeaders);
  if (byCredential === undefined) byRoute.set(routeRemoveHeaders, (byCredential = new Map()));
  let byMask = byCredential.get(credentialHeaders);
  if (byMask === undefined) {
    byMask = [];
    // Sources hand out one list per place a credential can be; a list made per request (a key
    // found in several headers) must not grow the map.
    if (byCredential.size < MAX_CREDENTIAL_LISTS) byCredential.set(credentialHeaders, byMask);
  }
  let list = byMask[setMask];
  if (list === undefined) {
    const remove = new Set<string>(policy.ownedHeaders);
    for (const h of upstreamHeaders) remove.delete(h.name);
    if (credentialHeaders) for (const h of credentialHeaders) remove.add(h);
    for (const h of routeRemoveHeaders) remove.add(h);
    list = byMask[setMask] = Object.freeze([...remove]);
  }
  return list;
}

function addIfPresent(into: HeaderPair[], name: string, value: string | undefined): boolean {
  if (value === undefined || value === '') return false;
  into.push({ name, value });
  return true;
}

/**
 * Identity values travel as request headers. One with a control character (CR, LF, NUL, TAB, ...)
 * would be refused by Envoy or, worse, split a header; one with a space or TAB at either end
 * reaches the upstream trimmed (every HTTP hop strips that whitespace), so Portcullis would have
 * judged another value than the one the upstream reads ("acme " is not a disabled "acme", nor
 * its rate-limit bucket). Such a principal is refused instead.
 */
export function unsafeIdentityValue(principal: Principal): string | undefined {
  if (unsafeValue(principal.tenant, MAX_IDENTITY_CHARS)) return 'tenant';
  if (unsafeValue(principal.subject, MAX_SUBJECT_CHARS)) return 'subject';
  if (unsafeValue(principal.email, MAX_EMAIL_CHARS)) return 'email';
  if (unsafeValue(principal.keyId, MAX_IDENTITY_CHARS)) return 'keyId';
  const scopes = principal.scopes;
  if (scopes.length > MAX_SCOPES) return 'scopes';
  for (let i = 0; i < scopes.length; i++) if (unsafeValue(scopes[i], MAX_IDENTITY_CHARS) || scopes[i]!.includes(' ')) return 'scopes';
  return undefined;
}

/** Too long (identity/value-limits.ts), a control character, or whitespace at either end. */
function unsafeValue(value: string | undefined, maxChars: number): boolean {
  if (value === undefined || value === '') return false;
  if (value.length > maxChars) return true;
  if (value.charCodeAt(0) === 0x20 || value.charCodeAt(value.length - 1) === 0x20) return true;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/**
 * On an allow, also remove every header the client sent whose name is an owned identity header
 * once "_" is read as "-" (x_tenant_id, x-auth_subject): CGI/WSGI, and some frameworks, read them
 * as the owned header. Only requests that carry a name with "_" get here.
 */
export function stripUnderscoreVariants(policy: CompiledPolicy, request: RequestAttributes, decision: Decision): Decision {
  const names = request.headers.underscored;
  if (!decision.allowed || names === undefined) return decision;
  let extra: string[] | undefined;
  for (const name of names) {
    if (policy.ownedHeaders.includes(name.replace(/_/g, '-')) && !decision.removeHeaders.includes(name)) (extra ??= []).push(name);
  }
  if (extra === undefined) return decision;
  const allowed: AllowDecision = { ...decision, removeHeaders: Object.freeze([...decision.removeHeaders, ...extra]), encodeCache: undefined };
  return allowed;
}
