// Key management shared by the CLI and tests: create, import, revoke, rotate. Works against any
// KeyAdminStore; every rule about expiry and rotation lives here, not in the stores.

import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.js';
import { PortcullisError } from '../errors.js';
import { KEY_PREFIX_PATTERN } from './config.js';
import { DISPLAY_RANDOM_LENGTH, displayPrefixOf, mintKey, portcullisPrefixOf, hasValidChecksum } from './format.js';
import type { KeyHasher } from './hashing.js';
import { BCRYPT_HASH_PATTERN, HEX_DIGEST_PATTERN, KEY_ID_PATTERN, keyStatus, type KeyRecord } from './record.js';
import type { KeyAdminStore } from './store.js';

export interface KeyAdmin {
  readonly store: KeyAdminStore;
  readonly hasher: KeyHasher;
  readonly clock: Clock;
  /** Longest lifetime a key may be given (keyStore.maxExpiry). */
  readonly maxExpiryMs: number;
}

export interface KeyAttributes {
  readonly tenant: string;
  readonly name: string;
  readonly scopes: readonly string[];
  readonly environment?: string;
}

export interface CreatedKey {
  /** The key itself: shown once, stored nowhere. */
  readonly key: string;
  readonly record: KeyRecord;
}

function invalid(message: string): PortcullisError {
  return new PortcullisError('CONFIG_INVALID', message);
}

function checkAttributes(attributes: KeyAttributes): void {
  if (attributes.tenant.trim() === '') throw invalid('--tenant must not be empty');
  if (attributes.name.trim() === '') throw invalid('--name must not be empty');
  for (const scope of attributes.scopes) if (!/^\S+$/.test(scope)) throw invalid(`invalid scope "${scope}": scopes contain no spaces`);
}

function expiryFrom(admin: KeyAdmin, now: number, lifetimeMs: number): number {
  if (!(lifetimeMs > 0)) throw invalid('the expiry must be in the future');
  if (lifetimeMs > admin.maxExpiryMs) {
    throw invalid(`keys may live at most ${Math.floor(admin.maxExpiryMs / 86_400_000)} days (keyStore.maxExpiry)`);
  }
  return now + lifetimeMs;
}

/** Mint a key and store its hash. */
export async function createKey(admin: KeyAdmin, attributes: KeyAttributes & { prefix: string; expiresInMs: number }): Promise<CreatedKey> {
  checkAttributes(attributes);
  if (!KEY_PREFIX_PATTERN.test(attributes.prefix)) throw invalid(`invalid prefix "${attributes.prefix}": a letter, then letters, digits or _, ending in "_"`);
  const now = admin.clock.now();
  const created = mint(admin, attributes, attributes.prefix, now, expiryFrom(admin, now, attributes.expiresInMs));
  await admin.store.insert(created.record);
  return created;
}

function mint(admin: KeyAdmin, attributes: KeyAttributes, prefix: string, now: number, expiresAt: number): CreatedKey {
  const key = mintKey(prefix);
  const record: KeyRecord = Object.freeze({
    id: randomUUID(),
    tenant: attributes.tenant,
    name: attributes.name,
    scopes: Object.freeze([...new Set(attributes.scopes)]),
    ...(attributes.environment !== undefined && { environment: attributes.environment }),
    prefix,
    displayPrefix: displayPrefixOf(key, prefix),
    ...admin.hasher.forStorage(key),
    createdAt: now,
    expiresAt,
  });
  return { key, record };
}

export async function revokeKey(admin: KeyAdmin, id: string): Promise<{ record: KeyRecord; alreadyRevoked: boolean }> {
  let alreadyRevoked = false;
  const { updated } = await admin.store.mutate(id, (current) => {
    if (current.revokedAt !== undefined) {
      alreadyRevoked = true;
      return { updated: current };
    }
    return { updated: Object.freeze({ ...current, revokedAt: admin.clock.now() }) };
  });
  return { record: updated, alreadyRevoked };
}

/**
 * Replace key `id` with a new one (same tenant, name, scopes, prefix). The old key keeps working
 * for `graceMs` (never longer than it would have anyway), then expires.
 */
export async function rotateKey(admin: KeyAdmin, id: string, options: { graceMs: number; expiresInMs?: number }): Promise<CreatedKey & { previous: KeyRecord }> {
  if (!(options.graceMs >= 0)) throw invalid('--grace must not be negative');
  let created: CreatedKey | undefined;
  const { updated } = await admin.store.mutate(id, (current) => {
    const now = admin.clock.now();
    const status = keyStatus(current, now);
    if (status !== 'active') throw new PortcullisError('STORE_CONFLICT', `key ${id} is ${status}: only an active key can be rotated (create a new one instead)`);
    if (current.rotatedTo !== undefined) throw new PortcullisError('STORE_CONFLICT', `key ${id} was already rotated to ${current.rotatedTo}: rotate that key instead`);
    const lifetime = options.expiresInMs ?? Math.min(current.expiresAt - current.createdAt, admin.maxExpiryMs);
    created = mint(admin, current, current.prefix, now, expiryFrom(admin, now, lifetime));
    const previous: KeyRecord = Object.freeze({ ...current, expiresAt: Math.min(current.expiresAt, now + options.graceMs), rotatedTo: created.record.id });
    return { updated: previous, added: created.record };
  });
  return { ...created!, previous: updated };
}

export type ImportedSecret =
  /** The key itself (e.g. from a Kubernetes Secret): hashed like a new key. */
  | { readonly kind: 'plaintext'; readonly key: string; readonly prefix?: string }
  /** A SHA-256 hex digest of the key from the old system (seed 003). */
  | { readonly kind: 'sha256'; readonly hash: string; readonly prefix: string; readonly displayPrefix?: string }
  /** A bcrypt hash from the old system (seed 004); found by its display prefix. */
  | { readonly kind: 'bcrypt'; readonly hash: string; readonly prefix: string; readonly displayPrefix: string };

/** Store a key minted elsewhere. Its expiry obeys the same maximum as new keys. */
export async function importKey(
  admin: KeyAdmin,
  attributes: KeyAttributes & { id?: string; expiresAt: number; createdAt?: number },
  secret: ImportedSecret,
): Promise<KeyRecord> {
  checkAttributes(attributes);
  const now = admin.clock.now();
  if (attributes.id !== undefined && !KEY_ID_PATTERN.test(attributes.id)) throw invalid(`invalid id "${attributes.id}": 1-64 letters, digits, _ . : -`);
  if (attributes.expiresAt <= now) throw invalid('the key has already expired: nothing to import');
  if (attributes.expiresAt - now > admin.maxExpiryMs) throw invalid(`keys may live at most ${Math.floor(admin.maxExpiryMs / 86_400_000)} days (keyStore.maxExpiry)`);

  let prefix: string;
  let displayPrefix: string;
  let stored: Pick<KeyRecord, 'hashAlgorithm' | 'hash'>;
  if (secret.kind === 'plaintext') {
    const derived = secret.prefix ?? (hasValidChecksum(secret.key) ? portcullisPrefixOf(secret.key) : undefined);
    if (derived === undefined) throw invalid('give --prefix: the key is not in Portcullis format');
    if (!secret.key.startsWith(derived)) throw invalid(`the key does not start with the prefix "${derived}"`);
    if (secret.key.length < derived.length + 16) throw invalid('the key is too short to be imported (at least 16 characters after the prefix)');
    prefix = derived;
    displayPrefix = secret.key.slice(0, prefix.length + DISPLAY_RANDOM_LENGTH);
    stored = admin.hasher.forStorage(secret.key);
  } else {
    prefix = secret.prefix;
    displayPrefix = secret.displayPrefix ?? prefix;
    if (secret.kind === 'sha256') {
      const hash = secret.hash.toLowerCase();
      if (!HEX_DIGEST_PATTERN.test(hash)) throw invalid('--sha256 must be 64 hex characters');
      stored = { hashAlgorithm: 'sha256', hash };
    } else {
      if (!BCRYPT_HASH_PATTERN.test(secret.hash)) throw invalid('--bcrypt must be a $2a$/$2b$/$2y$ bcrypt hash');
      stored = { hashAlgorithm: 'bcrypt', hash: secret.hash };
    }
  }
  if (!KEY_PREFIX_PATTERN.test(prefix)) throw invalid(`invalid prefix "${prefix}": a letter, then letters, digits or _, ending in "_"`);
  if (!displayPrefix.startsWith(prefix)) throw invalid('--display-prefix must start with --prefix');

  const record: KeyRecord = Object.freeze({
    id: attributes.id ?? randomUUID(),
    tenant: attributes.tenant,
    name: attributes.name,
    scopes: Object.freeze([...new Set(attributes.scopes)]),
    ...(attributes.environment !== undefined && { environment: attributes.environment }),
    prefix,
    displayPrefix,
    ...stored,
    createdAt: Math.min(attributes.createdAt ?? now, now),
    expiresAt: attributes.expiresAt,
  });
  await admin.store.insert(record);
  return record;
}
