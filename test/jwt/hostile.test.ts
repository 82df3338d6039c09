// Every hostile token of issue 3 → 401 with its precise reason, and no outbound request: the
// trap server (named by jku/x5u) must see nothing, the key server only its start-up fetch.

import { createHmac, createPublicKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REASONS, type ReasonCode } from '../../src/reasons.js';
import type { CredentialSource } from '../../src/identity/source.js';
import { testRuntime } from '../support/runtime.js';
import { request } from '../support/request.js';
import {
  b64,
  bearer,
  identify,
  compileReady,
  nowSeconds,
  rawToken,
  sign,
  signRs256Raw,
  signingKey,
  startKeyServer,
  startServer,
  type KeyServer,
  type LocalServer,
  type SigningKey,
} from './helpers.js';

const AUDIENCE = 'https://api.example.test';

describe('hostile tokens', () => {
  const runtime = testRuntime();
  let keys: KeyServer;
  let trap: LocalServer;
  let rsa: SigningKey;
  let ec: SigningKey;
  let attacker: SigningKey;
  let source: CredentialSource;
  let claims: () => Record<string, unknown>;

  beforeAll(async () => {
    [rsa, ec, attacker] = await Promise.all([signingKey('RS256', 'rsa-1'), signingKey('ES256', 'ec-1'), signingKey('RS256', 'rsa-1')]);
    keys = await startKeyServer([rsa.publicJwk, ec.publicJwk]);
    trap = await startServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [attacker.publicJwk] })));
    source = await compileReady(
      {
        identity: [{ jwt: { issuers: ['idp'] } }],
        issuers: { idp: { issuer: keys.url, jwksUri: `${keys.url}/jwks.json`, audiences: [AUDIENCE], claims: { tenant: 'tid' } } },
      },
      runtime,
    );
    claims = () => ({ iss: keys.url, aud: AUDIENCE, sub: 'user-1', tid: 'acme', iat: nowSeconds(runtime), exp: nowSeconds(runtime) + 600 });
    // The start-up fetch; every hostile token below must add nothing to it.
    expect(keys.jwksRequests()).toBe(1);
    expect(await reason(await sign(rsa, claims()))).toBe('principal');
  });

  afterAll(async () => {
    await runtime.resources.closeAll();
    await Promise.all([keys.close(), trap.close()]);
  });

  async function reason(token: string): Promise<string> {
    const result = await identify(source, bearer(token));
    if (result.kind !== 'deny') return result.kind;
    expect(result.denial.credentialPresented).toBe(true);
    return result.denial.reason;
  }

  async function expectDenied(token: string, expected: ReasonCode): Promise<void> {
    expect(await reason(token)).toBe(expected);
    expect(REASONS[expected].status).toBe(401);
  }

  it.each(['none', 'None', 'NONE', 'nOnE'])('alg %s is refused, with or without a signature', async (alg) => {
    await expectDenied(rawToken({ alg, typ: 'JWT' }, claims()), 'unsupported_algorithm');
    await expectDenied(rawToken({ alg, kid: rsa.kid }, claims(), b64('sig')), 'unsupported_algorithm');
  });

  it('HS256 signed with the RSA public key (key confusion) is refused', async () => {
    const pem = createPublicKey({ key: rsa.publicJwk as never, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    for (const secret of [pem, JSON.stringify(rsa.publicJwk), rsa.publicJwk.n!]) {
      const input = `${b64({ alg: 'HS256', kid: rsa.kid })}.${b64(claims())}`;
      const token = `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
      await expectDenied(token, 'unsupported_algorithm');
    }
  });

  it('an embedded jwk is refused even when the token verifies with it', async () => {
    await expectDenied(await sign(attacker, claims(), { jwk: attacker.publicJwk }), 'forbidden_header');
  });

  it('jku, x5u and x5c are refused and never fetched', async () => {
    await expectDenied(await sign(attacker, claims(), { jku: `${trap.url}/jwks.json` }), 'forbidden_header');
    await expectDenied(await sign(attacker, claims(), { x5u: `${trap.url}/cert.pem` }), 'forbidden_header');
    await expectDenied(await sign(attacker, claims(), { x5c: ['MIIB'] }), 'forbidden_header');
    // Even a genuinely signed token that merely names a key URL is refused.
    await expectDenied(await sign(rsa, claims(), { jku: `${trap.url}/jwks.json` }), 'forbidden_header');
    expect(trap.total()).toBe(0);
  });

  it('an unknown crit header is refused', async () => {
    const token = signRs256Raw(rsa, { alg: 'RS256', kid: rsa.kid, crit: ['https://example.test/ext'], 'https://example.test/ext': true }, claims());
    await expectDenied(token, 'forbidden_header');
    // The same construction without crit verifies: crit alone is what is refused.
    expect(await reason(signRs256Raw(rsa, { alg: 'RS256', kid: rsa.kid }, claims()))).toBe('principal');
  });

  it('a tampered payload or signature fails signature verification', async () => {
    const token = await sign(rsa, claims());
    const [header, , signature] = token.split('.');
    await expectDenied(`${header}.${b64({ ...claims(), tid: 'other-tenant' })}.${signature}`, 'invalid_signature');
    const middle = Math.floor(signature!.length / 2);
    const flipped = signature!.slice(0, middle) + (signature![middle] === 'A' ? 'B' : 'A') + signature!.slice(middle + 1);
    await expectDenied(`${header}.${token.split('.')[1]}.${flipped}`, 'invalid_signature');
    await expectDenied(`${header}.${token.split('.')[1]}.`, 'invalid_signature');
  });

  it('a header seen before is decoded once, but every token is still checked in full', async () => {
    // Same header segment for all of these (decoded headers are memoised by segment).
    const jku = { alg: 'RS256', kid: rsa.kid, jku: `${trap.url}/jwks.json` };
    for (let i = 0; i < 3; i++) await expectDenied(signRs256Raw(rsa, jku, claims()), 'forbidden_header');
    const plain = { alg: 'RS256', kid: rsa.kid };
    expect(await reason(signRs256Raw(rsa, plain, { ...claims(), sub: 'first' }))).toBe('principal');
    expect(await reason(signRs256Raw(rsa, plain, { ...claims(), sub: 'second' }))).toBe('principal');
    const good = signRs256Raw(rsa, plain, { ...claims(), sub: 'third' });
    const [header, payload] = good.split('.');
    await expectDenied(`${header}.${payload}.${good.split('.')[2]!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'))}`, 'invalid_signature');
    // A flood of distinct headers (bounded memo) changes no answer.
    for (let i = 0; i < 100; i++) await expectDenied(signRs256Raw(rsa, { alg: 'RS256', kid: rsa.kid, x5u: `https://x.test/${i}` }, claims()), 'forbidden_header');
    expect(await reason(signRs256Raw(rsa, plain, { ...claims(), sub: 'fourth' }))).toBe('principal');
  });

  it('a token signed by another key under a known kid fails', async () => {
    await expectDenied(await sign(attacker, claims()), 'invalid_signature');
  });

  it('ES256 with r = s = 0 fails (psychic signature)', async () => {
    const zero = Buffer.alloc(64).toString('base64url');
    await expectDenied(rawToken({ alg: 'ES256', kid: ec.kid }, claims(), zero), 'invalid_signature');
    expect(await reason(await sign(ec, claims()))).toBe('principal');
  });

  it('missing exp, expiry, nbf in the future, wrong iss and wrong aud have their own reasons', async () => {
    const now = nowSeconds(runtime);
    const { exp: _exp, ...noExp } = claims();
    await expectDenied(await sign(rsa, noExp), 'missing_claim');
    await expectDenied(await sign(rsa, { ...claims(), exp: now - 31 }), 'token_expired');
    await expectDenied(await sign(rsa, { ...claims(), nbf: now + 3600 }), 'token_not_yet_valid');
    await expectDenied(await sign(rsa, { ...claims(), iss: 'https://evil.example.test/' }), 'unknown_issuer');
    await expectDenied(await sign(rsa, { ...claims(), aud: 'https://other-api.example.test' }), 'invalid_audience');
    await expectDenied(await sign(rsa, { ...claims(), aud: undefined }), 'missing_claim');
    await expectDenied(await sign(rsa, { ...claims(), exp: String(now + 60) as unknown as number }), 'missing_claim');
  });

  it('an unknown kid is refused (one refetch each, then it is remembered)', async () => {
    const before = keys.jwksRequests();
    await expectDenied(await sign(rsa, claims(), { kid: 'no-such-kid' }), 'unknown_key');
    await expectDenied(await sign(rsa, claims(), { kid: 'no-such-kid' }), 'unknown_key');
    await expectDenied(await sign(rsa, claims(), { kid: 'another-kid' }), 'unknown_key');
    expect(keys.jwksRequests()).toBe(before + 2);
  });

  it('an oversized token is refused before parsing', async () => {
    const huge = `${'A'.repeat(5000)}.${'B'.repeat(5000)}.C`;
    await expectDenied(huge, 'token_too_large');
    // Even one that would otherwise verify.
    await expectDenied(await sign(rsa, { ...claims(), padding: 'x'.repeat(9000) }), 'token_too_large');
  });

  it('non-JWT garbage is invalid_token', async () => {
    for (const garbage of ['not-a-jwt', 'a.b.c', '....', 'eyJhbGciOiJSUzI1NiJ9.e30', `${b64('[1]')}.${b64('{}')}.x`, `${b64({ alg: 'RS256' })}.${b64('not json')}.x`, 'Zm9v.YmFy.YmF6']) {
      expect(await reason(garbage), garbage).toBe('invalid_token');
    }
    await expectDenied(`${b64({ alg: 'RS256', kid: 7 })}.${b64(claims())}.x`, 'invalid_token');
    await expectDenied(`${b64({ kid: rsa.kid })}.${b64(claims())}.x`, 'invalid_token');
  });

  it('a malformed Authorization header is malformed_credential', async () => {
    const token = await sign(rsa, claims());
    for (const value of [`Bearer ${token}, Bearer ${token}`, `Basic dXNlcjpwYXNz, Bearer ${token}`, 'Bearer', 'Bearer ', `Bearer\t${token}`, `Bearer ${token} extra`]) {
      const result = await identify(source, request({ headers: { authorization: value } }));
      expect(result.kind === 'deny' && result.denial.reason, value.slice(0, 20)).toBe('malformed_credential');
    }
  });

  it('made no request to anything but the key server, and only for the unknown kid', () => {
    expect(trap.total()).toBe(0);
    expect(keys.total()).toBe(keys.jwksRequests());
    expect(keys.jwksRequests()).toBe(3);
  });
});
