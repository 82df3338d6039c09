import { describe, expect, it } from 'vitest';
import { Interner } from '../src/intern.js';

describe('Interner', () => {
  it('hands out one shared copy of equal strings and scope lists', () => {
    const interner = new Interner();
    const tenant = interner.string(['ac', 'me'].join(''));
    expect(interner.string(['a', 'cme'].join(''))).toBe(tenant);
    expect(interner.string(undefined)).toBeUndefined();

    const scopes = interner.scopes(['items:read', 'items:write']);
    expect(interner.scopes(['items:read', 'items:write'])).toBe(scopes);
    expect(Object.isFrozen(scopes)).toBe(true);
    expect(interner.scopes(['items:write', 'items:read'])).not.toBe(scopes); // order is kept
    expect(interner.scopes([])).toEqual([]);
  });

  it('never confuses lists whose joined form is equal', () => {
    const interner = new Interner();
    const spaced = interner.scopes(['a b']);
    const two = interner.scopes(['a', 'b']);
    expect(spaced).toEqual(['a b']);
    expect(two).toEqual(['a', 'b']);
  });

  it('stays bounded under a spray of distinct values and keeps answering correctly', () => {
    const interner = new Interner();
    const first = interner.string(`tenant-${0}`);
    for (let i = 1; i < 20_000; i++) expect(interner.string(`tenant-${i}`)).toBe(`tenant-${i}`);
    // The table started over meanwhile: an equal value is still returned, as a fresh shared copy.
    const again = interner.string(`tenant-${0}`);
    expect(again).toBe(first);
    expect(interner.string(`tenant-${0}`)).toBe(again);
    const internal = interner as unknown as { strings: Map<string, string> };
    expect(internal.strings.size).toBeLessThanOrEqual(4096);
  });
});
