// The one CEL environment every policy expression is compiled against (README "Expressions
// (CEL)"). Built once per process: it is configuration (types, variables, functions), holds no
// request data and does no I/O. Nothing registered here reads the clock: `now` is a variable the
// pipeline passes in from the injected Clock.

import { Environment } from '@marcbachmann/cel-js';
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
  return env;
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
