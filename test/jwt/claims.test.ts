// Claim mapping: literal namespaced keys vs nested paths, scopes from arrays / strings / roles,
// values that must never become headers.

import { describe, expect, it } from 'vitest';
import { ClaimError, compileClaimMapper, compileClaimPath, type MappedClaims } from '../../src/jwt/claims.js';
import { claimsSchema } from '../../src/jwt/config.js';

const mapper = (claims: Record<string, unknown>, staticScopes: string[] = []) => compileClaimMapper(claimsSchema.parse(claims), staticScopes);
const mapped = (result: MappedClaims | ClaimError): MappedClaims => {
  if (result instanceof ClaimError) throw new Error(result.detail);
  return result;
};

describe('claim paths', () => {
  it('prefers a literal key (namespaced URI with dots and slashes) over a nested walk', () => {
    const read = compileClaimPath('https://atrope.dev/claims/tenant_id');
    expect(read({ 'https://atrope.dev/claims/tenant_id': 't-1' })).toBe('t-1');
    const dotted = compileClaimPath('a.b');
    expect(dotted({ 'a.b': 'literal', a: { b: 'nested' } })).toBe('literal');
    expect(dotted({ a: { b: 'nested' } })).toBe('nested');
  });

  it('walks nested objects (user_metadata.company_id)', () => {
    const read = compileClaimPath('user_metadata.company_id');
    expect(read({ user_metadata: { company_id: 'c-9' } })).toBe('c-9');
    expect(read({ user_metadata: 'c-9' })).toBeUndefined();
    expect(read({})).toBeUndefined();
  });

  it('never reads the prototype chain nor array elements', () => {
    expect(compileClaimPath('constructor')({})).toBeUndefined();
    expect(compileClaimPath('__proto__.polluted')(JSON.parse('{"__proto__": {"polluted": "x"}}'))).toBe('x'); // an own key from JSON
    expect(compileClaimPath('toString.name')({})).toBeUndefined();
    expect(compileClaimPath('list.0')({ list: ['first'] })).toBeUndefined();
  });
});

describe('claim mapper', () => {
  it('maps tenant, subject and email with defaults sub and email', () => {
    const result = mapped(mapper({ tenant: 'org' })({ org: 'acme', sub: 'u-1', email: 'a@b.test' }));
    expect(result).toEqual({ tenant: 'acme', subject: 'u-1', email: 'a@b.test', scopes: [] });
  });

  it('takes scopes from arrays, space-delimited strings, then static scopes; deduplicated', () => {
    const result = mapped(mapper({ scopes: ['permissions', 'scope', 'scp'] }, ['base'])({ permissions: ['inventory:read', 'base', 7], scope: 'openid  inventory:read inventory:write', scp: ['x'] }));
    expect(result.scopes).toEqual(['base', 'inventory:read', 'openid', 'inventory:write', 'x']);
  });

  it('uses scope, scp and permissions by default', () => {
    expect(mapped(mapper({})({ scope: 'a b', scp: 'c', permissions: ['d'] })).scopes).toEqual(['a', 'b', 'c', 'd']);
  });

  it('drops scope strings that could not travel in x-auth-scopes', () => {
    expect(mapped(mapper({ scopes: ['p'] })({ p: ['ok', 'has space', 'quo"te', 'back\\slash', '', 'naïve', 'fine:too'] })).scopes).toEqual(['ok', 'fine:too']);
  });

  it('maps roles to scopes, per application or globally', () => {
    const perApp = mapper({ roles: { appClaim: 'app_id', apps: { 'app-1': { admin: ['a:write', 'a:read'], user: ['a:read'] }, 'app-2': { admin: ['b:all'] } } } });
    expect(mapped(perApp({ app_id: 'app-1', roles: ['admin', 'user'] })).scopes).toEqual(['a:write', 'a:read']);
    expect(mapped(perApp({ app_id: 'app-2', roles: 'admin' })).scopes).toEqual(['b:all']);
    expect(mapped(perApp({ app_id: 'app-3', roles: ['admin'] })).scopes).toEqual([]);
    expect(mapped(perApp({ app_id: 'app-1', roles: ['toString', 'constructor'] })).scopes).toEqual([]);
    const global = mapper({ roles: { claim: 'realm.roles', map: { editor: ['docs:write'] } } });
    expect(mapped(global({ realm: { roles: ['editor', 'viewer'] } })).scopes).toEqual(['docs:write']);
  });

  it('stringifies integer tenants, ignores other types, refuses control characters', () => {
    const map = mapper({ tenant: 't' });
    expect(mapped(map({ t: 42 })).tenant).toBe('42');
    expect(mapped(map({ t: { id: 1 } })).tenant).toBeUndefined();
    expect(mapped(map({ t: '' })).tenant).toBeUndefined();
    expect(mapped(map({ t: 1.5 })).tenant).toBeUndefined();
    expect(map({ t: 'acme\r\nx-tenant-id: evil' })).toBeInstanceOf(ClaimError);
    expect(map({ t: 'acme', sub: 'u\u0000' })).toBeInstanceOf(ClaimError);
    expect(map({ t: 'acme', email: 'a@b\u007f' })).toBeInstanceOf(ClaimError);
  });

  it('refuses identity claims longer than the bound (a self-service claim must not make cached principals kilobytes)', () => {
    const map = mapper({ tenant: 't' });
    expect(mapped(map({ t: 'a'.repeat(256) })).tenant).toHaveLength(256);
    expect(map({ t: 'a'.repeat(257) })).toBeInstanceOf(ClaimError);
    expect(mapped(map({ t: 'acme', sub: 's'.repeat(2048) })).subject).toHaveLength(2048); // a SPIFFE ID may be 2,048 bytes
    expect(map({ t: 'acme', sub: 's'.repeat(2049) })).toBeInstanceOf(ClaimError);
    expect(mapped(map({ t: 'acme', email: `${'e'.repeat(300)}@x.io` })).email).toHaveLength(305);
    expect(map({ t: 'acme', email: `${'e'.repeat(320)}@x.io` })).toBeInstanceOf(ClaimError);
    // Scopes: one longer than the bound is not a scope; past 256 the rest is not read (and refused before an allow).
    const scoped = mapper({ tenant: 't', scopes: ['perms'] });
    expect(mapped(scoped({ t: 'acme', perms: ['ok', 's'.repeat(257)] })).scopes).toEqual(['ok']);
    expect(mapped(scoped({ t: 'acme', perms: Array.from({ length: 1000 }, (_, i) => `p${i}`) })).scopes).toHaveLength(257);
  });
});
