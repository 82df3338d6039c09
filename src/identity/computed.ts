// Computed identity (README "Expressions (CEL)"): a source entry's `compute:` replaces the tenant,
// subject or scopes the source set with the value of an expression over request.* and auth.* (the
// principal the source proved, auth.claims for JWTs). Wraps the source: a result that is not a
// principal passes through untouched; a failed evaluation is 401 identity_error, a value of the
// wrong shape 401 invalid_computed_identity. Never an exception, never the uncomputed principal.

import { compileExpression, type CompiledExpression, type ExpressionVars } from '../expr/compile.js';
import { checkHeaderNames, credentialHeaderNames } from '../expr/credential-headers.js';
import { expressionReporter } from '../expr/report.js';
import { AuthView, ExpressionScope, RequestView, type RequestFacts } from '../expr/views.js';
import { clientIp } from '../pipeline/client-ip.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { ComputeConfig } from '../policy/schema.js';
import { isPromise, type MaybePromise, type Principal, type RequestAttributes } from '../types.js';
import { rejected, type CredentialSource, type IdentifyResult } from './source.js';
import { maxCharsOf, MAX_IDENTITY_CHARS, MAX_SCOPES } from './value-limits.js';

/** Distinct computed principals kept so repeated callers share one object (and its encoding). */
const MAX_PRINCIPALS = 1024;
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

export function withComputedIdentity(source: CredentialSource, config: ComputeConfig, path: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  const hidden = credentialHeaderNames(ctx.policy);
  let ok = true;
  const compile = (field: 'tenant' | 'subject' | 'scopes'): CompiledExpression | undefined => {
    const text = config[field];
    if (text === undefined) return undefined;
    const at = [...path, field];
    const compiled = compileExpression(text, field === 'scopes' ? 'strings' : 'string', at, ctx);
    if (compiled && compiled.readsParams) {
      ctx.error(at, `expression ${JSON.stringify(text)}: request.params is not known while the caller is identified (use it in route rules)`);
      ok = false;
      return undefined;
    }
    if (!compiled || !checkHeaderNames(compiled, hidden, at, ctx)) ok = false;
    return compiled;
  };
  const tenant = compile('tenant');
  const subject = compile('subject');
  const scopes = compile('scopes');
  if (!ok) return undefined;

  const expressions = [tenant, subject, scopes].filter((e): e is CompiledExpression => e !== undefined);
  const ipSettings = ctx.policy.clientIp;
  const facts: RequestFacts = Object.freeze({
    params: undefined,
    headerNames: Object.freeze([...new Set(expressions.flatMap((e) => e.headerNames))]),
    clientIp: (request: RequestAttributes) => clientIp(request, ipSettings),
  });
  const readsClaims = expressions.some((e) => e.readsClaims);
  const report = expressionReporter(ctx, `identity:${source.name}`);
  const clock = ctx.runtime.clock;
  const principals = new Map<string, Principal>();

  const failed = (expression: CompiledExpression, code: string): IdentifyResult => {
    report(expression, code);
    return rejected({ reason: 'identity_error', credentialPresented: true, detail: `${expression.at}: ${code}` });
  };
  const invalid = (expression: CompiledExpression, what: string): IdentifyResult =>
    rejected({ reason: 'invalid_computed_identity', credentialPresented: true, detail: `${expression.at} gave ${what}` });

  const compute = (request: RequestAttributes, result: IdentifyResult): IdentifyResult => {
    if (result.kind !== 'principal') return result;
    const proved = result.principal;
    const vars: ExpressionVars = new ExpressionScope(
      new RequestView(request, facts),
      new AuthView(proved, readsClaims ? () => source.claimsOf?.(request) : undefined),
      clock,
    );
    let newTenant = proved.tenant;
    let newSubject = proved.subject;
    let newScopes = proved.scopes;
    for (const [expression, field] of [
      [tenant, 'tenant'],
      [subject, 'subject'],
    ] as const) {
      if (!expression) continue;
      const outcome = expression.evaluate(vars);
      if (!outcome.ok) return failed(expression, outcome.code);
      if (typeof outcome.value !== 'string' || outcome.value === '') return invalid(expression, `a ${describe(outcome.value)} for ${field}, not a non-empty string`);
      if (outcome.value.length > maxCharsOf(field)) return invalid(expression, `a ${field} longer than ${maxCharsOf(field)} characters`);
      if (field === 'tenant') newTenant = outcome.value;
      else newSubject = outcome.value;
    }
    if (scopes) {
      const outcome = scopes.evaluate(vars);
      if (!outcome.ok) return failed(scopes, outcome.code);
      const list = outcome.value;
      if (!Array.isArray(list) || list.length > MAX_SCOPES || !list.every((s) => typeof s === 'string' && s.length <= MAX_IDENTITY_CHARS && SCOPE_TOKEN.test(s))) {
        return invalid(scopes, `a ${describe(list)} for scopes, not a list of scope strings`);
      }
      newScopes = Object.freeze([...new Set(list as string[])]);
    }
    const key = `${newTenant ?? ''}\u0000${newSubject ?? ''}\u0000${newScopes.join(' ')}\u0000${proved.keyId ?? ''}\u0000${proved.email ?? ''}\u0000${proved.issuer ?? ''}`;
    let principal = principals.get(key);
    if (principal === undefined || principal.expiresAt !== proved.expiresAt) {
      principal = Object.freeze({ ...proved, tenant: newTenant, subject: newSubject, scopes: newScopes });
      if (principals.size >= MAX_PRINCIPALS) principals.clear();
      principals.set(key, principal);
    }
    return { kind: 'principal', principal, removeHeaders: result.removeHeaders };
  };

  return {
    method: source.method,
    name: source.name,
    claimsOf: source.claimsOf?.bind(source),
    identify(request: RequestAttributes): MaybePromise<IdentifyResult> {
      const result = source.identify(request);
      return isPromise(result) ? result.then((resolved) => compute(request, resolved)) : compute(request, result);
    },
  };
}

function describe(value: unknown): string {
  if (value === '') return 'empty string';
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return 'list with a non-scope element';
  if (typeof value === 'bigint') return 'int';
  if (typeof value === 'number') return 'double';
  return typeof value === 'object' ? 'map' : typeof value;
}
