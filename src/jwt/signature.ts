// The signature check itself, straight on WebCrypto with keys imported once (keys.ts). Everything
// jose would check around it is already done by the verifier (alg allow-list, no crit, header
// parsed once, key type bound to the algorithm at import, RSA modulus ≥ 2048 at JWKS parse), so a
// cache miss costs no more than the crypto plus one parse of the token.

import type { JwsAlgorithm } from './config.js';

type VerifyParams = AlgorithmIdentifier | RsaPssParams | EcdsaParams;

const PARAMS: Readonly<Record<JwsAlgorithm, VerifyParams>> = {
  RS256: { name: 'RSASSA-PKCS1-v1_5' },
  RS384: { name: 'RSASSA-PKCS1-v1_5' },
  RS512: { name: 'RSASSA-PKCS1-v1_5' },
  PS256: { name: 'RSA-PSS', saltLength: 32 },
  PS384: { name: 'RSA-PSS', saltLength: 48 },
  PS512: { name: 'RSA-PSS', saltLength: 64 },
  ES256: { name: 'ECDSA', hash: 'SHA-256' },
  ES384: { name: 'ECDSA', hash: 'SHA-384' },
  ES512: { name: 'ECDSA', hash: 'SHA-512' },
  EdDSA: { name: 'Ed25519' },
  Ed25519: { name: 'Ed25519' },
  HS256: { name: 'HMAC' },
  HS384: { name: 'HMAC' },
  HS512: { name: 'HMAC' },
};

/** JWS ECDSA signatures are fixed-size r || s (RFC 7518 §3.4). */
const ECDSA_SIGNATURE_BYTES: Partial<Record<JwsAlgorithm, number>> = { ES256: 64, ES384: 96, ES512: 132 };

/**
 * Whether the compact JWS `token` (already syntax-checked) carries a valid `alg` signature by
 * `key`. `signedLength` is the index of the second dot: header.payload is what was signed.
 */
export async function signatureVerifies(alg: JwsAlgorithm, key: CryptoKey, token: string, signedLength: number): Promise<boolean> {
  const encoded = token.slice(signedLength + 1);
  // 4n+1 characters is not base64 at all; an empty signature never verifies.
  if (encoded.length === 0 || encoded.length % 4 === 1) return false;
  const signature = Buffer.from(encoded, 'base64url');
  const expectedLength = ECDSA_SIGNATURE_BYTES[alg];
  if (expectedLength !== undefined && signature.length !== expectedLength) return false;
  try {
    return await crypto.subtle.verify(PARAMS[alg], key, signature, Buffer.from(token.slice(0, signedLength), 'latin1'));
  } catch {
    // WebCrypto throws on signatures it cannot even parse: those do not verify either.
    return false;
  }
}
