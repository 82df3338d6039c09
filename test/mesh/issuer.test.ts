// IdentityTokenIssuer on its own: EdDSA tokens, one signature for concurrent misses, the cache
// bounded, and a token per audience.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { IdentityTokenIssuer, IDENTITY_TOKEN_TYPE, type IssuedToken } from '../../src/mesh/identity-token.js';
import { SigningKeyring } from '../../src/mesh/signing-keys.js';
import { silentLogger } from '../../src/observability/logger.js';
import type { Principal } from '../../src/types.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-issuer-'));
const keyFile = path.join(dir, 'ed.pem');
writeFileSync(keyFile, generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }));

function issuer(cacheSize = 100) {
  const clock = new ManualClock(Date.UTC(2026, 10, 30));
  const keyring = new SigningKeyring({ files: [keyFile], algorithm: 'EdDSA', logger: silentLogger(), reloadIntervalMs: 0 });
  const settings = { issuer: 'https://p.test', algorithm: 'EdDSA' as const, lifetimeMs: 60_000, reuse: 0.5, cacheSize };
  return { clock, keyring, issuer: new IdentityTokenIssuer(settings, keyring, clock, silentLogger()) };
}

const caller = (subject: string, extra: Partial<Principal> = {}): Principal => ({ method: 'api-key', tenant: 't1', subject, scopes: ['a', 'b'], keyId: 'key-1', ...extra });

describe('IdentityTokenIssuer', () => {
  it('signs EdDSA tokens with the API key id, verifiable with the published keys', async () => {
    const { clock, keyring, issuer: i } = issuer();
    const token = await i.tokenFor(caller('svc'), 'aud-1');
    const { payload, protectedHeader } = await jwtVerify(token.value, createLocalJWKSet(JSON.parse(keyring.current.jwksJson)), {
      issuer: 'https://p.test',
      audience: 'aud-1',
      typ: IDENTITY_TOKEN_TYPE,
      algorithms: ['EdDSA'],
      currentDate: new Date(clock.now()),
    });
    expect(protectedHeader.alg).toBe('EdDSA');
    expect(payload).toMatchObject({ sub: 'svc', tenant: 't1', scopes: ['a', 'b'], method: 'api-key', key_id: 'key-1', exp: Math.floor(clock.now() / 1000) + 60 });
  });

  it('concurrent misses share one signature; equal callers share a token whatever the object; audiences do not', async () => {
    const { issuer: i } = issuer();
    const tokens = await Promise.all(Array.from({ length: 20 }, () => i.tokenFor(caller('same'), 'aud-1')));
    expect(new Set(tokens.map((t) => t.value)).size).toBe(1);
    expect((i.tokenFor({ ...caller('same') }, 'aud-1') as IssuedToken).value).toBe(tokens[0]!.value);
    const other = await i.tokenFor(caller('same'), 'aud-2');
    expect(decodeJwt(other.value).aud).toBe('aud-2');
  });

  it('keeps at most cacheSize callers', async () => {
    const { issuer: i } = issuer(2);
    const first = await i.tokenFor(caller('c1'), 'a');
    await i.tokenFor(caller('c2'), 'a');
    await i.tokenFor(caller('c3'), 'a');
    const again = i.tokenFor(caller('c1'), 'a');
    // Evicted: signed again (a promise), with a new jti.
    expect(again).toBeInstanceOf(Promise);
    expect(decodeJwt((await again).value).jti).not.toBe(decodeJwt(first.value).jti);
  });
});
