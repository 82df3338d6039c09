// The signature check itself, with node:crypto's one-shot synchronous verify on keys imported
// once (keys.ts) and converted to KeyObjects once. Everything jose would check around it is
// already done by the verifier (alg allow-list, no crit, header parsed once, key type bound to the
// algorithm at import, RSA modulus ≥ 2048 at JWKS parse). Synchronous on purpose: WebCrypto's
// promise and thread-pool hop cost more than an RS256 verify on the one core a server gets.

import { constants, createHmac, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import type { JwsAlgorithm } from './config.js';

type Scheme =
  | { kind: 'rsa'; hash: string; padding: number; saltLength?: number }
  | { kind: 'ecdsa'; hash: string; bytes: number }
  | { kind: 'eddsa' }
  | { kind: 'hmac'; hash: string };

const SCHEMES: Readonly<Record<JwsAlgorithm, Scheme>> = {
  RS256: { kind: 'rsa', hash: 'sha256', padding: constants.RSA_PKCS1_PADDING },
  RS384: { kind: 'rsa', hash: 'sha384', padding: constants.RSA_PKCS1_PADDING },
  RS512: { kind: 'rsa', hash: 'sha512', padding: constants.RSA_PKCS1_PADDING },
  PS256: { kind: 'rsa', hash: 'sha256', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
  PS384: { kind: 'rsa', hash: 'sha384', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 },
  PS512: { kind: 'rsa', hash: 'sha512', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 },
  // JWS ECDSA signatures are fixed-size r || s (RFC 7518 §3.4), i.e. IEEE P1363.
  ES256: { kind: 'ecdsa', hash: 'sha256', bytes: 64 },
  ES384: { kind: 'ecdsa', hash: 'sha384', bytes: 96 },
  ES512: { kind: 'ecdsa', hash: 'sha512', bytes: 132 },
  EdDSA: { kind: 'eddsa' },
  Ed25519: { kind: 'eddsa' },
  HS256: { kind: 'hmac', hash: 'sha256' },
  HS384: { kind: 'hmac', hash: 'sha384' },
  HS512: { kind: 'hmac', hash: 'sha512' },
};

/**
 * Whether the compact JWS `token` (already syntax-checked) carries a valid `alg` signature by
 * `key`. `signedLength` is the index of the second dot: header.payload is what was signed.
 */
export function signatureVerifies(alg: JwsAlgorithm, key: KeyObject, token: string, signedLength: number): boolean {
  const encoded = token.slice(signedLength + 1);
  // 4n+1 characters is not base64 at all; an empty signature never verifies.
  if (encoded.length === 0 || encoded.length % 4 === 1) return false;
  const signature = Buffer.from(encoded, 'base64url');
  const signed = Buffer.from(token.slice(0, signedLength), 'latin1');
  const scheme = SCHEMES[alg];
  try {
    switch (scheme.kind) {
      case 'rsa':
        return verify(scheme.hash, signed, { key, padding: scheme.padding, saltLength: scheme.saltLength }, signature);
      case 'ecdsa':
        if (signature.length !== scheme.bytes) return false;
        return verify(scheme.hash, signed, { key, dsaEncoding: 'ieee-p1363' }, signature);
      case 'eddsa':
        return verify(null, signed, key, signature);
      case 'hmac': {
        const expected = createHmac(scheme.hash, key).update(signed).digest();
        return signature.length === expected.length && timingSafeEqual(signature, expected);
      }
    }
  } catch {
    // Signatures the library cannot even parse do not verify either.
    return false;
  }
}
