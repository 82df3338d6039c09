// Key files of the identity token: PEM, JWK and JWK Set; ES256 and EdDSA; public-only keys are
// published but never sign; wrong or broken files are refused with a message naming the file.

import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { calculateJwkThumbprint, createLocalJWKSet, jwtVerify, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { loadKeySet } from '../../src/mesh/signing-keys.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-keys-'));
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};
const ec = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ed = () => generateKeyPairSync('ed25519');

describe('identity token signing keys', () => {
  it('reads a PEM key, names it by its RFC 7638 thumbprint and signs tokens the JWKS verifies', async () => {
    const pair = ec();
    const set = loadKeySet([file('a.pem', pair.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string)], 'ES256');
    const jwk = pair.publicKey.export({ format: 'jwk' });
    expect(set.signer.kid).toBe(await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x: jwk.x!, y: jwk.y! }));
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: set.signer.kid }).sign(set.signer.privateKey!);
    await jwtVerify(token, createLocalJWKSet(JSON.parse(set.jwksJson)));
  });

  it('reads a JWK Set and an EdDSA JWK with their own kid; the last private key signs, public-only keys are only published', () => {
    const [a, b, c] = [ed(), ed(), ed()];
    const priv = (p: ReturnType<typeof ed>, kid: string) => ({ ...p.privateKey.export({ format: 'jwk' }), kid });
    const pub = (p: ReturnType<typeof ed>, kid: string) => ({ ...p.publicKey.export({ format: 'jwk' }), kid });
    const set = loadKeySet([file('set.json', JSON.stringify({ keys: [priv(a, 'old'), priv(b, 'current')] })), file('next.json', JSON.stringify(pub(c, 'next')))], 'EdDSA');
    expect(set.keys.map((k) => k.kid)).toEqual(['old', 'current', 'next']);
    expect(set.signer.kid).toBe('current');
    const published = JSON.parse(set.jwksJson).keys as Record<string, string>[];
    for (const k of published) expect(k.d).toBeUndefined();
    expect(published.map((k) => k.alg)).toEqual(['EdDSA', 'EdDSA', 'EdDSA']);
  });

  it('refuses keys that do not fit, naming the file but never the key', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    expect(() => loadKeySet([file('rsa.pem', rsa)], 'ES256')).toThrow(/rsa\.pem": ES256 needs an EC P-256 key \(found rsa\)/);
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    expect(() => loadKeySet([file('p384.pem', p384)], 'ES256')).toThrow(/ES256 needs an EC P-256 key \(found ec secp384r1\)/);
    expect(() => loadKeySet([file('ec-for-ed.pem', ec().privateKey.export({ format: 'pem', type: 'pkcs8' }) as string)], 'EdDSA')).toThrow(/EdDSA needs an Ed25519 key/);
    expect(() => loadKeySet([file('junk.pem', 'hello')], 'ES256')).toThrow(/junk\.pem" is not a PEM key or JWK/);
    expect(() => loadKeySet([file('pub.pem', ec().publicKey.export({ format: 'pem', type: 'spki' }) as string)], 'ES256')).toThrow(/no private key to sign with/);
    expect(() => loadKeySet([path.join(dir, 'absent.pem')], 'ES256')).toThrow(/cannot read ".*absent\.pem" \(ENOENT\)/);
    const k = ec();
    const jwk = { ...k.privateKey.export({ format: 'jwk' }), kid: 'same' };
    const other = { ...ec().privateKey.export({ format: 'jwk' }), kid: 'same' };
    expect(() => loadKeySet([file('dup.json', JSON.stringify({ keys: [jwk, other] }))], 'ES256')).toThrow(/kid "same" names two different keys/);
    try {
      loadKeySet([file('wrong-alg.json', JSON.stringify({ ...jwk, alg: 'ES384' }))], 'ES256');
    } catch (err) {
      expect((err as Error).message).not.toContain(jwk.d);
    }
  });
});
