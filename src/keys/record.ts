// What a key store holds about one key. Never the key itself: only its hash.

export type HashAlgorithm = 'sha256' | 'hmac-sha256' | 'bcrypt';

export const HASH_ALGORITHMS: readonly HashAlgorithm[] = ['sha256', 'hmac-sha256', 'bcrypt'];

export interface KeyRecord {
  readonly id: string;
  readonly tenant: string;
  readonly name: string;
  readonly scopes: readonly string[];
  /** Free label such as "live" or "test" (informational; prefixes separate environments). */
  readonly environment?: string;
  /** The key's prefix ("flotac_api_key_live_"). */
  readonly prefix: string;
  /** The key's first characters, safe to show. For bcrypt records also the lookup index. */
  readonly displayPrefix: string;
  readonly hashAlgorithm: HashAlgorithm;
  /** Lower-case hex digest (sha256, hmac-sha256) or a `$2a$/$2b$/$2y$` bcrypt hash. */
  readonly hash: string;
  /** Epoch milliseconds. */
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly revokedAt?: number;
  readonly lastUsedAt?: number;
  /** Set by `keys rotate`: the id of the key that replaces this one. */
  readonly rotatedTo?: string;
}

export type KeyStatus = 'active' | 'revoked' | 'expired';

export function keyStatus(record: KeyRecord, now: number): KeyStatus {
  if (record.revokedAt !== undefined) return 'revoked';
  if (now >= record.expiresAt) return 'expired';
  return 'active';
}

/** Key ids: generated UUIDs, or the id an imported key had in its old system. */
export const KEY_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;

export const BCRYPT_HASH_PATTERN = /^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$/;
export const HEX_DIGEST_PATTERN = /^[0-9a-f]{64}$/;

/** Bounds of a bcrypt record's display prefix, which is how such a key is found. */
export const MIN_LOOKUP_PREFIX = 6;
export const MAX_LOOKUP_PREFIX = 40;

/**
 * The display prefixes a bcrypt record of `key` could be stored under: every start of the key
 * from MIN_LOOKUP_PREFIX to MAX_LOOKUP_PREFIX characters (shorter than the key itself).
 */
export function lookupPrefixesOf(key: string): string[] {
  const prefixes: string[] = [];
  const longest = Math.min(MAX_LOOKUP_PREFIX, key.length - 1);
  for (let n = MIN_LOOKUP_PREFIX; n <= longest; n++) prefixes.push(key.slice(0, n));
  return prefixes;
}
