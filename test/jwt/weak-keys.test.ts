// Weak RSA keys in a key set (issue 13 §6): a modulus zero-padded to 2048 bits that is really 512
// or 1024 bits, an exponent of 1 (a signature anyone can compute), even, tiny or huge exponents, an
// even modulus. Each is a real crafted JWK; tokens naming it are refused and the key is logged.

import { createHash, generateKeyPairSync, KeyObject, sign as cryptoSign } from 'node:crypto';
import type { JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwkRecord, parseJwks } from '../../src/jwt/keys.js';
import { createLogger } from '../../src/observability/logger.js';
import { REASONS } from '../../src/reasons.js';
import type { CredentialSource } from '../../src/identity/source.js';
import { testRuntime } from '../support/runtime.js';
import { b64, bearer, compileReady, identify, nowSeconds, sign, signingKey, startKeyServer, type KeyServer, type SigningKey } from './helpers.js';

const AUDIENCE = 'https://api.example.test';

/** A real RSA key pair of `bits`, its public JWK with the modulus left-padded to `padTo` bytes. */
function rsaKey(bits: number, kid: string, padTo?: number): { jwk: JWK; privateKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  const jwk = publicKey.export({ format: 'jwk' }) as JWK;
  const n = Buffer.from(jwk.n!, 'base64url');
  const padded = padTo === undefined ? n : Buffer.concat([Buffer.alloc(padTo - n.length), n]);
  return { jwk: { kty: 'RSA', kid, alg: 'RS256', use: 'sig', n: padded.toString('base64url'), e: jwk.e }, privateKey };
}

function rs256(privateKey: KeyObject, kid: string, payload: unknown): string {
  const input = `${b64({ alg: 'RS256', kid })}.${b64(payload)}`;
  return `${input}.${cryptoSign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

/**
 * With e = 1 the "signature" of a message is its own PKCS#1 v1.5 encoding: no private key needed.
 * This is the forgery a key set with such a key lets anyone make.
 */
function forgeWithExponentOne(modulusBytes: number, kid: string, payload: unknown): string {
  const input = `${b64({ alg: 'RS256', kid })}.${b64(payload)}`;
  const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), createHash('sha256').update(input).digest()]);
  const encoded = Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(modulusBytes - 3 - digestInfo.length, 0xff), Buffer.from([0]), digestInfo]);
  return `${input}.${encoded.toString('base64url')}`;
}

const exponent = (value: bigint): string => {
  let hex = value.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return Buffer.from(hex, 'hex').toString('base64url');
};

describe('weak RSA keys', () => {
  const lines: Record<string, unknown>[] = [];
  const runtime = testRuntime({ logger: createLogger({ level: 'info', destination: { write: (line: string) => void lines.push(JSON.parse(line)) } }) });
  let server: KeyServer;
  let source: CredentialSource;
  let good: SigningKey;
  const padded1024 = rsaKey(1024, 'padded-1024', 256);
  const padded512 = rsaKey(512, 'padded-512', 256);
  const strong = rsaKey(2048, 'strong');
  const claims = () => ({ iss: server.url, aud: AUDIENCE, sub: 'attacker', exp: nowSeconds(runtime) + 600 });
  const variants: Record<string, JWK> = {
    'e-1': { ...strong.jwk, kid: 'e-1', e: exponent(1n) },
    'e-1-padded': { ...strong.jwk, kid: 'e-1-padded', e: Buffer.from([0, 0, 1]).toString('base64url') },
    'e-2': { ...strong.jwk, kid: 'e-2', e: exponent(2n) },
    'e-65536': { ...strong.jwk, kid: 'e-65536', e: exponent(65536n) },
    'e-huge': { ...strong.jwk, kid: 'e-huge', e: exponent(2n ** 64n + 1n) },
    'n-even': { ...strong.jwk, kid: 'n-even', n: Buffer.concat([Buffer.from(strong.jwk.n!, 'base64url').subarray(0, 255), Buffer.from([2])]).toString('base64url') },
    'n-not-base64url': { ...strong.jwk, kid: 'n-not-base64url', n: `${strong.jwk.n!.slice(0, 100)}+/${strong.jwk.n!.slice(102)}` },
  };

  beforeAll(async () => {
    good = await signingKey('RS256', 'good');
    server = await startKeyServer([good.publicJwk, padded1024.jwk, padded512.jwk, ...Object.values(variants)]);
    source = await compileReady({ identity: [{ jwt: { issuers: ['idp'] } }], issuers: { idp: { issuer: server.url, jwksUri: `${server.url}/jwks.json`, audiences: [AUDIENCE] } } }, runtime);
  });

  afterAll(async () => {
    await runtime.resources.closeAll();
    await server.close();
  });

  async function reason(token: string): Promise<string> {
    const result = await identify(source, bearer(token));
    return result.kind === 'deny' ? result.denial.reason : result.kind;
  }

  it('the good key of the same set still verifies', async () => {
    expect(await reason(await sign(good, claims()))).toBe('principal');
  });

  it('refuses a 1024-bit (and a 512-bit) modulus zero-padded to 2048 bits: the value counts, not the bytes', async () => {
    expect(await reason(rs256(padded1024.privateKey, 'padded-1024', claims()))).toBe('refused_key');
    expect(await reason(rs256(padded512.privateKey, 'padded-512', claims()))).toBe('refused_key');
    expect(REASONS.refused_key.status).toBe(401);
  });

  it('refuses e = 1: a token forged without any private key is not accepted', async () => {
    expect(await reason(forgeWithExponentOne(256, 'e-1', claims()))).toBe('refused_key');
    expect(await reason(forgeWithExponentOne(256, 'e-1-padded', claims()))).toBe('refused_key');
  });

  it('refuses even, too small and absurdly large exponents, an even modulus, bad base64url', async () => {
    for (const kid of ['e-2', 'e-65536', 'e-huge', 'n-even', 'n-not-base64url']) {
      expect(await reason(rs256(strong.privateKey, kid, claims())), kid).toBe('refused_key');
    }
  });

  it('asks the issuer nothing for a refused kid (it is known, just not usable)', () => {
    expect(server.jwksRequests()).toBe(1);
  });

  it('logs each refused key with its issuer, kid and why — never its material', () => {
    const line = lines.find((l) => l.msg === 'JWKS keys refused') as { issuer: string; refused: { kid?: string; why: string }[] } | undefined;
    expect(line).toBeDefined();
    expect(line!.issuer).toBe('idp');
    const why = Object.fromEntries(line!.refused.map((r) => [r.kid, r.why]));
    expect(why).toEqual({
      'padded-1024': 'RSA modulus is 1024 bits; at least 2048 are required',
      'padded-512': 'RSA modulus is 512 bits; at least 2048 are required',
      'e-1': 'RSA exponent 1 is too small (at least 3)',
      'e-1-padded': 'RSA exponent 1 is too small (at least 3)',
      'e-2': 'RSA exponent 2 is too small (at least 3)',
      'e-65536': 'RSA exponent 65536 is even',
      'e-huge': 'RSA exponent is larger than 2^32',
      'n-even': 'RSA modulus is even',
      'n-not-base64url': 'RSA n or e is not base64url',
    });
    expect(JSON.stringify(lines)).not.toContain(strong.jwk.n!.slice(0, 40));
  });
});

describe('key strength is checked on every path to a usable key', () => {
  it('parseJwks keeps a strong key and a 4096-bit one, refuses the weak ones', () => {
    const strong = rsaKey(2048, 'a');
    const big = rsaKey(4096, 'b');
    const weak = rsaKey(1024, 'c', 256);
    const parsed = parseJwks({ keys: [strong.jwk, big.jwk, weak.jwk] });
    if (typeof parsed === 'string') throw new Error(parsed);
    expect(parsed.records.map((r) => r.kid)).toEqual(['a', 'b']);
    expect(parsed.skipped).toEqual([{ index: 2, kid: 'c', why: 'RSA modulus is 1024 bits; at least 2048 are required' }]);
  });

  it('a record built around a weak key refuses to import it (checked on the imported key itself)', async () => {
    const weak = rsaKey(1024, 'w', 256);
    const record = new JwkRecord('w', weak.jwk, 'w');
    await expect(record.cryptoKey('RS256')).rejects.toThrow('RSA modulus is 1024 bits; at least 2048 are required');
    const e1 = new JwkRecord('e1', { ...rsaKey(2048, 'e1').jwk, e: 'AQ' }, 'e1');
    await expect(e1.cryptoKey('RS256')).rejects.toThrow('RSA exponent 1 is too small (at least 3)');
  });
});
