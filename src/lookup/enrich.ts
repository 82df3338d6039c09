// Enrichment: optional steps after identification (top-level `enrich:`) that look more up about
// the principal — by subject, tenant, email, key id or a claim of the verified token — and fill in
// the tenant, email, scopes and extra claims (auth.enriched in expressions, apart from the token's).
// Seed 002: an agent JWT without a tenant gets "the user's first org membership". A policy without
// `enrich:` compiles to no enricher at all: the pipeline pays nothing.
//   - not found → the principal goes on unchanged (the route may then refuse missing_tenant);
//   - the lookup failing → 503 lookup_unavailable, never an allow.
// Answers are cached like every lookup; the merged principal is memoized per (principal, answer),
// so a cached caller gets the same principal object on every request. A traced check gets a child
// span (portcullis.lookup, portcullis.source enrich:<lookup>) around each step that waits on its
// target; a cached answer makes none.

import { rejected, type Rejected } from '../identity/source.js';
import { LOOKUP_SPAN, traceWait } from '../observability/tracing.js';
import { clientIp } from '../pipeline/client-ip.js';
import type { CompileContext } from '../policy/context.js';
import { isPromise, type MaybePromise, type Principal, type RequestAttributes } from '../types.js';
import { clientShareKey, namedLookup } from './acquire.js';
import { LookupFailure, type CachedLookup, type Decoded } from './cached-lookup.js';
import { compileAnswerMap, compilePath, Unusable, type MappedAnswer } from './mapping.js';
import type { EnrichConfig } from './schema.js';
import type { TargetAnswer } from './target.js';

const NONE = Object.freeze({ none: true as const });
type Answer = (MappedAnswer & { readonly claims?: Readonly<Record<string, unknown>> }) | typeof NONE;

/** The verified token's claims, read only when a step is keyed by one. */
export type TokenClaims = () => Readonly<Record<string, unknown>> | undefined;

export type Enricher = (principal: Principal, request: RequestAttributes, tokenClaims: TokenClaims) => MaybePromise<Principal | Rejected>;

interface Step {
  readonly config: EnrichConfig;
  readonly lookup: CachedLookup<Answer>;
  readonly methods: ReadonlySet<string> | undefined;
  readonly merged: WeakMap<Principal, { answer: Answer; principal: Principal }>;
  /** `enrich:<lookup name>`: the step's portcullis.source on its child span (never the key looked up). */
  readonly spanSource: string;
  /** What the step looks up by: the principal's own field, or a claim of the verified token. */
  readonly keyOf: (principal: Principal, tokenClaims: TokenClaims) => string | undefined;
}

function keyReader(by: string): Step['keyOf'] {
  if (by.startsWith('claim:')) {
    const name = by.slice('claim:'.length);
    return (_principal, tokenClaims) => {
      const value = tokenClaims()?.[name];
      if (typeof value === 'string') return value;
      // A whole number beyond 2^53 was already rounded by JSON.parse: it would name another record.
      return typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : undefined;
    };
  }
  const field = by as 'subject' | 'tenant' | 'email' | 'keyId';
  return (principal) => principal[field];
}

export function compileEnrichment(ctx: CompileContext): Enricher | undefined {
  const list = ctx.policy.enrich;
  if (list.length === 0) return undefined;
  const steps: Step[] = [];
  list.forEach((config, i) => {
    if (config.by.startsWith('claim:') && config.methods !== undefined && !config.methods.includes('jwt')) {
      ctx.warn(['enrich', i, 'by'], `${config.by} reads a claim of a verified token, but methods leave out jwt: this step never runs`);
    }
    const mapper = compileAnswerMap(config.map, config.scopes);
    const claimReaders = Object.entries(config.claims ?? {}).map(([name, path]) => [name, compilePath(path)] as const);
    const decode = (answer: TargetAnswer): Decoded<Answer> => {
      if (!answer.found) return { value: NONE, positive: false };
      const mapped = mapper(answer.value);
      if (mapped instanceof Unusable) return { value: NONE, positive: false };
      let claims: Record<string, unknown> | undefined;
      for (const [name, read] of claimReaders) {
        const value = boundedClaim(read(answer.value));
        if (value !== undefined) (claims ??= {})[name] = value;
      }
      return { value: Object.freeze({ ...mapped, claims: claims && Object.freeze(claims) }), positive: true, expiresAtMs: mapped.expiresAtMs };
    };
    const lookup = namedLookup(config.lookup, ['enrich', i, 'lookup'], 'enrich', JSON.stringify(config), decode, ctx);
    if (lookup) steps.push({ config, lookup, methods: config.methods ? new Set(config.methods) : undefined, merged: new WeakMap(), spanSource: `enrich:${config.lookup}`, keyOf: keyReader(config.by) });
  });
  const ipSettings = ctx.policy.clientIp;

  const run = (principal: Principal, request: RequestAttributes, tokenClaims: TokenClaims, from: number): MaybePromise<Principal | Rejected> => {
    for (let i = from; i < steps.length; i++) {
      const step = steps[i]!;
      if (step.methods && !step.methods.has(principal.method)) continue;
      if (step.config.onlyWithoutTenant && principal.tenant) continue;
      const key = step.keyOf(principal, tokenClaims);
      if (key === undefined || key === '') continue;
      const answer = step.lookup.resolve(key, clientShareKey(clientIp(request, ipSettings)));
      if (isPromise(answer)) {
        if (request.trace !== undefined) traceWait(request.trace, answer, LOOKUP_SPAN, step.spanSource);
        return answer.then((a) => {
          if (a instanceof LookupFailure) return unavailable(a);
          return run(merge(step, principal, a), request, tokenClaims, i + 1);
        });
      }
      if (answer instanceof LookupFailure) return unavailable(answer);
      principal = merge(step, principal, answer);
    }
    return principal;
  };
  return (principal, request, tokenClaims) => run(principal, request, tokenClaims, 0);
}

/** An added claim is a scalar or a short list of them: what rules compare, bounded in memory per cached answer. */
const MAX_CLAIM_TEXT = 1024;
const MAX_CLAIM_ITEMS = 64;
function boundedClaim(value: unknown): unknown {
  if (typeof value === 'string') return value.length <= MAX_CLAIM_TEXT ? value : undefined;
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value === 'boolean') return value;
  if (Array.isArray(value) && value.length <= MAX_CLAIM_ITEMS) {
    const items = value.map(boundedClaim);
    return items.every((item) => item !== undefined && !Array.isArray(item)) ? Object.freeze(items) : undefined;
  }
  return undefined; // objects, null, long texts and lists: not added
}

function unavailable(failure: LookupFailure): Rejected {
  return rejected({ reason: 'lookup_unavailable', credentialPresented: true, retryAfter: failure.retryAfter, detail: `enrichment: ${failure.detail}` });
}

function merge(step: Step, principal: Principal, answer: Answer): Principal {
  if ('none' in answer) return principal;
  const memo = step.merged.get(principal);
  if (memo !== undefined && memo.answer === answer) return memo.principal;
  const scopes = answer.scopes.length === 0 ? principal.scopes : Object.freeze([...new Set([...principal.scopes, ...answer.scopes])]);
  const merged: Principal = Object.freeze({
    ...principal,
    tenant: answer.tenant ?? principal.tenant,
    email: principal.email ?? answer.email,
    scopes,
    enriched: answer.claims === undefined ? principal.enriched : Object.freeze({ ...principal.enriched, ...answer.claims }),
  });
  step.merged.set(principal, { answer, principal: merged });
  return merged;
}
