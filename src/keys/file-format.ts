// The key file of the file store: YAML (or JSON, which is YAML) holding hashes, never keys.
//
//   version: 1
//   keys:
//     - id: 0b6c…           tenant: acme         name: billing-sync      scopes: [orders:read]
//       prefix: portcullis_  displayPrefix: portcullis_A1b2C3
//       hashAlgorithm: hmac-sha256                hash: 5f0e…(64 hex)
//       createdAt: 2026-01-01T00:00:00.000Z       expiresAt: 2026-04-01T00:00:00.000Z
//       revokedAt: …  rotatedTo: …  environment: live    (optional)

import { parse, stringify } from 'yaml';
import { z } from 'zod';
import { KEY_PREFIX_PATTERN } from './config.js';
import {
  BCRYPT_HASH_PATTERN,
  HASH_ALGORITHMS,
  HEX_DIGEST_PATTERN,
  KEY_ID_PATTERN,
  MAX_LOOKUP_PREFIX,
  MIN_LOOKUP_PREFIX,
  type HashAlgorithm,
  type KeyRecord,
} from './record.js';

const instant = z.iso.datetime({ offset: true }).transform((text) => Date.parse(text));

const recordSchema = z
  .strictObject({
    id: z.string().regex(KEY_ID_PATTERN, 'must be 1-64 letters, digits, _ . : -'),
    tenant: z.string().min(1),
    name: z.string().min(1),
    scopes: z.array(z.string().min(1)).default([]),
    environment: z.string().min(1).optional(),
    prefix: z.string().regex(KEY_PREFIX_PATTERN, 'must be a key prefix ending in "_"'),
    displayPrefix: z.string().min(1).max(MAX_LOOKUP_PREFIX),
    hashAlgorithm: z.enum(HASH_ALGORITHMS as [HashAlgorithm, ...HashAlgorithm[]]),
    hash: z.string(),
    createdAt: instant,
    expiresAt: instant,
    revokedAt: instant.optional(),
    rotatedTo: z.string().regex(KEY_ID_PATTERN).optional(),
  })
  .superRefine((record, ctx) => {
    const problem = recordProblem(record);
    if (problem) ctx.addIssue({ code: 'custom', path: [problem.field], message: problem.message });
  });

const fileSchema = z.strictObject({
  version: z.literal(1),
  keys: z.array(recordSchema).default([]),
});

/** Consistency rules every store applies to a record before writing it. */
export function recordProblem(record: Omit<KeyRecord, 'lastUsedAt'>): { field: keyof KeyRecord; message: string } | undefined {
  if (record.hashAlgorithm === 'bcrypt') {
    if (!BCRYPT_HASH_PATTERN.test(record.hash)) return { field: 'hash', message: 'must be a $2a$/$2b$/$2y$ bcrypt hash' };
    if (record.displayPrefix.length < MIN_LOOKUP_PREFIX) {
      return { field: 'displayPrefix', message: `a bcrypt key is found by its display prefix: give at least ${MIN_LOOKUP_PREFIX} characters` };
    }
  } else if (!HEX_DIGEST_PATTERN.test(record.hash)) {
    return { field: 'hash', message: 'must be 64 lower-case hex characters' };
  }
  if (!record.displayPrefix.startsWith(record.prefix)) return { field: 'displayPrefix', message: 'must start with the key prefix' };
  if (!(record.expiresAt > record.createdAt)) return { field: 'expiresAt', message: 'must be after createdAt' };
  return undefined;
}

/** Parse a key file. Throws an Error whose message says what is wrong and where. */
export function parseKeyFile(text: string, file: string): KeyRecord[] {
  let raw: unknown;
  try {
    raw = text.trim() === '' ? { version: 1, keys: [] } : parse(text, { uniqueKeys: true, strict: true });
  } catch (err) {
    throw new Error(`${file}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  const result = fileSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new Error(`${file}: ${issue.path.join('.') || '(top)'}: ${issue.message}`);
  }
  const records = result.data.keys.map(freezeRecord);
  const ids = new Set<string>();
  const hashes = new Set<string>();
  for (const record of records) {
    if (ids.has(record.id)) throw new Error(`${file}: duplicate key id ${record.id}`);
    ids.add(record.id);
    if (record.hashAlgorithm !== 'bcrypt') {
      if (hashes.has(record.hash)) throw new Error(`${file}: key ${record.id} has the same hash as another key`);
      hashes.add(record.hash);
    }
  }
  return records;
}

export function serializeKeyFile(records: readonly KeyRecord[]): string {
  const keys = records.map((r) => {
    const out: Record<string, unknown> = {
      id: r.id,
      tenant: r.tenant,
      name: r.name,
      scopes: [...r.scopes],
    };
    if (r.environment !== undefined) out.environment = r.environment;
    Object.assign(out, {
      prefix: r.prefix,
      displayPrefix: r.displayPrefix,
      hashAlgorithm: r.hashAlgorithm,
      hash: r.hash,
      createdAt: new Date(r.createdAt).toISOString(),
      expiresAt: new Date(r.expiresAt).toISOString(),
    });
    if (r.revokedAt !== undefined) out.revokedAt = new Date(r.revokedAt).toISOString();
    if (r.rotatedTo !== undefined) out.rotatedTo = r.rotatedTo;
    return out;
  });
  const header = '# Portcullis API keys: hashes only, never keys. Managed with `portcullis keys`; edits are picked up live.\n';
  return header + stringify({ version: 1, keys }, { lineWidth: 0 });
}

function freezeRecord(parsed: z.output<typeof recordSchema>): KeyRecord {
  const record: KeyRecord = {
    id: parsed.id,
    tenant: parsed.tenant,
    name: parsed.name,
    scopes: Object.freeze([...parsed.scopes]),
    prefix: parsed.prefix,
    displayPrefix: parsed.displayPrefix,
    hashAlgorithm: parsed.hashAlgorithm,
    hash: parsed.hash,
    createdAt: parsed.createdAt,
    expiresAt: parsed.expiresAt,
    ...(parsed.environment !== undefined && { environment: parsed.environment }),
    ...(parsed.revokedAt !== undefined && { revokedAt: parsed.revokedAt }),
    ...(parsed.rotatedTo !== undefined && { rotatedTo: parsed.rotatedTo }),
  };
  return Object.freeze(record);
}
