// A lookup's answer (JSON or an SQL row) → tenant, subject, email, scopes, expiry. Paths are
// compiled once; per answer they only walk own properties (never the prototype chain).

import { maxCharsOf, scopeFits } from '../identity/value-limits.js';
import type { AnswerMapConfig } from './schema.js';

export type PathReader = (root: unknown) => unknown;

/** `a.b.c`, `a[0].b`; a literal key that contains dots wins when the root has it. */
export function compilePath(path: string): PathReader {
  const steps: (string | number)[] = [];
  for (const part of path.split('.')) {
    const m = /^([^[\]]+)((?:\[\d+\])*)$/.exec(part);
    if (!m) throw new TypeError(`bad JSON path ${path}`);
    steps.push(m[1]!);
    for (const index of m[2]!.matchAll(/\[(\d+)\]/g)) steps.push(Number(index[1]));
  }
  const walk = (root: unknown): unknown => {
    let node = root;
    for (const step of steps) {
      if (typeof step === 'number') {
        if (!Array.isArray(node) || step >= node.length) return undefined;
        node = node[step];
      } else {
        if (typeof node !== 'object' || node === null || Array.isArray(node) || !Object.hasOwn(node, step)) return undefined;
        node = (node as Record<string, unknown>)[step];
      }
    }
    return node;
  };
  if (steps.length === 1) return walk;
  return (root) => (typeof root === 'object' && root !== null && !Array.isArray(root) && Object.hasOwn(root, path) ? (root as Record<string, unknown>)[path] : walk(root));
}

const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
const CONTROL = /[\x00-\x1F\x7F]/;
const WHITESPACE = /\s+/;

export interface MappedAnswer {
  readonly tenant: string | undefined;
  readonly subject: string | undefined;
  readonly email: string | undefined;
  readonly scopes: readonly string[];
  readonly keyId: string | undefined;
  /** Epoch milliseconds; undefined when the answer carries none. */
  readonly expiresAtMs: number | undefined;
}

/** The answer does not count (present path falsy) or cannot become headers. */
export class Unusable {
  constructor(readonly detail: string) {}
}

export type AnswerMapper = (answer: unknown) => MappedAnswer | Unusable;

export interface MapDefaults {
  subject?: string;
  scopes?: readonly string[];
  expiresAt?: string;
}

export function compileAnswerMap(config: AnswerMapConfig, fixedScopes: readonly string[], defaults: MapDefaults = {}): AnswerMapper {
  const opt = (p: string | undefined) => (p === undefined ? undefined : compilePath(p));
  const readTenant = opt(config.tenant);
  const readSubject = opt(config.subject ?? defaults.subject);
  const readEmail = opt(config.email);
  const scopePaths = config.scopes.length > 0 ? config.scopes : (defaults.scopes ?? []);
  const readScopes = scopePaths.map(compilePath);
  const readExpiry = opt(config.expiresAt ?? defaults.expiresAt);
  const readPresent = opt(config.present);
  const readKeyId = opt(config.keyId);
  const fixed = fixedScopes.filter((s) => SCOPE_TOKEN.test(s));

  return (answer) => {
    if (readPresent && !readPresent(answer)) return new Unusable(`${config.present} is absent`);
    const tenant = identityValue(readTenant?.(answer), 'tenant');
    if (tenant instanceof Unusable) return tenant;
    const subject = identityValue(readSubject?.(answer), 'subject');
    if (subject instanceof Unusable) return subject;
    const email = identityValue(readEmail?.(answer), 'email');
    if (email instanceof Unusable) return email;
    const keyId = identityValue(readKeyId?.(answer), 'keyId');
    if (keyId instanceof Unusable) return keyId;
    const scopes = new Set<string>(fixed);
    for (const read of readScopes) addScopes(scopes, read(answer));
    return { tenant, subject, email, keyId, scopes: Object.freeze([...scopes]), expiresAtMs: readExpiry ? toEpochMs(readExpiry(answer)) : undefined };
  };
}

function identityValue(value: unknown, what: string): string | undefined | Unusable {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  if (typeof value !== 'string' || value === '') return undefined;
  if (CONTROL.test(value)) return new Unusable(`${what} contains control characters`);
  if (value.length > maxCharsOf(what)) return new Unusable(`${what} longer than ${maxCharsOf(what)} characters`);
  return value;
}

export function addScopes(into: Set<string>, value: unknown): void {
  if (typeof value === 'string') {
    for (const scope of value.split(WHITESPACE)) if (scope !== '' && scopeFits(into, scope) && SCOPE_TOKEN.test(scope)) into.add(scope);
  } else if (Array.isArray(value)) {
    for (const scope of value) if (typeof scope === 'string' && scopeFits(into, scope) && SCOPE_TOKEN.test(scope)) into.add(scope);
  }
}

/**
 * ISO-8601 text, a Date (pg timestamps), epoch seconds or epoch milliseconds (values above 1e11
 * are milliseconds: 1e11 s is the year 5138). Anything else: NaN, which callers treat as expired.
 */
export function toEpochMs(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (value instanceof Date) return value.getTime();
  if (typeof value === 'number') return value > 1e11 ? value : value * 1000;
  if (typeof value === 'string') {
    if (/^\d+$/.test(value)) return toEpochMs(Number(value));
    return Date.parse(value);
  }
  return Number.NaN;
}
