// Claim mapping: verified JWT payload → tenant, subject, email, scopes. Compiled once per issuer;
// per token it only walks precomputed paths.

import { maxCharsOf, scopeFits } from '../identity/value-limits.js';
import type { ClaimsConfig, RolesConfig } from './config.js';

export type JsonObject = Record<string, unknown>;

/** Reads one claim: a literal key wins (namespaced URIs contain dots), else a dot path. */
export type ClaimReader = (payload: JsonObject) => unknown;

export function compileClaimPath(path: string): ClaimReader {
  const segments = path.split('.');
  if (segments.length === 1 || segments.some((s) => s === '')) {
    return (payload) => (Object.hasOwn(payload, path) ? payload[path] : undefined);
  }
  return (payload) => {
    if (Object.hasOwn(payload, path)) return payload[path];
    let node: unknown = payload;
    for (const segment of segments) {
      // Own properties of plain objects only: never the prototype chain, never array indexes.
      if (typeof node !== 'object' || node === null || Array.isArray(node) || !Object.hasOwn(node, segment)) return undefined;
      node = (node as JsonObject)[segment];
    }
    return node;
  };
}

/** RFC 6749 scope-token characters; anything else could not travel in x-auth-scopes. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
/** C0 controls and DEL: never allowed in a value that becomes an upstream header. */
const CONTROL = /[\x00-\x1F\x7F]/;
const WHITESPACE = /\s+/;

export interface MappedClaims {
  readonly tenant: string | undefined;
  readonly subject: string | undefined;
  readonly email: string | undefined;
  readonly scopes: readonly string[];
}

/** A claim that cannot become an identity header (control characters, wrong type). */
export class ClaimError {
  constructor(readonly detail: string) {}
}

export type ClaimMapper = (payload: JsonObject) => MappedClaims | ClaimError;

export function compileClaimMapper(config: ClaimsConfig, staticScopes: readonly string[]): ClaimMapper {
  const readTenant = config.tenant === undefined ? undefined : compileClaimPath(config.tenant);
  const readSubject = compileClaimPath(config.subject);
  const readEmail = compileClaimPath(config.email);
  const scopeReaders = config.scopes.map(compileClaimPath);
  const roleScopes = config.roles ? compileRoles(config.roles) : undefined;
  const fixedScopes = staticScopes.filter((s) => SCOPE_TOKEN.test(s));

  return (payload) => {
    const tenant = identityValue(readTenant?.(payload), 'tenant');
    if (tenant instanceof ClaimError) return tenant;
    const subject = identityValue(readSubject(payload), 'subject');
    if (subject instanceof ClaimError) return subject;
    const email = identityValue(readEmail(payload), 'email');
    if (email instanceof ClaimError) return email;

    const scopes = new Set<string>(fixedScopes);
    for (const read of scopeReaders) addScopes(scopes, read(payload));
    roleScopes?.(payload, scopes);
    return { tenant, subject, email, scopes: Object.freeze([...scopes]) };
  };
}

/**
 * A string (or an integer, stringified) that may become an upstream header. Other types count as
 * absent; control characters refuse the token rather than forward a header-splitting value.
 */
function identityValue(value: unknown, what: string): string | undefined | ClaimError {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  if (typeof value !== 'string' || value === '') return undefined;
  if (CONTROL.test(value)) return new ClaimError(`${what} claim contains control characters`);
  if (value.length > maxCharsOf(what)) return new ClaimError(`${what} claim longer than ${maxCharsOf(what)} characters`);
  return value;
}

function addScopes(into: Set<string>, value: unknown): void {
  if (typeof value === 'string') {
    for (const scope of value.split(WHITESPACE)) if (scope !== '' && scopeFits(into, scope) && SCOPE_TOKEN.test(scope)) into.add(scope);
  } else if (Array.isArray(value)) {
    for (const scope of value) if (typeof scope === 'string' && scopeFits(into, scope) && SCOPE_TOKEN.test(scope)) into.add(scope);
  }
}

function stringsOf(value: unknown): readonly string[] {
  if (typeof value === 'string') return value.split(WHITESPACE).filter((s) => s !== '');
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return [];
}

type RoleMap = ReadonlyMap<string, readonly string[]>;

function toRoleMap(record: Readonly<Record<string, readonly string[]>>): RoleMap {
  return new Map(Object.entries(record).map(([role, scopes]) => [role, scopes.filter((s) => SCOPE_TOKEN.test(s))]));
}

/** Roles → scopes; with apps, the role map of the token's application (unknown app → none). */
function compileRoles(config: RolesConfig): (payload: JsonObject, into: Set<string>) => void {
  const readRoles = compileClaimPath(config.claim);
  const grant = (map: RoleMap | undefined, roles: unknown, into: Set<string>) => {
    if (!map) return;
    for (const role of stringsOf(roles)) for (const scope of map.get(role) ?? []) into.add(scope);
  };
  if (config.map) {
    const map = toRoleMap(config.map);
    return (payload, into) => grant(map, readRoles(payload), into);
  }
  const readApp = compileClaimPath(config.appClaim!);
  const apps = new Map(Object.entries(config.apps ?? {}).map(([app, roles]) => [app, toRoleMap(roles)]));
  return (payload, into) => {
    const app = readApp(payload);
    if (typeof app === 'string') grant(apps.get(app), readRoles(payload), into);
  };
}
