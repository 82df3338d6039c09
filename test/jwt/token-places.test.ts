// Where the token comes from: Authorization (strict), a dedicated header, a cookie; the order of
// places; tokens that are not JWTs after Bearer; forward: false.

import { SignJWT } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import type { CredentialSource } from '../../src/identity/source.js';
import { testRuntime } from '../support/runtime.js';
import { request } from '../support/request.js';
import { identify, mustCompile } from './helpers.js';

const SECRET = 'token-places-test-secret-0123456789abcdef';

describe('token places', () => {
  let runtime: ReturnType<typeof testRuntime>;
  const token = (tenant: string) =>
    new SignJWT({ iss: 'local', tid: tenant, exp: Math.floor(runtime.clock.now() / 1000) + 600 }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET));
  const compile = (source: Record<string, unknown>, identity: unknown[] = []) =>
    mustCompile({ identity: [{ jwt: { issuers: ['local'], ...source } }, ...identity], issuers: { local: { issuer: 'local', secret: SECRET, claims: { tenant: 'tid' } } } }, runtime);
  const result = async (source: CredentialSource, headers: Record<string, string>) => {
    const r = await identify(source, request({ headers }));
    return r.kind === 'principal' ? `tenant:${r.principal.tenant}` : r.kind === 'deny' ? r.denial.reason : 'none';
  };

  beforeEach(() => {
    runtime = testRuntime();
  });

  it('reads Authorization: Bearer by default, scheme case-insensitive', async () => {
    const source = compile({});
    const t = await token('a');
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) expect(await result(source, { authorization: `${scheme} ${t}` })).toBe('tenant:a');
    expect(await result(source, { authorization: `Bearer   ${t}  ` })).toBe('tenant:a');
  });

  it('passes on other schemes and on requests without a credential', async () => {
    const source = compile({});
    expect(await result(source, {})).toBe('none');
    expect(await result(source, { authorization: 'Basic dXNlcjpwYXNz' })).toBe('none');
    expect(await result(source, { authorization: 'Bearerish abc' })).toBe('none');
    expect(await result(source, { 'x-token': await token('a') })).toBe('none');
  });

  it('is strict about the Authorization value', async () => {
    const source = compile({});
    const t = await token('a');
    const malformed = [`Bearer ${t}, Bearer ${t}`, `Bearer ${t},Bearer ${t}`, `Basic abc, Bearer ${t}`, `Bearer ${t} ${t}`, 'Bearer', 'bearer   ', `Bearer\t${t}`, 'Bearer a"b.c.d', 'Bearer ab;c.d.e'];
    for (const value of malformed) expect(await result(source, { authorization: value }), value.slice(0, 24)).toBe('malformed_credential');
  });

  it('decides what a non-JWT Bearer value is: the next source\'s (apiKey in the chain) or invalid_token', async () => {
    const withApiKey = compile({}, [{ apiKey: { bearerPrefixes: ['flotac_api_key_live_'] } }]);
    const alone = compile({});
    const apiKey = `flotac_api_key_live_${'ab'.repeat(32)}`;
    expect(await result(withApiKey, { authorization: `Bearer ${apiKey}` })).toBe('none');
    expect(await result(alone, { authorization: `Bearer ${apiKey}` })).toBe('invalid_token');
    expect(await result(compile({ nonJwtBearer: 'pass' }), { authorization: `Bearer ${apiKey}` })).toBe('none');
    expect(await result(compile({ nonJwtBearer: 'reject' }, [{ apiKey: { bearerPrefixes: ['ak_'] } }]), { authorization: 'Bearer ak_123' })).toBe('invalid_token');
    // Two Authorization headers stay malformed whoever would own them.
    expect(await result(withApiKey, { authorization: `Bearer ${apiKey}, Bearer ${apiKey}` })).toBe('malformed_credential');
    // A JWT-shaped value is always this source's, even with an apiKey source behind it.
    expect(await result(withApiKey, { authorization: 'Bearer abc.def.ghi' })).toBe('invalid_token');
  });

  it('reads a dedicated header as the raw token; a repeated header is malformed, garbage invalid', async () => {
    const source = compile({ from: [{ header: 'X-Token' }] });
    const t = await token('h');
    expect(await result(source, { 'x-token': t })).toBe('tenant:h');
    expect(await result(source, { 'x-token': `${t},${t}` })).toBe('malformed_credential');
    expect(await result(source, { 'x-token': 'garbage' })).toBe('invalid_token');
    expect(await result(source, { authorization: `Bearer ${t}` })).toBe('none');
  });

  it('reads a cookie; the same cookie twice is malformed', async () => {
    const source = compile({ from: [{ cookie: 'sb-access-token' }] });
    const t = await token('c');
    expect(await result(source, { cookie: `sb-access-token=${t}` })).toBe('tenant:c');
    expect(await result(source, { cookie: `a=1; sb-access-token="${t}"; b=2` })).toBe('tenant:c');
    expect(await result(source, { cookie: `xsb-access-token=${t}; sb-access-token-2=${t}` })).toBe('none');
    expect(await result(source, { cookie: `sb-access-token=${t}; sb-access-token=${await token('evil')}` })).toBe('malformed_credential');
    expect(await result(source, { cookie: 'sb-access-token=not-a-jwt' })).toBe('invalid_token');
  });

  it('tries places in order: the first one holding a token decides', async () => {
    const source = compile({ from: [{ header: 'authorization', scheme: 'Bearer' }, { cookie: 'session' }] });
    const [header, cookie] = await Promise.all([token('from-header'), token('from-cookie')]);
    expect(await result(source, { authorization: `Bearer ${header}`, cookie: `session=${cookie}` })).toBe('tenant:from-header');
    expect(await result(source, { authorization: 'Basic dXNlcjpwYXNz', cookie: `session=${cookie}` })).toBe('tenant:from-cookie');
    // A bad token in the first place is not overruled by a good one further down.
    expect(await result(source, { authorization: 'Bearer x.y.z', cookie: `session=${cookie}` })).toBe('invalid_token');
  });

  it('forwards the token by default; forward: false strips the header it came in, also on cache hits', async () => {
    const t = await token('f');
    const forwarded = await identify(compile({}), request({ headers: { authorization: `Bearer ${t}` } }));
    expect(forwarded.kind === 'principal' && forwarded.removeHeaders).toBeUndefined();

    const stripping = compile({ forward: false, from: [{ header: 'authorization', scheme: 'Bearer' }, { header: 'x-token' }, { cookie: 'sb' }] });
    const viaAuth = await identify(stripping, request({ headers: { authorization: `Bearer ${t}` } }));
    expect(viaAuth.kind === 'principal' && viaAuth.removeHeaders).toEqual(['authorization']);
    const viaHeader = stripping.identify(request({ headers: { 'x-token': t } })); // cache hit
    expect(viaHeader).toMatchObject({ kind: 'principal', removeHeaders: ['x-token'] });
    const viaCookie = stripping.identify(request({ headers: { cookie: `sb=${t}` } }));
    expect(viaCookie).toMatchObject({ kind: 'principal', removeHeaders: ['cookie'] });
  });
});
