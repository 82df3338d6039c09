// Verification keys: one record per usable JWK of an issuer's key set (or one for a shared
// secret). Records are imported into CryptoKeys once per algorithm and reused; a record removed
// from the issuer's key set is marked retired so cached tokens it verified stop being accepted.

import { importJWK, type JWK } from 'jose';
import type { JwsAlgorithm } from './config.js';

export interface KeyRecord {
  readonly kid: string | undefined;
  /** Set when a refresh no longer lists this key: tokens it verified must not be served from cache. */
  readonly retired: boolean;
  /** The imported key for `alg`; memoised, so only the first token of an algorithm pays for it. */
  cryptoKey(alg: JwsAlgorithm): Promise<CryptoKey>;
}

/** Which JWK (kty, crv) each algorithm verifies with. */
const ALGORITHM_KEY: Readonly<Record<string, { kty: string; crv?: string }>> = {
  RS256: { kty: 'RSA' }, RS384: { kty: 'RSA' }, RS512: { kty: 'RSA' },
  PS256: { kty: 'RSA' }, PS384: { kty: 'RSA' }, PS512: { kty: 'RSA' },
  ES256: { kty: 'EC', crv: 'P-256' }, ES384: { kty: 'EC', crv: 'P-384' }, ES512: { kty: 'EC', crv: 'P-521' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519' }, Ed25519: { kty: 'OKP', crv: 'Ed25519' },
};

/** Members that only private or symmetric keys have: such a JWK never belongs in a public key set. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'];
const MIN_RSA_BITS = 2048;
/** More keys than this in one set is not a real issuer; the rest are ignored. */
export const MAX_KEYS = 100;

export class JwkRecord implements KeyRecord {
  retired = false;
  private readonly imported = new Map<string, Promise<CryptoKey>>();

  constructor(
    readonly kid: string | undefined,
    private readonly jwk: JWK,
    /** Identity of the key material, to recognise the same key across refreshes. */
    readonly fingerprint: string,
  ) {}

  /** Whether a token signed with `alg` may be verified with this key. */
  accepts(alg: string): boolean {
    const wanted = ALGORITHM_KEY[alg];
    if (!wanted || wanted.kty !== this.jwk.kty) return false;
    if (wanted.crv !== undefined && wanted.crv !== this.jwk.crv) return false;
    if (this.jwk.alg === undefined) return true;
    // EdDSA and Ed25519 name the same signature scheme.
    return this.jwk.alg === alg || (this.jwk.crv === 'Ed25519' && (this.jwk.alg === 'EdDSA' || this.jwk.alg === 'Ed25519'));
  }

  cryptoKey(alg: JwsAlgorithm): Promise<CryptoKey> {
    let key = this.imported.get(alg);
    if (!key) {
      const { alg: _declared, ...material } = this.jwk;
      key = importJWK(material, alg) as Promise<CryptoKey>;
      this.imported.set(alg, key);
      // A failed import is not remembered: the caller maps it to a denial, a later token retries.
      key.catch(() => this.imported.delete(alg));
    }
    return key;
  }
}

/** The result of picking a key for a token. */
export type KeySelection = JwkRecord | 'none' | 'ambiguous';

export class KeySet {
  private readonly byKid = new Map<string, JwkRecord[]>();

  constructor(readonly records: readonly JwkRecord[]) {
    for (const record of records) {
      if (record.kid === undefined) continue;
      const list = this.byKid.get(record.kid);
      if (list) list.push(record);
      else this.byKid.set(record.kid, [record]);
    }
  }

  /**
   * The one key for this kid and algorithm. Without a kid, only a set with a single suitable key
   * answers: trying several keys per token would let one token cost many verifications.
   */
  select(kid: string | undefined, alg: string): KeySelection {
    const candidates = kid === undefined ? this.records : this.byKid.get(kid);
    if (!candidates) return 'none';
    let chosen: JwkRecord | undefined;
    for (const record of candidates) {
      if (!record.accepts(alg)) continue;
      if (chosen) return 'ambiguous';
      chosen = record;
    }
    return chosen ?? 'none';
  }
}

export interface ParsedKeySet {
  readonly records: JwkRecord[];
  /** Why keys were left out (for the log), never key material. */
  readonly skipped: string[];
}

/** Parse a JWKS document into records of usable public signature keys. */
export function parseJwks(document: Record<string, unknown>): ParsedKeySet | string {
  const keys = document.keys;
  if (!Array.isArray(keys)) return 'the document has no "keys" array';
  const records: JwkRecord[] = [];
  const skipped: string[] = [];
  for (const [i, raw] of keys.entries()) {
    if (records.length >= MAX_KEYS) {
      skipped.push(`keys beyond the first ${MAX_KEYS} usable ones`);
      break;
    }
    const problem = unusable(raw);
    const label = `key ${i}${typeof (raw as JWK | null)?.kid === 'string' ? ` (kid ${(raw as JWK).kid})` : ''}`;
    if (problem) {
      skipped.push(`${label}: ${problem}`);
      continue;
    }
    const jwk = publicMembers(raw as JWK);
    records.push(new JwkRecord(jwk.kid, jwk, fingerprint(jwk)));
  }
  return { records, skipped };
}

function unusable(raw: unknown): string | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'not an object';
  const jwk = raw as Record<string, unknown>;
  if (PRIVATE_MEMBERS.some((member) => member in jwk)) return 'carries private or symmetric key material';
  if (jwk.kid !== undefined && typeof jwk.kid !== 'string') return 'kid is not a string';
  if (jwk.use !== undefined && jwk.use !== 'sig') return `use is ${String(jwk.use)}`;
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return 'key_ops does not include verify';
  if (jwk.alg !== undefined && (typeof jwk.alg !== 'string' || !(jwk.alg in ALGORITHM_KEY))) return `alg ${String(jwk.alg)} is not a supported signature algorithm`;
  switch (jwk.kty) {
    case 'RSA':
      if (typeof jwk.n !== 'string' || typeof jwk.e !== 'string') return 'RSA key without n or e';
      if (Buffer.from(jwk.n, 'base64url').length * 8 < MIN_RSA_BITS) return `RSA modulus shorter than ${MIN_RSA_BITS} bits`;
      return undefined;
    case 'EC':
      if (jwk.crv !== 'P-256' && jwk.crv !== 'P-384' && jwk.crv !== 'P-521') return `curve ${String(jwk.crv)} is not supported`;
      return typeof jwk.x === 'string' && typeof jwk.y === 'string' ? undefined : 'EC key without x or y';
    case 'OKP':
      if (jwk.crv !== 'Ed25519') return `curve ${String(jwk.crv)} is not supported`;
      return typeof jwk.x === 'string' ? undefined : 'OKP key without x';
    default:
      return `kty ${String(jwk.kty)} is not supported`;
  }
}

function publicMembers(jwk: JWK): JWK {
  const out: JWK = { kty: jwk.kty };
  for (const member of ['kid', 'alg', 'crv', 'n', 'e', 'x', 'y'] as const) {
    if (jwk[member] !== undefined) (out as Record<string, unknown>)[member] = jwk[member];
  }
  return out;
}

function fingerprint(jwk: JWK): string {
  return [jwk.kid, jwk.kty, jwk.alg, jwk.crv, jwk.n, jwk.e, jwk.x, jwk.y].map((v) => v ?? '').join('|');
}

/** A shared secret as a key record: imported once per HS algorithm, never retired. */
export class SecretRecord implements KeyRecord {
  readonly kid = undefined;
  readonly retired = false;
  private readonly imported = new Map<string, Promise<CryptoKey>>();

  constructor(private readonly secret: Uint8Array<ArrayBuffer>) {}

  cryptoKey(alg: JwsAlgorithm): Promise<CryptoKey> {
    let key = this.imported.get(alg);
    if (!key) {
      // Imported once per algorithm, like the JWKS keys.
      key = crypto.subtle.importKey('raw', this.secret, { name: 'HMAC', hash: `SHA-${alg.slice(2)}` }, false, ['verify']);
      this.imported.set(alg, key);
    }
    return key;
  }
}
