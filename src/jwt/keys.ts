// Verification keys: one record per usable JWK of an issuer's key set (or one for a shared
// secret). Records are imported into CryptoKeys once per algorithm and reused; a record removed
// from the issuer's key set is marked retired so cached tokens it verified stop being accepted.
// Weak keys are refused twice: from the JWK members when the set is parsed (logged, kid
// remembered), and from the imported key itself (what OpenSSL will actually verify with).

import { KeyObject } from 'node:crypto';
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
/** RSA modulus size, counted on the value (leading zero octets do not count). */
export const MIN_RSA_BITS = 2048;
/** OpenSSL's own ceiling; a larger modulus only makes each verification slower. */
export const MAX_RSA_BITS = 16_384;
/** Exponents above 2^32 - 1 are not used by any real issuer (65537 is the norm). */
const MAX_RSA_EXPONENT = 0xffff_ffff;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
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
      key = (importJWK(material, alg) as Promise<CryptoKey>).then((imported) => {
        const problem = importedKeyProblem(imported);
        if (problem) throw new Error(problem);
        return imported;
      });
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

  constructor(
    readonly records: readonly JwkRecord[],
    /** kid → why, for keys of the set that were refused (a token naming one gets refused_key). */
    private readonly refusedKids: ReadonlyMap<string, string> = new Map(),
  ) {
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

  /** Why the key published under `kid` was refused; undefined when no such key was refused. */
  refused(kid: string): string | undefined {
    return this.refusedKids.get(kid);
  }
}

/** A key left out of the set, for the log: never key material. */
export interface SkippedKey {
  readonly index: number;
  /** Issuer-supplied, clipped to 64 characters. */
  readonly kid?: string;
  readonly why: string;
}

export interface ParsedKeySet {
  readonly records: JwkRecord[];
  readonly skipped: SkippedKey[];
  /** kid → why, for refused keys that have a kid (see KeySet.refused). */
  readonly refusedKids: Map<string, string>;
}

/** Parse a JWKS document into records of usable public signature keys. */
export function parseJwks(document: Record<string, unknown>): ParsedKeySet | string {
  const keys = document.keys;
  if (!Array.isArray(keys)) return 'the document has no "keys" array';
  const records: JwkRecord[] = [];
  const skipped: SkippedKey[] = [];
  const refusedKids = new Map<string, string>();
  for (const [index, raw] of keys.entries()) {
    if (records.length >= MAX_KEYS || index >= MAX_KEYS * 4) {
      skipped.push({ index, why: `keys beyond the first ${MAX_KEYS} usable ones (or ${MAX_KEYS * 4} listed) are ignored` });
      break;
    }
    const problem = unusable(raw);
    if (problem) {
      const kid = (raw as JWK | null)?.kid;
      if (typeof kid === 'string') {
        skipped.push({ index, kid: kid.length > 64 ? `${kid.slice(0, 64)}…` : kid, why: problem });
        refusedKids.set(kid, problem);
      } else {
        skipped.push({ index, why: problem });
      }
      continue;
    }
    const jwk = publicMembers(raw as JWK);
    records.push(new JwkRecord(jwk.kid, jwk, fingerprint(jwk)));
  }
  return { records, skipped, refusedKids };
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
      return rsaKeyProblem(jwk.n, jwk.e);
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

/**
 * Why an RSA public key (base64url n and e, as in a JWK) must not verify anything; undefined when
 * it may. Sizes are those of the values: a 1024-bit modulus zero-padded to 256 octets is 1024 bits.
 * e = 1 makes every message its own signature; an even e or modulus is not an RSA key at all.
 */
export function rsaKeyProblem(n: string, e: string): string | undefined {
  if (!BASE64URL.test(n) || !BASE64URL.test(e) || n.length % 4 === 1 || e.length % 4 === 1) return 'RSA n or e is not base64url';
  const modulus = withoutLeadingZeros(Buffer.from(n, 'base64url'));
  const exponent = withoutLeadingZeros(Buffer.from(e, 'base64url'));
  return rsaValueProblem(bitLength(modulus), (modulus.at(-1) ?? 0) % 2 === 1, exponent.length > 4 ? undefined : exponent.length === 0 ? 0 : exponent.readUIntBE(0, exponent.length));
}

/** The same rules on the numbers; `exponent` undefined means larger than 2^32. */
function rsaValueProblem(bits: number, oddModulus: boolean, exponent: number | undefined): string | undefined {
  if (bits < MIN_RSA_BITS) return `RSA modulus is ${bits} bits; at least ${MIN_RSA_BITS} are required`;
  if (bits > MAX_RSA_BITS) return `RSA modulus is ${bits} bits; at most ${MAX_RSA_BITS} are accepted`;
  if (!oddModulus) return 'RSA modulus is even';
  if (exponent === undefined || exponent > MAX_RSA_EXPONENT) return 'RSA exponent is larger than 2^32';
  if (exponent < 3) return `RSA exponent ${exponent} is too small (at least 3)`;
  if (exponent % 2 === 0) return `RSA exponent ${exponent} is even`;
  return undefined;
}

/** The same rules on an imported key, as OpenSSL sees it (modulus and exponent values). */
function importedKeyProblem(key: CryptoKey): string | undefined {
  const details = KeyObject.from(key).asymmetricKeyDetails;
  if (details?.modulusLength === undefined) return undefined;
  const exponent = details.publicExponent;
  const small = exponent !== undefined && exponent <= BigInt(MAX_RSA_EXPONENT) ? Number(exponent) : undefined;
  // Oddness of the modulus is checked on the JWK (parseJwks) only.
  return rsaValueProblem(details.modulusLength, true, small);
}

function withoutLeadingZeros(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length && bytes[start] === 0) start++;
  return bytes.subarray(start);
}

function bitLength(bytes: Buffer): number {
  if (bytes.length === 0) return 0;
  return (bytes.length - 1) * 8 + (32 - Math.clz32(bytes[0]!));
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
