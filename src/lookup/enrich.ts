// Enrichment: optional steps after identification (top-level `enrich:`) that look more up about
// the principal — by subject, tenant, email or key id — and fill in the tenant, email and scopes.
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
import { compileAnswerMap, Unusable, type MappedAnswer } from './mapping.js';
import type { EnrichConfig } from './schema.js';
import type { TargetAnswer } from './target.js';

const NONE = Object.freeze({ none: true as const });
type Answer = MappedAnswer | typeof NONE;

export type Enricher = (principal: Principal, request: RequestAttributes) => MaybePromise<Principal | Rejected>;

interface Step {
  readonly config: EnrichConfig;
  readonly lookup: CachedLookup<Answer>;
  readonly methods: ReadonlySet<string> | undefined;
  readonly merged: WeakMap<Principal, { answer: Answer; principal: Principal }>;
  /** `enrich:<lookup name>`: the step's portcullis.source on its child span (never the key looked up). */
  readonly spanSource: string;
}

export function compileEnrichment(ctx: CompileContext): Enricher | undefined {
  const list = ctx.policy.enrich;
  if (list.length === 0) return undefined;
  const steps: Step[] = [];
  list.forEach((config, i) => {
    const mapper = compileAnswerMap(config.map, config.scopes);
    const decode = (answer: TargetAnswer): Decoded<Answer> => {
      if (!answer.found) return { value: NONE, positive: false };
      const mapped = mapper(answer.value);
      if (mapped instanceof Unusable) return { value: NONE, positive: false };
      return { value: Object.freeze(mapped), positive: true, expiresAtMs: mapped.expiresAtMs };
    };
    const lookup = namedLookup(config.lookup, ['enrich', i, 'lookup'], 'enrich', JSON.stringify(config), decode, ctx);
    if (lookup) steps.push({ config, lookup, methods: config.methods ? new Set(config.methods) : undefined, merged: new WeakMap(), spanSource: `enrich:${config.lookup}` });
  });
  const ipSettings = ctx.policy.clientIp;

  const run = (principal: Principal, request: RequestAttributes, from: number): MaybePromise<Principal | Rejected> => {
    for (let i = from; i < steps.length; i++) {
      const step = steps[i]!;
      if (step.methods && !step.methods.has(principal.method)) continue;
      if (step.config.onlyWithoutTenant && principal.tenant) continue;
      const key = principal[step.config.by];
      if (key === undefined || key === '') continue;
      const answer = step.lookup.resolve(key, clientShareKey(clientIp(request, ipSettings)));
      if (isPromise(answer)) {
        if (request.trace !== undefined) traceWait(request.trace, answer, LOOKUP_SPAN, step.spanSource);
        return answer.then((a) => {
          if (a instanceof LookupFailure) return unavailable(a);
          return run(merge(step, principal, a), request, i + 1);
        });
      }
      if (answer instanceof LookupFailure) return unavailable(answer);
      principal = merge(step, principal, answer);
    }
    return principal;
  };
  return (principal, request) => run(principal, request, 0);
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
  });
  step.merged.set(principal, { answer, principal: merged });
  return merged;
}
