// Policy schema of the API-key store (top-level `keyStore:`) and of the `- apiKey: {...}` identity
// source. Cross-field rules are checked here so they are reported with their document path.

import { z } from 'zod';
import { externalKeySchema } from '../lookup/schema.js';
import { durationSchema, headerNameSchema } from '../policy/units.js';

/** A key prefix: a letter, then letters, digits or "_", ending in "_" ("ak_", "flotac_api_key_live_"). */
export const KEY_PREFIX_PATTERN = /^[A-Za-z][A-Za-z0-9_]{0,38}_$/;

export const keyPrefixSchema = z
  .string()
  .regex(KEY_PREFIX_PATTERN, 'a key prefix is a letter, then letters, digits or "_", ending in "_" (at most 40 characters)');

/** A PostgreSQL identifier we are willing to splice into SQL (schema names). */
const sqlIdentifierSchema = z.string().regex(/^[a-z_][a-z0-9_]{0,39}$/, 'must be a lower-case SQL identifier of at most 40 characters (letters, digits, _)');

const boundedDuration = (min: number, max: number, label: string) =>
  durationSchema.refine((ms) => ms >= min && ms <= max, `must be between ${label}`);

/**
 * Keys minted elsewhere and imported (`portcullis keys import`): they carry no Portcullis checksum,
 * so their shape is declared here and checked offline instead.
 */
export const importedFormatSchema = z
  .strictObject({
    prefix: keyPrefixSchema,
    /** Characters after the prefix: hex (0-9a-f), base62 (0-9A-Za-z) or base64url (base62 plus - and _). */
    charset: z.enum(['hex', 'base62', 'base64url']),
    /** Exact number of characters after the prefix (seed 003: 64). */
    length: z.number().int().min(16).max(256).optional(),
    minLength: z.number().int().min(16).max(256).optional(),
    maxLength: z.number().int().min(16).max(256).optional(),
  })
  .superRefine((format, ctx) => {
    if (format.length !== undefined && (format.minLength !== undefined || format.maxLength !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['length'], message: 'give length, or minLength/maxLength, not both' });
    }
    if (format.minLength !== undefined && format.maxLength !== undefined && format.minLength > format.maxLength) {
      ctx.addIssue({ code: 'custom', path: ['minLength'], message: 'minLength is larger than maxLength' });
    }
  });
export type ImportedFormat = z.output<typeof importedFormatSchema>;

export const keyCacheSchema = z.strictObject({
  /** How long a looked-up key is trusted before it is re-read from the store (revocation fallback). */
  ttl: boundedDuration(1000, 3_600_000, '1s and 1h').default(60_000),
  /** How long an unknown key is remembered as unknown (so a repeated bad key cannot hammer the store). */
  negativeTtl: boundedDuration(0, 600_000, '0 and 10m').default(10_000),
  /** How long past its ttl a cached key keeps working while the store cannot be reached. */
  staleFor: boundedDuration(0, 7 * 86_400_000, '0 and 7d').default(3_600_000),
  /** Cached keys (positive and negative entries together). */
  maxEntries: z.number().int().min(100).max(10_000_000).default(100_000),
});
export type KeyCacheConfig = z.output<typeof keyCacheSchema>;

export const fileStoreSchema = z.strictObject({
  /** Path of the YAML/JSON file of hashed keys; relative paths are relative to the policy file. */
  path: z.string().min(1).optional(),
  /** How often the file is checked for changes (hot reload). */
  reloadInterval: boundedDuration(100, 60_000, '100ms and 60s').default(1000),
});

export const postgresStoreSchema = z.strictObject({
  /** postgres:// URL; defaults to the DATABASE_URL environment variable. */
  url: z.string().min(1).optional(),
  /** Schema holding the tables (tests use one per suite). */
  schema: sqlIdentifierSchema.default('portcullis'),
  poolSize: z.number().int().min(1).max(100).default(4),
  connectTimeout: boundedDuration(50, 60_000, '50ms and 60s').default(2000),
  /** How often last_used_at is written (batched, off the request path). */
  lastUsedFlush: boundedDuration(1000, 3_600_000, '1s and 1h').default(30_000),
});

export const keyStoreSchema = z
  .strictObject({
    type: z.enum(['file', 'postgres']).default('file'),
    file: fileStoreSchema.optional(),
    postgres: postgresStoreSchema.optional(),
    /** HMAC-SHA-256 pepper for new keys (normally "${PORTCULLIS_KEY_PEPPER}"); plain SHA-256 when absent. */
    pepper: z.string().min(32, 'must be at least 32 characters (use a generated secret)').optional(),
    /** Prefix of keys `keys create` mints when --prefix is not given. */
    defaultPrefix: keyPrefixSchema.default('portcullis_'),
    /** Longest lifetime a key may be given (seed 004: 365 days). */
    maxExpiry: boundedDuration(60_000, 10 * 365 * 86_400_000, '1m and 3650d').default(365 * 86_400_000),
    /** How long an uncached key waits for the store before 503 store_unavailable. */
    lookupTimeout: boundedDuration(1, 10_000, '1ms and 10s').default(50),
    /** Extra wait for a bcrypt comparison of an imported key (it continues and is cached after this). */
    bcryptTimeout: boundedDuration(1, 10_000, '1ms and 10s').default(120),
    cache: keyCacheSchema.default(() => keyCacheSchema.parse({})),
  })
  .superRefine((store, ctx) => {
    if (store.type === 'file' && store.postgres !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['postgres'], message: 'postgres settings need type: postgres' });
    }
    if (store.type === 'postgres' && store.file !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['file'], message: 'file settings need type: file' });
    }
  });
export type KeyStoreConfig = z.output<typeof keyStoreSchema>;

export const apiKeySourceSchema = z
  .strictObject({
    /** Request headers that carry a key as their whole value. */
    headers: z.array(headerNameSchema).default(['x-api-key']),
    /** `Authorization: Bearer <key>` is an API key when the token starts with one of these (seed 003). */
    bearerPrefixes: z.array(keyPrefixSchema).default([]),
    /** Accept only keys with one of these prefixes (any prefix when absent). */
    prefixes: z.array(keyPrefixSchema).min(1).optional(),
    /** Shapes of imported keys that have no Portcullis checksum. */
    importedFormats: z.array(importedFormatSchema).default([]),
    /** Pass the key upstream instead of stripping it (default: stripped). */
    forward: z.boolean().default(false),
    /** What x-auth-subject says: the key's name (stable across rotation) or its id. */
    subject: z.enum(['name', 'id']).default('name'),
    /** Verify keys with an external store (a lookup: Better Auth's verify, an SQL table) instead of Portcullis' own. */
    external: externalKeySchema.optional(),
  })
  .superRefine((source, ctx) => {
    if (source.headers.length === 0 && source.bearerPrefixes.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['headers'], message: 'an apiKey source needs headers, bearerPrefixes or both' });
    }
    if (source.headers.includes('authorization')) {
      ctx.addIssue({ code: 'custom', path: ['headers'], message: 'use bearerPrefixes for keys sent as Authorization: Bearer' });
    }
  });
export type ApiKeySourceConfig = z.output<typeof apiKeySourceSchema>;
