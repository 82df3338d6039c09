import { describe, expect, it } from 'vitest';
import { BODY_LENGTH, displayPrefixOf, hasValidChecksum, isPlausibleKey, mintKey, portcullisPrefixOf } from '../../src/keys/format.js';
import { importedFormatSchema } from '../../src/keys/config.js';

const BASE62 = /^[0-9A-Za-z]+$/;
const FLOTAC_HEX = importedFormatSchema.parse({ prefix: 'flotac_api_key_live_', charset: 'hex', length: 64 });
const TRONEXUS = importedFormatSchema.parse({ prefix: 'ak_', charset: 'base64url', minLength: 20, maxLength: 64 });

/** Change one character of the key body to another base62 character. */
function typo(key: string, index: number): string {
  const c = key[index]!;
  const replacement = c === 'a' ? 'b' : 'a';
  return key.slice(0, index) + replacement + key.slice(index + 1);
}

describe('key format', () => {
  it('mints <prefix><55 base62 characters> with a checksum that verifies', () => {
    const key = mintKey('flotac_api_key_live_');
    expect(key.startsWith('flotac_api_key_live_')).toBe(true);
    const body = key.slice('flotac_api_key_live_'.length);
    expect(body).toHaveLength(BODY_LENGTH);
    expect(body).toMatch(BASE62);
    expect(hasValidChecksum(key)).toBe(true);
    expect(portcullisPrefixOf(key)).toBe('flotac_api_key_live_');
  });

  it('never mints the same key twice and spreads characters over the whole alphabet', () => {
    const keys = new Set(Array.from({ length: 2000 }, () => mintKey('ak_')));
    expect(keys.size).toBe(2000);
    const seen = new Set([...keys].flatMap((k) => [...k.slice(3, 3 + 49)]));
    expect(seen.size).toBe(62);
  });

  it('rejects any single-character typo offline', () => {
    const key = mintKey('portcullis_');
    for (let i = 0; i < key.length; i++) {
      if (key[i] === '_') continue;
      expect(hasValidChecksum(typo(key, i)), `typo at ${i}`).toBe(false);
    }
  });

  it('rejects a key whose checksum was computed for another prefix', () => {
    const key = mintKey('flotac_api_key_test_');
    const swapped = 'flotac_api_key_live_' + key.slice('flotac_api_key_test_'.length);
    expect(hasValidChecksum(swapped)).toBe(false);
  });

  it('rejects truncated, extended and non-base62 keys', () => {
    const key = mintKey('ak_');
    expect(hasValidChecksum(key.slice(0, -1))).toBe(false);
    expect(hasValidChecksum(key + 'A')).toBe(false);
    expect(hasValidChecksum(key.slice(0, 10) + '-' + key.slice(11))).toBe(false);
    expect(hasValidChecksum('')).toBe(false);
    expect(hasValidChecksum(key.slice(3))).toBe(false); // no prefix at all
  });

  it('shows only the prefix and 6 random characters as display prefix', () => {
    const key = mintKey('ak_');
    expect(displayPrefixOf(key, 'ak_')).toBe(key.slice(0, 9));
  });

  it('accepts imported keys only in a declared format', () => {
    const hex = 'flotac_api_key_live_' + 'a1b2c3d4'.repeat(8);
    expect(isPlausibleKey(hex, { importedFormats: [] })).toBe(false);
    expect(isPlausibleKey(hex, { importedFormats: [FLOTAC_HEX] })).toBe(true);
    expect(isPlausibleKey(hex.slice(0, -1), { importedFormats: [FLOTAC_HEX] })).toBe(false);
    expect(isPlausibleKey(hex.slice(0, -1) + 'g', { importedFormats: [FLOTAC_HEX] })).toBe(false);
    expect(isPlausibleKey('ak_Abc123-_xyzXYZ0987654', { importedFormats: [TRONEXUS] })).toBe(true);
    expect(isPlausibleKey('ak_short', { importedFormats: [TRONEXUS] })).toBe(false);
    expect(isPlausibleKey('ak_Abc123 xyzXYZ0987654!', { importedFormats: [TRONEXUS] })).toBe(false);
  });

  it('restricts accepted prefixes when the source lists them', () => {
    const live = mintKey('flotac_api_key_live_');
    const test = mintKey('flotac_api_key_test_');
    const rules = { prefixes: ['flotac_api_key_live_'], importedFormats: [] };
    expect(isPlausibleKey(live, rules)).toBe(true);
    expect(isPlausibleKey(test, rules)).toBe(false);
  });

  it('refuses absurdly long values before looking at them', () => {
    expect(isPlausibleKey('ak_' + 'a'.repeat(5000), { importedFormats: [TRONEXUS] })).toBe(false);
  });
});
