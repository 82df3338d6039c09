// Policy expression text → a checked, bounded, reusable evaluator. Runs once per policy load:
// parse, type-check against the environment (environment.ts), check the expression's result type
// and refuse what would be expensive or would reach credentials. Per request only evaluate()
// runs, and it never throws: every failure is a value the caller turns into a denial.

import type { ASTNode, ParseResult } from '@marcbachmann/cel-js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import { expressionEnvironment, MAX_EXPRESSION_LENGTH, RE2_MATCHES, re2Pattern } from './environment.js';
import type { AuthView, RequestView } from './views.js';

/** What an expression must produce. */
export type ExpressionKind = 'bool' | 'string' | 'strings';

export interface ExpressionVars {
  readonly request: RequestView;
  readonly auth: AuthView;
  /** Read from the injected clock, once per evaluation and only when an expression uses it. */
  readonly now: Date;
}

export type Evaluation = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly code: string };

export interface CompiledExpression {
  readonly text: string;
  /** Document path, for logs and decision details ("routes[2].rules[0].unless"). */
  readonly at: string;
  readonly kind: ExpressionKind;
  /** Literal header names the expression reads through request.headers. */
  readonly headerNames: readonly string[];
  /** Whether it reads auth.claims (claims are then decoded for it). */
  readonly readsClaims: boolean;
  /** Whether it reads request.params. */
  readonly readsParams: boolean;
  evaluate(vars: ExpressionVars): Evaluation;
}

/** Macros that loop over a collection. */
const COMPREHENSIONS = new Set(['all', 'exists', 'exists_one', 'map', 'filter']);
/** Comprehensions inside comprehensions multiply their cost: they are refused. */
const MAX_COMPREHENSION_DEPTH = 1;

const RESULT_TYPES: Readonly<Record<ExpressionKind, ReadonlySet<string>>> = {
  bool: new Set(['bool']),
  string: new Set(['string', 'dyn']),
  strings: new Set(['list<string>', 'list<dyn>', 'list', 'dyn']),
};
const KIND_LABEL: Readonly<Record<ExpressionKind, string>> = { bool: 'a bool', string: 'a string', strings: 'a list of strings' };

/** Compile one expression; reports problems through ctx.error and returns undefined then. */
export function compileExpression(text: string, kind: ExpressionKind, path: PolicyPath, ctx: CompileContext): CompiledExpression | undefined {
  const fail = (message: string, offset?: number) => {
    ctx.error(path, `expression ${quote(text)}: ${message}${offset !== undefined ? ` (at character ${offset + 1})` : ''}`);
    return undefined;
  };
  if (text.trim() === '') return fail('is empty');
  if (text.length > MAX_EXPRESSION_LENGTH) return fail(`is ${text.length} characters long; the limit is ${MAX_EXPRESSION_LENGTH}`);

  const env = expressionEnvironment();
  let parsed: ParseResult;
  try {
    parsed = env.parse(text);
  } catch (err) {
    const e = err as { summary?: string; message?: string; range?: { start: number } };
    return fail(`syntax error: ${e.summary ?? firstLine(e.message)}`, e.range?.start);
  }
  const renamed = useRe2(parsed.ast);
  if (renamed) return fail(renamed.message, renamed.offset);
  const checked = parsed.check();
  if (!checked.valid) {
    const e = checked.error as { summary?: string; message?: string; range?: { start: number } } | undefined;
    return fail(`type error: ${describeCheckError(e?.summary ?? firstLine(e?.message))}`, e?.range?.start);
  }
  const type = checked.type ?? 'dyn';
  if (!RESULT_TYPES[kind].has(type)) return fail(`must evaluate to ${KIND_LABEL[kind]}, not ${type}`);

  const facts = inspect(parsed.ast);
  if (facts.problem) return fail(facts.problem.message, facts.problem.offset);

  const at = formatPath(path);
  const run = parsed as unknown as (vars: ExpressionVars) => unknown;
  return Object.freeze({
    text,
    at,
    kind,
    headerNames: Object.freeze([...facts.headerNames]),
    readsClaims: facts.readsClaims,
    readsParams: facts.readsParams,
    evaluate(vars: ExpressionVars): Evaluation {
      try {
        const value = run(vars);
        return { ok: true, value };
      } catch (err) {
        const code = (err as { code?: unknown } | null)?.code;
        return { ok: false, code: typeof code === 'string' && /^[a-z_]{1,40}$/.test(code) ? code : 'evaluation_failed' };
      }
    },
  });
}

interface Facts {
  headerNames: Set<string>;
  readsClaims: boolean;
  readsParams: boolean;
  problem?: { message: string; offset: number };
}

const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;

/**
 * Walk the checked AST once: collect the header names read, and refuse
 *  - `request` / `auth` other than as `request.<field>` / `auth.<field>` (no index, no dyn());
 *  - request.headers used other than by a literal lower-case name (no iteration, no size(), no
 *    computed names: headers are attacker-sized, and a computed name could reach a credential);
 *  - comprehensions (all/exists/exists_one/map/filter) over request data, or nested too deep;
 *  - matches() with a pattern that is not a literal RE2 expression.
 */
function inspect(root: ASTNode): Facts {
  const facts: Facts = { headerNames: new Set(), readsClaims: false, readsParams: false };
  /** Names cel.bind() gives to values built from request data (conservatively, expression-wide). */
  const fromRequest = new Set<string>(['request']);
  const problem = (message: string, node: ASTNode) => {
    facts.problem ??= { message, offset: node.range?.start ?? node.pos ?? 0 };
  };

  const visit = (node: ASTNode, parent: ASTNode | undefined, loops: number): void => {
    if (facts.problem) return;
    if (node.op === 'id' && (node.args === 'request' || node.args === 'auth') && !(parent?.op === '.' && parent.args[0] === node)) {
      // Field by field only: request["headers"] or dyn(request).headers would slip past the checks below.
      problem(`${node.args} is read field by field (${node.args}.${node.args === 'request' ? 'method' : 'tenant'}), not as a whole or by index`, node);
      return;
    }
    if (isSelect(node, 'auth', 'claims')) facts.readsClaims = true;
    if (isSelect(node, 'request', 'params')) facts.readsParams = true;
    if (isSelect(node, 'request', 'headers')) {
      const name = literalHeaderName(node, parent);
      if (name === undefined) {
        problem('request.headers can only be read by a literal lower-case name, e.g. request.headers["x-name"] (no iteration, size or computed names)', node);
        return;
      }
      facts.headerNames.add(name);
    }
    if (node.op === 'rcall' || node.op === 'call') {
      const name = node.args[0];
      if (node.op === 'rcall' && name === 'bind' && node.args[1].op === 'id' && node.args[1].args === 'cel') {
        const [variable, init] = node.args[2];
        if (variable?.op === 'id' && init && [...fromRequest].some((v) => mentions(init, v))) fromRequest.add(variable.args);
      }
      if (node.op === 'rcall' && COMPREHENSIONS.has(name)) {
        const range = node.args[1];
        if ([...fromRequest].some((v) => mentions(range, v))) {
          problem(`${name}() over request data is refused (its cost would grow with the request); test single values instead`, node);
          return;
        }
        if (loops + 1 > MAX_COMPREHENSION_DEPTH) {
          problem(`${name}() inside another comprehension is refused (the cost would multiply)`, node);
          return;
        }
        loops++;
      }
      if (name === RE2_MATCHES) {
        const pattern = node.op === 'rcall' ? node.args[2][0] : node.args[1][1];
        const refusal = patternProblem(pattern);
        if (refusal) {
          problem(refusal, pattern ?? node);
          return;
        }
      }
    }
    for (const child of children(node)) visit(child, node, loops);
  };
  visit(root, undefined, 0);
  return facts;
}

function isSelect(node: ASTNode, variable: string, field: string): boolean {
  return node.op === '.' && node.args[1] === field && node.args[0].op === 'id' && node.args[0].args === variable;
}

/** The header name when `headers` (request.headers) is read by a literal name in `parent`. */
function literalHeaderName(headers: ASTNode, parent: ASTNode | undefined): string | undefined {
  let name: unknown;
  if (parent === undefined) return undefined;
  if ((parent.op === '[]' || parent.op === '[?]') && parent.args[0] === headers && parent.args[1].op === 'value') name = parent.args[1].args;
  else if ((parent.op === '.' || parent.op === '.?') && parent.args[0] === headers) name = parent.args[1];
  else if (parent.op === 'in' && parent.args[1] === headers && parent.args[0].op === 'value') name = parent.args[0].args;
  return typeof name === 'string' && HEADER_NAME.test(name) ? name : undefined;
}

function mentions(node: ASTNode, variable: string): boolean {
  if (node.op === 'id') return node.args === variable;
  for (const child of children(node)) if (mentions(child, variable)) return true;
  return false;
}

function children(node: ASTNode): ASTNode[] {
  const out: ASTNode[] = [];
  const collect = (value: unknown): void => {
    if (Array.isArray(value)) for (const v of value) collect(v);
    else if (value !== null && typeof value === 'object' && 'op' in value && 'args' in value) out.push(value as ASTNode);
  };
  if (node.op !== 'value' && node.op !== 'id') collect(node.args);
  return out;
}

/**
 * Every matches() call of the expression runs RE2 (environment.ts): the parsed calls are renamed
 * before the type check, so evaluation dispatches to it. The internal name itself may not be
 * written (its pattern would escape the check below).
 */
export function useRe2(root: ASTNode): { message: string; offset: number } | undefined {
  let problem: { message: string; offset: number } | undefined;
  const visit = (node: ASTNode): void => {
    if ((node.op === 'rcall' || node.op === 'call') && Array.isArray(node.args)) {
      if (node.args[0] === RE2_MATCHES) problem ??= { message: `unknown function ${RE2_MATCHES}()`, offset: node.range?.start ?? node.pos ?? 0 };
      if (node.args[0] === 'matches') (node.args as unknown[])[0] = RE2_MATCHES;
    }
    for (const child of children(node)) visit(child);
  };
  visit(root);
  return problem;
}

/**
 * matches() takes a literal pattern, known at load, in RE2 syntax (what CEL specifies): RE2 runs in
 * linear time, so no pattern can make a request expensive, and it has no back-references or
 * look-arounds.
 */
function patternProblem(pattern: ASTNode | undefined): string | undefined {
  if (pattern === undefined || pattern.op !== 'value' || typeof pattern.args !== 'string') {
    return 'matches() needs a literal pattern (a computed pattern cannot be checked at load)';
  }
  const compiled = re2Pattern(pattern.args);
  if (typeof compiled === 'string') return `matches() pattern is not a valid RE2 regular expression: ${compiled}`;
  return undefined;
}

function describeCheckError(summary: string): string {
  const key = /^No such key: (.*)$/.exec(summary);
  if (key) return `no such field "${key[1]}"`;
  return summary.replace(/^found no matching overload for /, 'unknown function or wrong argument types: ');
}

function firstLine(message: string | undefined): string {
  return (message ?? 'invalid expression').split('\n')[0]!;
}

function quote(text: string): string {
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}

export function formatPath(path: PolicyPath): string {
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('').replace(/^\./, '');
}
