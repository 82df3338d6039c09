// The API key format and its offline checks.
//
// A Portcullis key is `<prefix><49 random base62 chars><6 base62 chars of CRC-32>`:
//   - 49 × log2(62) ≈ 291.7 bits of randomness; the first 6 random characters form the display
//     prefix shown by `keys list`, the remaining 43 (≈ 256 bits) are never shown anywhere;
//   - the CRC-32 of `<prefix><random>` lets a mistyped or made-up key be rejected before any store
//     lookup, and lets secret scanners recognise real keys (the scheme GitHub tokens use).
// Imported keys (seed 003's 64 hex, seed 004's `ak_…`) have no checksum: their shape is declared
// in the policy (`importedFormats`) and checked instead.

import { randomInt } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { KEY_PREFIX_PATTERN, type ImportedFormat } from './config.js';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

export const RANDOM_LENGTH = 49;
export const CHECKSUM_LENGTH = 6;
export const BODY_LENGTH = RANDOM_LENGTH + CHECKSUM_LENGTH;
/** Random characters that are part of the display prefix (not secret). */
export const DISPLAY_RANDOM_LENGTH = 6;
/** Longer values are refused before anything else looks at them. */
export const MAX_KEY_LENGTH = 512;

/** Mint a new key with `prefix` (validated by the caller against KEY_PREFIX_PATTERN). */
export function mintKey(prefix: string): string {
  if (!KEY_PREFIX_PATTERN.test(prefix)) throw new TypeError(`invalid key prefix "${prefix}"`);
  let random = '';
  for (let i = 0; i < RANDOM_LENGTH; i++) random += BASE62[randomInt(62)];
  return prefix + random + encodeChecksum(crc32(prefix + random));
}

/** The non-secret start of a key shown in listings: prefix plus the first random characters. */
export function displayPrefixOf(key: string, prefix: string): string {
  return key.slice(0, prefix.length + DISPLAY_RANDOM_LENGTH);
}

function encodeChecksum(value: number): string {
  let out = '';
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = BASE62[value % 62] + out;
    value = Math.floor(value / 62);
  }
  return out;
}

function base62Value(code: number): number {
  if (code >= 48 && code <= 57) return code - 48; // 0-9
  if (code >= 65 && code <= 90) return code - 55; // A-Z
  if (code >= 97 && code <= 122) return code - 61; // a-z
  return -1;
}

function isHexChar(code: number): boolean {
  return (code >= 48 && code <= 57) || (code >= 97 && code <= 102) || (code >= 65 && code <= 70);
}

function isBase64UrlChar(code: number): boolean {
  return base62Value(code) >= 0 || code === 45 /* - */ || code === 95 /* _ */;
}

/** True when `key` is `<valid prefix><55 base62 chars>` and its checksum matches. */
export function hasValidChecksum(key: string): boolean {
  const bodyStart = key.length - BODY_LENGTH;
  if (bodyStart < 2) return false;
  let expected = 0;
  for (let i = bodyStart; i < key.length; i++) {
    const digit = base62Value(key.charCodeAt(i));
    if (digit < 0) return false;
    if (i >= key.length - CHECKSUM_LENGTH) expected = expected * 62 + digit;
  }
  if (!KEY_PREFIX_PATTERN.test(key.slice(0, bodyStart))) return false;
  return crc32(key.slice(0, key.length - CHECKSUM_LENGTH)) === expected;
}

/** The prefix of a Portcullis-format key (everything before the 55-character body). */
export function portcullisPrefixOf(key: string): string | undefined {
  const prefix = key.slice(0, key.length - BODY_LENGTH);
  return KEY_PREFIX_PATTERN.test(prefix) ? prefix : undefined;
}

function matchesImported(key: string, format: ImportedFormat): boolean {
  if (!key.startsWith(format.prefix)) return false;
  const length = key.length - format.prefix.length;
  if (format.length !== undefined ? length !== format.length : length < (format.minLength ?? 16) || length > (format.maxLength ?? 256)) {
    return false;
  }
  const accept = format.charset === 'hex' ? isHexChar : format.charset === 'base62' ? (c: number) => base62Value(c) >= 0 : isBase64UrlChar;
  for (let i = format.prefix.length; i < key.length; i++) if (!accept(key.charCodeAt(i))) return false;
  return true;
}

/** The imported format `key` matches, if any. */
export function importedFormatOf(key: string, formats: readonly ImportedFormat[]): ImportedFormat | undefined {
  return formats.find((format) => matchesImported(key, format));
}

export interface ShapeRules {
  /** Accept only keys starting with one of these (any prefix when undefined). */
  readonly prefixes?: readonly string[];
  readonly importedFormats: readonly ImportedFormat[];
}

/**
 * The offline check: could `key` be a real key? False means invalid_api_key without asking the
 * store. Runs on every request with a key, so it allocates as little as it can.
 */
export function isPlausibleKey(key: string, rules: ShapeRules): boolean {
  if (key.length > MAX_KEY_LENGTH || key.length === 0) return false;
  if (rules.prefixes !== undefined && !rules.prefixes.some((prefix) => key.startsWith(prefix))) return false;
  if (hasValidChecksum(key)) return true;
  return rules.importedFormats.length > 0 && importedFormatOf(key, rules.importedFormats) !== undefined;
}
