// Full verification of one compact JWS against the issuers of a source. Order (cheapest and
// least trusting first): header checks → issuer by `iss` (no network) → algorithm allow-list →
// key → signature → claims → claim mapping. Nothing from the token is trusted, followed or
// fetched before the signature verifies; jku/x5u/jwk/x5c are refused outright.

import { KeyObject } from 'node:crypto';
import type { Clock } from '../clock.js';
import { Interner } from '../intern.js';
import type { ReasonCode } from '../reasons.js';
import { isPromise, type Denial, type MaybePromise, type Principal } from '../types.js';
import { ClaimError, type JsonObject } from './claims.js';
import type { JwsAlgorithm } from './config.js';
import type { CompiledIssuer } from './issuer.js';
import { clip, type KeyLookup } from './jwks.js';
import type { KeyRecord } from './keys.js';
import { signatureVerifies } from './signature.js';

/** Key records → their node:crypto KeyObject per algorithm (weak: retired key sets go away). */
const importedKeys = new WeakMap<KeyRecord, Map<string, KeyObject>>();

/** A token between parsing and signature check. */
interface SignedToken {
  readonly token: string;
  /** Index of the second dot: header.payload is the signed input. */
  readonly signedLength: number;
  readonly alg: JwsAlgorithm;
  readonly issuer: CompiledIssuer;
  readonly payload: JsonObject;
}

/**
 * A token that verified. With `kind` it is also the credential source's result; the token cache
 * stores its fields in a table slot and hands the same object back while it keeps it (recent
 * tokens: a hit allocates nothing), else one rebuilt from the slot.
 */
export class VerifiedToken {
  readonly kind = 'principal' as const;
  constructor(
    readonly principal: Principal,
    readonly issuer: CompiledIssuer,
    readonly key: KeyRecord,
    readonly exp: number,
    readonly nbf: number | undefined,
    readonly iat: number | undefined,
  ) {}
}

export type Verification = VerifiedToken | Denial;

export function isDenial(outcome: Verification): outcome is Denial {
  return (outcome as Denial).reason !== undefined;
}

const MAX_CACHED_HEADERS = 64;
const MAX_CACHED_HEADER = 512;

/** Header parameters that point at keys or certificates: never honoured, always refused. */
const FORBIDDEN_HEADERS = ['jwk', 'jku', 'x5u', 'x5c'] as const;

export function deny(reason: ReasonCode, detail?: string): Denial {
  return { reason, credentialPresented: true, detail };
}

export class JwtVerifier {
  private readonly byIss = new Map<string, CompiledIssuer>();
  /** Decoded headers by their base64url segment (see decodeHeader). */
  private readonly headers = new Map<string, JsonObject>();
  private readonly withoutIss: CompiledIssuer | undefined;

  constructor(
    issuers: readonly CompiledIssuer[],
    private readonly clock: Clock,
    /** Tenants and scope lists repeat across tokens: principals share one copy. */
    private readonly interner: Interner = new Interner(),
  ) {
    for (const issuer of issuers) {
      if (issuer.iss !== undefined) this.byIss.set(issuer.iss, issuer);
    }
    this.withoutIss = issuers.find((issuer) => issuer.iss === undefined);
  }

  /** `token` must already be a syntactically valid compact JWS (see isCompactJws). */
  verify(token: string): MaybePromise<Verification> {
    const firstDot = token.indexOf('.');
    const secondDot = token.indexOf('.', firstDot + 1);
    const header = this.decodeHeader(token.slice(0, firstDot));
    if (!header) return deny('invalid_token', 'the header is not a base64url JSON object');
    const alg = header.alg;
    if (typeof alg !== 'string' || alg === '') return deny('invalid_token', 'the header has no alg');
    if (alg.toLowerCase() === 'none') return deny('unsupported_algorithm', 'alg none');
    for (const name of FORBIDDEN_HEADERS) {
      if (Object.hasOwn(header, name)) return deny('forbidden_header', `the header carries ${name}`);
    }
    // No extension is understood, so any critical one must be refused (RFC 7515 §4.1.11).
    if (Object.hasOwn(header, 'crit')) return deny('forbidden_header', 'the header carries crit');
    const kid = header.kid;
    if (kid !== undefined && typeof kid !== 'string') return deny('invalid_token', 'kid is not a string');

    const payload = decodeSegment(token.slice(firstDot + 1, secondDot));
    if (!payload) return deny('invalid_token', 'the payload is not a base64url JSON object');
    const iss = payload.iss;
    const issuer = typeof iss === 'string' ? this.byIss.get(iss) : iss === undefined ? this.withoutIss : undefined;
    if (!issuer) return deny('unknown_issuer', typeof iss === 'string' ? `iss ${clip(iss)}` : 'the token has no usable iss');
    if (!issuer.algorithms.has(alg)) return deny('unsupported_algorithm', `alg ${clip(alg)} is not allowed for issuer ${issuer.name}`);

    const signed = { token, signedLength: secondDot, alg: alg as JwsAlgorithm, issuer, payload };
    const lookup = issuer.keyFor(kid, alg);
    if (isPromise(lookup)) return lookup.then((resolved) => this.verifyWith(signed, resolved));
    return this.verifyWith(signed, lookup);
  }

  /**
   * The header segment is the same for every token an issuer signs with one key (alg, kid, typ):
   * decoded once. Bounded; the stored key is a copy, so the cache never keeps the rest of a token.
   */
  private decodeHeader(segment: string): JsonObject | undefined {
    const known = this.headers.get(segment);
    if (known !== undefined) return known;
    const header = decodeSegment(segment);
    if (header === undefined || segment.length > MAX_CACHED_HEADER) return header;
    if (this.headers.size >= MAX_CACHED_HEADERS) this.headers.clear();
    Object.freeze(header);
    this.headers.set(Buffer.from(segment, 'latin1').toString('latin1'), header);
    return header;
  }

  private verifyWith(signed: SignedToken, lookup: KeyLookup): MaybePromise<Verification> {
    if (lookup.kind === 'deny') return deny(lookup.reason, lookup.detail);
    return this.verifySignature(signed, lookup.record);
  }

  /** Synchronous once the key is imported for the algorithm (every token after the first). */
  private verifySignature(signed: SignedToken, key: KeyRecord): MaybePromise<Verification> {
    const ready = importedKeys.get(key)?.get(signed.alg);
    if (ready) return this.verifyImported(signed, key, ready);
    return key.cryptoKey(signed.alg).then(
      (cryptoKey) => {
        const keyObject = KeyObject.from(cryptoKey);
        let byAlg = importedKeys.get(key);
        if (!byAlg) importedKeys.set(key, (byAlg = new Map()));
        byAlg.set(signed.alg, keyObject);
        return this.verifyImported(signed, key, keyObject);
      },
      (err: unknown) => deny('unknown_key', `the ${signed.alg} key cannot be imported: ${(err as Error).message}`),
    );
  }

  private verifyImported(signed: SignedToken, key: KeyRecord, keyObject: KeyObject): Verification {
    if (!signatureVerifies(signed.alg, keyObject, signed.token, signed.signedLength)) return deny('invalid_signature');
    // The payload was decoded from the very segment the signature covers.
    return this.checkClaims(signed.payload, signed.issuer, key);
  }

  private checkClaims(payload: JsonObject, issuer: CompiledIssuer, key: KeyRecord): Verification {
    const exp = payload.exp;
    if (exp === undefined) return deny('missing_claim', 'the token has no exp');
    if (!isNumericDate(exp)) return deny('missing_claim', 'exp is not a number');
    const nbf = payload.nbf;
    if (nbf !== undefined && !isNumericDate(nbf)) return deny('missing_claim', 'nbf is not a number');
    const iat = payload.iat;
    if (iat !== undefined && !isNumericDate(iat)) return deny('missing_claim', 'iat is not a number');
    if (iat === undefined && issuer.maxTokenAgeSec !== undefined) return deny('missing_claim', 'the token has no iat (maxTokenAge needs it)');

    const late = timeViolation(exp, nbf, iat, this.clock.now() / 1000, issuer);
    if (late) return deny(late);

    if (issuer.audiences) {
      const aud = payload.aud;
      if (aud === undefined) return deny('missing_claim', 'the token has no aud');
      if (!audienceMatches(aud, issuer.audiences)) return deny('invalid_audience');
    }
    for (const claim of issuer.requiredClaims) {
      const value = claim.read(payload);
      if (value === undefined || value === null) return deny('missing_claim', `the token has no ${clip(claim.name)}`);
    }

    const mapped = issuer.mapClaims(payload);
    if (mapped instanceof ClaimError) return deny('missing_claim', mapped.detail);
    const principal = jwtPrincipal(this.interner, mapped.tenant, mapped.subject, mapped.scopes, mapped.email, issuer.name, exp);
    return new VerifiedToken(principal, issuer, key, exp, nbf, iat);
  }
}

/**
 * The principal a verified token proves. Also how the token cache rebuilds one, so both have one
 * shape; tenant and scope list are the interner's shared copies.
 */
export function jwtPrincipal(
  interner: Interner,
  tenant: string | undefined,
  subject: string | undefined,
  scopes: readonly string[],
  email: string | undefined,
  issuerName: string,
  exp: number,
): Principal {
  return Object.freeze({ method: 'jwt', tenant: interner.string(tenant), subject, scopes: interner.scopes(scopes), email, issuer: issuerName, expiresAt: exp });
}

/**
 * The time rules, shared by full verification and cache hits (a cached token is re-checked on
 * every hit: it expires, and grows too old, while it sits in the cache).
 */
export function timeViolation(exp: number, nbf: number | undefined, iat: number | undefined, nowSec: number, issuer: CompiledIssuer): ReasonCode | undefined {
  const tolerance = issuer.clockToleranceSec;
  if (exp <= nowSec - tolerance) return 'token_expired';
  if (nbf !== undefined && nbf > nowSec + tolerance) return 'token_not_yet_valid';
  if (iat !== undefined && iat > nowSec + tolerance) return 'token_not_yet_valid';
  if (issuer.maxTokenAgeSec !== undefined && iat !== undefined && nowSec - iat > issuer.maxTokenAgeSec + tolerance) return 'token_too_old';
  return undefined;
}

function isNumericDate(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function audienceMatches(aud: unknown, accepted: ReadonlySet<string>): boolean {
  if (typeof aud === 'string') return accepted.has(aud);
  if (!Array.isArray(aud)) return false;
  for (const value of aud) if (typeof value === 'string' && accepted.has(value)) return true;
  return false;
}

/** base64url → JSON object; undefined for anything else (arrays, scalars, bad JSON, bad base64). */
function decodeSegment(segment: string): JsonObject | undefined {
  // A length of 4n+1 cannot be base64; Node would silently drop the dangling character.
  if (segment.length % 4 === 1) return undefined;
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : undefined;
  } catch {
    return undefined;
  }
}
