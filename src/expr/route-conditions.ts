// A route's expressions, compiled once: match.schemes and match.query (checked as soon as the route
// is chosen, before identification), the route-level `when:` and `rules` (after identification and
// the route's credential/tenant/scope checks). A route without any of them gets `undefined` and the
// pipeline skips the phase: no view, no allocation, nothing.

import type { CredentialSource } from '../identity/source.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { RouteConfig } from '../policy/schema.js';
import { clientIp } from '../pipeline/client-ip.js';
import { REASONS } from '../reasons.js';
import type { Denial, Principal, RequestAttributes } from '../types.js';
import { compileExpression, type CompiledExpression, type ExpressionVars } from './compile.js';
import { expressionReporter, type ExpressionReporter } from './report.js';
import { AuthView, ExpressionScope, RequestView, type ClaimsReader, type RequestFacts } from './views.js';
import { checkHeaderNames, credentialHeaderNames } from './credential-headers.js';

export interface RouteConditions {
  /** Scheme and query requirements; undefined when the route has none. */
  readonly beforeIdentity: ((request: RequestAttributes) => Denial | undefined) | undefined;
  /** when: and rules; undefined when the route has none. */
  readonly afterIdentity: ((request: RequestAttributes, principal: Principal | undefined) => Denial | undefined) | undefined;
}

interface CompiledRule {
  readonly expression: CompiledExpression;
  /** Deny when the expression is this value (true for `when`, false for `unless`). */
  readonly denyWhen: boolean;
  readonly denial: Denial;
}

interface QueryRequirement {
  readonly name: string;
  readonly expression: CompiledExpression | undefined;
  readonly missing: Denial;
  readonly invalid: Denial;
}

const TEMPLATE_SEGMENT = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

export function compileRouteConditions(
  route: RouteConfig,
  routeName: string,
  path: PolicyPath,
  chain: readonly CredentialSource[],
  ctx: CompileContext,
): RouteConditions | undefined {
  const schemes = route.match.schemes ? new Set<string>(route.match.schemes) : undefined;
  const queryEntries = Object.entries(route.match.query ?? {});
  if (!schemes && queryEntries.length === 0 && route.when === undefined && route.rules === undefined) return undefined;

  const hidden = credentialHeaderNames(ctx.policy);
  const expressions: CompiledExpression[] = [];
  const compile = (text: string, at: PolicyPath): CompiledExpression | undefined => {
    const compiled = compileExpression(text, 'bool', at, ctx);
    if (!compiled) return undefined;
    if (!checkHeaderNames(compiled, hidden, at, ctx)) return undefined;
    expressions.push(compiled);
    return compiled;
  };

  const query: QueryRequirement[] = queryEntries.map(([name, spec]) => ({
    name,
    expression: spec === 'present' ? undefined : compile(spec, [...path, 'match', 'query', name]),
    missing: Object.freeze({ reason: 'missing_query_parameter', detail: `query parameter ${name} is absent` }),
    invalid: Object.freeze({ reason: 'invalid_query_parameter', detail: `query parameter ${name} fails its match.query expression` }),
  }));
  const when = route.when !== undefined ? compile(route.when, [...path, 'when']) : undefined;
  const rules: CompiledRule[] = [];
  (route.rules ?? []).forEach((rule, i) => {
    const at: PolicyPath = [...path, 'rules', i, rule.when !== undefined ? 'when' : 'unless'];
    if (Object.hasOwn(REASONS, rule.deny.reason)) {
      ctx.error([...path, 'rules', i, 'deny', 'reason'], `"${rule.deny.reason}" is a built-in reason code with its own meaning; name the rule's reason (e.g. tenant_mismatch)`);
      return;
    }
    const expression = compile((rule.when ?? rule.unless)!, at);
    if (!expression) return;
    const { status, reason, message } = rule.deny;
    rules.push({
      expression,
      denyWhen: rule.when !== undefined,
      denial: Object.freeze({ reason: 'condition_failed', detail: `${expression.at} denied`, rule: Object.freeze({ status, reason, message }) }),
    });
  });

  const readsParams = expressions.some((e) => e.readsParams);
  const params = readsParams ? paramsExtractor(route.match.path) : undefined;
  if (readsParams && !params) {
    ctx.error([...path, 'match'], 'expressions read request.params, but match.path is not a template with {name} segments');
    return undefined;
  }
  const ipSettings = ctx.policy.clientIp;
  const facts: RequestFacts = Object.freeze({
    params,
    headerNames: Object.freeze([...new Set(expressions.flatMap((e) => e.headerNames))]),
    clientIp: (request: RequestAttributes) => clientIp(request, ipSettings),
  });
  const report = expressionReporter(ctx, routeName);
  const clock = ctx.runtime.clock;
  const readsClaims = expressions.some((e) => e.readsClaims);
  const claimsFor = (request: RequestAttributes, principal: Principal | undefined): ClaimsReader | undefined =>
    readsClaims && principal?.method === 'jwt' ? () => claimsFromChain(chain, request) : undefined;
  const vars = (request: RequestAttributes, principal: Principal | undefined): ExpressionVars =>
    new ExpressionScope(new RequestView(request, facts), new AuthView(principal, claimsFor(request, principal)), clock);

  /** true/false, or the denial for an expression that did not produce a bool. */
  const test = (expression: CompiledExpression, v: ExpressionVars): boolean | Denial => {
    const result = expression.evaluate(v);
    if (result.ok && typeof result.value === 'boolean') return result.value;
    const code = result.ok ? 'not_a_bool' : result.code;
    report(expression, code);
    return { reason: 'condition_error', detail: `${expression.at}: ${code}` };
  };

  // The scheme Envoy reported is not repeated in the detail: nothing from the request is logged.
  const schemeRefused: Denial = Object.freeze({ reason: 'scheme_not_allowed', detail: `scheme not one of ${[...(schemes ?? [])].join(', ')}` });
  const beforeIdentity =
    schemes || query.length > 0
      ? (request: RequestAttributes): Denial | undefined => {
          if (schemes && !schemes.has(request.scheme.toLowerCase())) {
            return schemeRefused;
          }
          if (query.length === 0) return undefined;
          const v = vars(request, undefined);
          let present: Map<string, string>;
          try {
            present = v.request.query;
          } catch {
            return { reason: 'invalid_query_parameter', detail: 'the query string cannot be decoded' };
          }
          for (const q of query) {
            if (!present.has(q.name)) return q.missing;
            if (q.expression) {
              const ok = test(q.expression, v);
              if (ok !== true) return ok === false ? q.invalid : ok;
            }
          }
          return undefined;
        }
      : undefined;

  const afterIdentity =
    when || rules.length > 0
      ? (request: RequestAttributes, principal: Principal | undefined): Denial | undefined => {
          const v = vars(request, principal);
          if (when) {
            const ok = test(when, v);
            if (ok !== true) return ok === false ? { reason: 'condition_failed', detail: `${when.at} is false` } : ok;
          }
          for (const rule of rules) {
            const outcome = test(rule.expression, v);
            if (typeof outcome !== 'boolean') return outcome;
            if (outcome === rule.denyWhen) return rule.denial;
          }
          return undefined;
        }
      : undefined;

  return Object.freeze({ beforeIdentity, afterIdentity });
}

/** Claims of the verified token: the first JWT source of the chain that finds a token decided. */
export function claimsFromChain(chain: readonly CredentialSource[], request: RequestAttributes): Readonly<Record<string, unknown>> | undefined {
  for (const source of chain) {
    const claims = source.claimsOf?.(request);
    if (claims !== undefined) return claims;
  }
  return undefined;
}

/** {name} segments of a path template → a function giving their values for a matched path. */
function paramsExtractor(template: string | undefined): ((path: string) => Map<string, string> | undefined) | undefined {
  if (template === undefined || !template.includes('{')) return undefined;
  const names: string[] = [];
  const pattern = template
    .split('/')
    .map((segment) => {
      const m = TEMPLATE_SEGMENT.exec(segment);
      if (m) {
        names.push(m[1]!);
        return '([^/]+)';
      }
      return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  const re = new RegExp(`^${pattern}$`);
  return (path) => {
    const m = re.exec(path);
    if (!m) return undefined;
    const map = new Map<string, string>();
    names.forEach((name, i) => map.set(name, m[i + 1]!));
    return map;
  };
}

export type { ExpressionReporter };
