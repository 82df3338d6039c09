// One reading of where an API key travels, shared by the built-in and external key sources.
import { describe, expect, it } from 'vitest';
import { findApiKey, newFoundKey } from '../../src/identity/api-key-carrier.js';

const HEADERS = ['x-api-key', 'x-other-key'];
const PREFIXES = ['pk_'];
const req = (h: Record<string, string>) => ({ headers: new Map(Object.entries(h)) });

describe('findApiKey', () => {
  it('finds a key in a header or as a Bearer value with our prefix, and where', () => {
    const out = newFoundKey();
    expect(findApiKey(req({ 'x-other-key': ' pk_a ' }), HEADERS, PREFIXES, out)).toBe('found');
    expect(out).toMatchObject({ key: 'pk_a', slot: 1, extraSlots: undefined });
    expect(findApiKey(req({ authorization: 'Bearer pk_b' }), HEADERS, PREFIXES, out)).toBe('found');
    expect(out).toMatchObject({ key: 'pk_b', slot: 2 });
    expect(findApiKey(req({ 'x-api-key': 'pk_c', authorization: 'bearer  pk_c' }), HEADERS, PREFIXES, out)).toBe('found');
    expect(out).toMatchObject({ key: 'pk_c', slot: 0, extraSlots: [2] });
  });

  it('leaves other credentials alone', () => {
    const out = newFoundKey();
    expect(findApiKey(req({}), HEADERS, PREFIXES, out)).toBe('none');
    expect(findApiKey(req({ authorization: 'Bearer eyJhbGciOi.x.y' }), HEADERS, PREFIXES, out)).toBe('none');
    expect(findApiKey(req({ authorization: 'Basic pk_a' }), HEADERS, PREFIXES, out)).toBe('none');
    expect(findApiKey(req({ authorization: 'Bearer pk_a' }), HEADERS, [], out)).toBe('none');
  });

  it('refuses empty, repeated (joined with ",") or two different keys', () => {
    const out = newFoundKey();
    expect(findApiKey(req({ 'x-api-key': ' ' }), HEADERS, PREFIXES, out)).toBe('malformed');
    expect(findApiKey(req({ 'x-api-key': 'pk_a,pk_b' }), HEADERS, PREFIXES, out)).toBe('malformed');
    expect(findApiKey(req({ 'x-api-key': 'pk_a', 'x-other-key': 'pk_b' }), HEADERS, PREFIXES, out)).toBe('malformed');
    expect(findApiKey(req({ 'x-api-key': 'pk_a', authorization: 'Bearer pk_b' }), HEADERS, PREFIXES, out)).toBe('malformed');
    expect(findApiKey(req({ authorization: 'Bearer pk_a,Bearer eyJ.x.y' }), HEADERS, PREFIXES, out)).toBe('malformed');
    expect(findApiKey(req({ authorization: 'Bearer x,Bearer y' }), HEADERS, PREFIXES, out)).toBe('none');
  });
});
