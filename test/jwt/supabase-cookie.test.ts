// The Supabase SSR session cookie (`from: [{ supabaseCookie: { projectRef } }]`): cookies written by
// the real @supabase/ssr package, unchunked and chunked, base64url and raw, for the HS256 (project
// JWT secret) and the asymmetric (JWKS) Supabase setups; reassembly, decoding, and every way the
// chunks can be malformed, oversized or inconsistent (401 malformed_credential).

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CredentialSource } from '../../src/identity/source.js';
import { testRuntime } from '../support/runtime.js';
import { request } from '../support/request.js';
import { cookieHeader, supabaseSessionCookies, type WrittenCookie } from '../support/supabase.js';
import { compileReady, identify, mustCompile, nowSeconds, sign, signingKey, startKeyServer, type KeyServer, type SigningKey } from './helpers.js';
import { SignJWT } from 'jose';

const REF = 'chwjbbvcqsxxgaytqlix';
const COOKIE = `sb-${REF}-auth-token`;
const ISSUER = `https://${REF}.supabase.co/auth/v1`;
const SECRET = 'supabase-cookie-test-secret-0123456789abcdef';
const COMPANY = '3f6c2a8e-7b1d-4e55-9c0a-1d2e3f4a5b6c';
/** Enough user_metadata for @supabase/ssr to split the session into several cookies. */
const BIG = { metadata: { company_id: COMPANY, bio: 'x'.repeat(7_000) } };

const b64url = (text: string) => Buffer.from(text).toString('base64url');

async function result(source: CredentialSource, cookie: string | undefined, extra: Record<string, string> = {}): Promise<string> {
  const headers = cookie === undefined ? extra : { cookie, ...extra };
  const r = await identify(source, request({ headers }));
  return r.kind === 'principal' ? `tenant:${r.principal.tenant}` : r.kind === 'deny' ? r.denial.reason : 'none';
}

describe('supabaseCookie, HS256 project secret', () => {
  let runtime: ReturnType<typeof testRuntime>;
  let source: CredentialSource;
  const claims = () => ({ iss: ISSUER, aud: 'authenticated', sub: 'user-1', role: 'authenticated', user_metadata: { company_id: COMPANY }, exp: nowSeconds(runtime) + 3600 });
  const token = (extra: Record<string, unknown> = {}, secret = SECRET) =>
    new SignJWT({ ...claims(), ...extra }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(secret));
  const policy = (from: unknown[]) => ({
    identity: [{ jwt: { issuers: ['supabase'], from } }],
    issuers: { supabase: { issuer: ISSUER, secret: SECRET, audiences: ['authenticated'], claims: { tenant: 'user_metadata.company_id' } } },
  });

  beforeEach(() => {
    runtime = testRuntime();
    source = mustCompile(policy([{ supabaseCookie: { projectRef: REF } }]), runtime);
  });

  it('reads the unchunked base64- cookie @supabase/ssr writes', async () => {
    const cookies = await supabaseSessionCookies(REF, await token());
    expect(cookies.map((c) => c.name)).toEqual([COOKIE]);
    expect(cookies[0]!.value.startsWith('base64-')).toBe(true);
    expect(await result(source, cookieHeader(cookies))).toBe(`tenant:${COMPANY}`);
    // Among other cookies, quoted or not.
    expect(await result(source, cookieHeader(cookies, ['theme=dark', `sb-${REF}-auth-token-code-verifier=abc`]))).toBe(`tenant:${COMPANY}`);
    expect(await result(source, `a=1; ${COOKIE}="${cookies[0]!.value}"; b=2`)).toBe(`tenant:${COMPANY}`);
  });

  it('reassembles the chunks of a large session, in any order', async () => {
    const cookies = await supabaseSessionCookies(REF, await token(), BIG);
    expect(cookies.map((c) => c.name)).toEqual(cookies.map((_, i) => `${COOKIE}.${i}`));
    expect(cookies.length).toBeGreaterThan(2);
    expect(await result(source, cookieHeader(cookies))).toBe(`tenant:${COMPANY}`);
    expect(await result(source, cookieHeader([...cookies].reverse(), ['x=y']))).toBe(`tenant:${COMPANY}`);
  });

  it('reads the raw (URI-encoded JSON) encoding too', async () => {
    const small = await supabaseSessionCookies(REF, await token(), { cookieEncoding: 'raw' });
    expect(small[0]!.value.startsWith('{')).toBe(true);
    expect(await result(source, cookieHeader(small))).toBe(`tenant:${COMPANY}`);
    const chunked = await supabaseSessionCookies(REF, await token(), { ...BIG, cookieEncoding: 'raw' });
    expect(chunked.length).toBeGreaterThan(1);
    expect(await result(source, cookieHeader(chunked))).toBe(`tenant:${COMPANY}`);
  });

  it('verifies the access token like any other: signature, expiry, audience', async () => {
    const forged = await supabaseSessionCookies(REF, await token({}, 'another-project-secret-0123456789abcdef'));
    expect(await result(source, cookieHeader(forged))).toBe('invalid_signature');
    const otherAudience = await supabaseSessionCookies(REF, await token({ aud: 'anon-service' }));
    expect(await result(source, cookieHeader(otherAudience))).toBe('invalid_audience');
    const cookies = await supabaseSessionCookies(REF, await token());
    runtime.clock.advance(2 * 3600_000);
    expect(await result(source, cookieHeader(cookies))).toBe('token_expired');
  });

  it('ignores other projects and requests without the cookie', async () => {
    const other = await supabaseSessionCookies('otherprojectref00000', await token());
    expect(await result(source, cookieHeader(other))).toBe('none');
    expect(await result(source, undefined)).toBe('none');
    expect(await result(source, 'theme=dark')).toBe('none');
    // A prefix of the name is not the name.
    const cookies = await supabaseSessionCookies(REF, await token());
    expect(await result(source, `x${COOKIE}=${cookies[0]!.value}`)).toBe('none');
  });

  it('refuses malformed, oversized and inconsistent chunks as malformed_credential', async () => {
    const good = await token();
    const [c0, c1, c2] = await supabaseSessionCookies(REF, good, BIG);
    const [whole] = await supabaseSessionCookies(REF, good);
    const pair = (name: string, value: string): WrittenCookie => ({ name, value });
    const cases: Record<string, string> = {
      'a missing chunk': cookieHeader([c0!, c2!]),
      'no chunk 0': cookieHeader([c1!, c2!]),
      'a chunk twice': cookieHeader([c0!, c1!, c1!, c2!]),
      'a chunk twice with other values': cookieHeader([c0!, c1!, pair(c1!.name, 'AAAA'), c2!]),
      'the whole cookie and chunks': cookieHeader([whole!, c0!, c1!, c2!]),
      'the whole cookie twice': cookieHeader([whole!, whole!]),
      'an empty chunk': cookieHeader([c0!, pair(c1!.name, ''), c2!]),
      'not base64url': cookieHeader([pair(COOKIE, 'base64-!!notbase64!!')]),
      'one character outside base64url': cookieHeader([pair(COOKIE, `${whole!.value.slice(0, 40)}*${whole!.value.slice(41)}`)]),
      'padding in the middle': cookieHeader([pair(COOKIE, `${whole!.value.slice(0, 40)}=${whole!.value.slice(41)}`)]),
      'a space inside': `${COOKIE}=${whole!.value.slice(0, 40)} ${whole!.value.slice(41)}`,
      'base64 of garbage': cookieHeader([pair(COOKIE, `base64-${b64url('not json')}`)]),
      'JSON but not an object': cookieHeader([pair(COOKIE, `base64-${b64url('["a","b"]')}`)]),
      'no access_token': cookieHeader([pair(COOKIE, `base64-${b64url('{"refresh_token":"r"}')}`)]),
      'access_token not a string': cookieHeader([pair(COOKIE, `base64-${b64url('{"access_token":42}')}`)]),
      'empty access_token': cookieHeader([pair(COOKIE, `base64-${b64url('{"access_token":""}')}`)]),
      'raw value that is not JSON': cookieHeader([pair(COOKIE, '{access_token')]),
      'neither base64- nor JSON': cookieHeader([pair(COOKIE, good)]),
      'bad percent-encoding': `${COOKIE}=%7B%E0%A4%A`,
      'over 64 KB reassembled': cookieHeader(
        Array.from({ length: 22 }, (_, i) => pair(`${COOKIE}.${i}`, i === 0 ? `base64-${'A'.repeat(3_000)}` : 'A'.repeat(3_000))),
      ),
    };
    for (const [what, header] of Object.entries(cases)) expect(await result(source, header), what).toBe('malformed_credential');
    // A session just under the bound still works (the access token itself is bounded by maxTokenSize).
    const big = await supabaseSessionCookies(REF, good, { metadata: { company_id: COMPANY, bio: 'x'.repeat(40_000) } });
    expect(big.length).toBeGreaterThan(10);
    expect(await result(source, cookieHeader(big))).toBe(`tenant:${COMPANY}`);
  });

  it('sits in a list of places: Authorization first, then the session cookie', async () => {
    const both = mustCompile(policy([{ header: 'authorization', scheme: 'Bearer' }, { supabaseCookie: { projectRef: REF } }]), runtime);
    const viaHeader = await token({ user_metadata: { company_id: 'from-header' } });
    const cookies = await supabaseSessionCookies(REF, await token());
    expect(await result(both, cookieHeader(cookies), { authorization: `Bearer ${viaHeader}` })).toBe('tenant:from-header');
    expect(await result(both, cookieHeader(cookies))).toBe(`tenant:${COMPANY}`);
  });

  it('forward: false strips the Cookie header the session came in', async () => {
    const stripping = mustCompile({ ...policy([{ supabaseCookie: { projectRef: REF } }]), identity: [{ jwt: { issuers: ['supabase'], forward: false, from: [{ supabaseCookie: { projectRef: REF } }] } }] }, runtime);
    const cookies = await supabaseSessionCookies(REF, await token(), BIG);
    const r = await identify(stripping, request({ headers: { cookie: cookieHeader(cookies) } }));
    expect(r).toMatchObject({ kind: 'principal', removeHeaders: ['cookie'] });
  });
});

describe('supabaseCookie, asymmetric signing keys (JWKS)', () => {
  let runtime: ReturnType<typeof testRuntime>;
  let keys: KeyServer;
  let key: SigningKey;

  beforeAll(async () => {
    key = await signingKey('ES256', 'supabase-es256');
    keys = await startKeyServer([key.publicJwk]);
  });
  afterAll(() => keys.close());

  it('verifies the session\'s access token against the project JWKS, chunked and unchunked', async () => {
    runtime = testRuntime();
    const source = await compileReady(
      {
        identity: [{ jwt: { issuers: ['supabase'], from: [{ supabaseCookie: { projectRef: REF } }] } }],
        issuers: { supabase: { issuer: ISSUER, jwksUri: `${keys.url}/jwks.json`, audiences: ['authenticated'], claims: { tenant: 'user_metadata.company_id' } } },
      },
      runtime,
    );
    const t = await sign(key, { iss: ISSUER, aud: 'authenticated', sub: 'user-2', user_metadata: { company_id: COMPANY }, exp: nowSeconds(runtime) + 3600 });
    const small = await supabaseSessionCookies(REF, t);
    const chunked = await supabaseSessionCookies(REF, t, BIG);
    expect(small).toHaveLength(1);
    expect(chunked.length).toBeGreaterThan(1);
    expect(await result(source, cookieHeader(small))).toBe(`tenant:${COMPANY}`);
    expect(await result(source, cookieHeader(chunked))).toBe(`tenant:${COMPANY}`);
    const other = await signingKey('ES256', 'supabase-es256');
    const forged = await sign(other, { iss: ISSUER, aud: 'authenticated', sub: 'user-2', user_metadata: { company_id: COMPANY }, exp: nowSeconds(runtime) + 3600 });
    expect(await result(source, cookieHeader(await supabaseSessionCookies(REF, forged)))).toBe('invalid_signature');
  });
});
