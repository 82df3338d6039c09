// The one CEL environment every policy expression is compiled against (README "Expressions
// (CEL)"). Built once per process: it is configuration (types, variables, functions), holds no
// request data and does no I/O. Nothing registered here reads the clock: `now` is a variable the
// pipeline passes in from the injected Clock.

import { Environment } from '@marcbachmann/cel-js';
import { RE2JS } from 're2js';
import { AuthView, RequestView } from './views.js';

/** Structural limits (parse time): a policy expression is a line or two, never a program. */
export const EXPRESSION_LIMITS = Object.freeze({
  maxAstNodes: 256,
  maxDepth: 24,
  maxListElements: 64,
  maxMapEntries: 64,
  maxCallArguments: 8,
});

/** Longest expression text accepted at load. */
export const MAX_EXPRESSION_LENGTH = 2048;

/** The documented variables and their CEL types (README lists exactly these). */
export const REQUEST_FIELDS = Object.freeze({
  method: 'string',
  scheme: 'string',
  host: 'string',
  path: 'string',
  params: 'map<string, string>',
  query: 'map<string, string>',
  queryAll: 'map<string, list<string>>',
  headers: 'map<string, string>',
  ip: 'string',
} as const);

export const AUTH_FIELDS = Object.freeze({
  method: 'string',
  tenant: 'string',
  subject: 'string',
  scopes: 'list<string>',
  keyId: 'string',
  email: 'string',
  claims: 'map<string, dyn>',
  enriched: 'map<string, dyn>',
} as const);

let shared: Environment | undefined;

/** The environment (created on first use; immutable afterwards). */
export function expressionEnvironment(): Environment {
  if (shared === undefined) shared = createEnvironment();
  return shared;
}

function createEnvironment(): Environment {
  const env = new Environment({ limits: EXPRESSION_LIMITS, homogeneousAggregateLiterals: false })
    .registerType('portcullis.Request', { ctor: RequestView, fields: { ...REQUEST_FIELDS } })
    .registerType('portcullis.Auth', { ctor: AuthView, fields: { ...AUTH_FIELDS } })
    .registerVariable('request', 'portcullis.Request')
    .registerVariable('auth', 'portcullis.Auth')
    .registerVariable('now', 'google.protobuf.Timestamp');
  registerStringExtensions(env);
  registerRe2Matches(env);
  return env;
}

/**
 * What `matches()` runs (compile.ts renames the calls to it after parsing): RE2, as the CEL spec
 * says, in linear time. JavaScript's backtracking engine took ~330 ms on a 30 KB path for the
 * harmless-looking `^/files/.*\/.*\.exe$` and seconds for `^a*a*a*b$` on 3 KB (attacker review);
 * RE2 never backtracks. Patterns are literals checked at load; compiled ones are kept.
 */
export const RE2_MATCHES = 're2Matches';
const compiledPatterns = new Map<string, RE2JS>();

/** A pattern RE2 accepts, compiled (kept: patterns are policy literals), or the reason it does not. */
export function re2Pattern(source: string): RE2JS | string {
  const known = compiledPatterns.get(source);
  if (known !== undefined) return known;
  let compiled: RE2JS;
  try {
    compiled = RE2JS.compile(source);
  } catch (err) {
    return (err as Error).message;
  }
  // Policies name a handful of patterns; reloads could add more: a bound all the same.
  if (compiledPatterns.size >= 4096) compiledPatterns.clear();
  compiledPatterns.set(source, compiled);
  return compiled;
}

function re2Matches(text: string, pattern: string): boolean {
  const compiled = re2Pattern(pattern);
  if (typeof compiled === 'string') throw new SyntaxError(`invalid regular expression: ${compiled}`);
  return compiled.test(text); // partial match, as CEL's matches(); the DFA path (no captures)
}

function registerRe2Matches(env: Environment): void {
  env.registerFunction(`string.${RE2_MATCHES}(string): bool`, re2Matches).registerFunction(`${RE2_MATCHES}(string, string): bool`, re2Matches);
}

/**
 * The members of CEL's strings extension the library does not ship (it has charAt-less
 * indexOf/lastIndexOf/lowerAscii/upperAscii/split/substring/trim/join). Semantics follow the
 * cel-go strings extension; lengths and positions are in code points.
 */
function registerStringExtensions(env: Environment): void {
  env
    .registerFunction('string.charAt(int): string', (s: string, i: bigint) => {
      const chars = [...s];
      const n = Number(i);
      if (n < 0 || n > chars.length) throw new RangeError(`index out of range: ${n}`);
      return chars[n] ?? '';
    })
    .registerFunction('string.replace(string, string): string', (s: string, from: string, to: string) => s.split(from).join(to))
    .registerFunction('string.replace(string, string, int): string', (s: string, from: string, to: string, limit: bigint) => {
      let n = Number(limit);
      if (n < 0) return s.split(from).join(to);
      let out = '';
      let rest = s;
      while (n > 0) {
        const at = rest.indexOf(from);
        if (at < 0) break;
        out += rest.slice(0, at) + to;
        rest = rest.slice(at + from.length);
        if (from === '') {
          if (rest === '') break;
          out += rest[0];
          rest = rest.slice(1);
        }
        n--;
      }
      return out + rest;
    })
    .registerFunction('string.reverse(): string', (s: string) => [...s].reverse().join(''));
}
