// A bad credential is a 401; it never falls through to a weaker source (README "Caller
// resolution"). Attacker review: a Bearer value that is not a JWT was passed on by the jwt source
// whenever the chain had an API key or introspection source, even one that would never claim it,
// so `Authorization: Bearer garbage` on a storefront Host was allowed as the Host's caller; and an
// introspection source without a jwt source passed JWT-shaped values on the same way.
import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import type { Decision } from '../../src/types.js';
import { request } from '../support/request.js';
import { compileYaml } from '../support/runtime.js';

const HOST = `  - host: { domains: { shop.example.com: { tenant: shop, scopes: [storefront] } } }`;
const ISSUERS = `issuers: { app: { secret: "0123456789abcdef0123456789abcdef", audiences: [api] } }`;
const KEYS = `keyStore: { file: { path: examples/keys/quickstart.yaml } }`;
const ROUTES = `routes:\n  - { match: { pathPrefix: /v1/ }, require: { allOf: [storefront] } }`;

const check = (yaml: string, authorization?: string): Promise<Decision> =>
  Promise.resolve(authorize(compileYaml(yaml), request({ host: 'shop.example.com', path: '/v1/products', headers: authorization === undefined ? {} : { authorization } })));

describe('a Bearer value no source of the chain claims', () => {
  const chain = (jwtOptions = '') => `${ISSUERS}\n${KEYS}\nidentity:\n  - jwt: { issuers: [app]${jwtOptions} }\n  - apiKey: { headers: [x-api-key], bearerPrefixes: [pc_demo_] }\n${HOST}\n${ROUTES}\n`;

  it('is a 401 invalid_token, not the Host caller', async () => {
    expect(await check(chain())).toMatchObject({ allowed: true, principal: { method: 'host', tenant: 'shop' } });
    expect(await check(chain(), 'Bearer not-a-real-token')).toMatchObject({ allowed: false, status: 401, reason: 'invalid_token' });
  });

  it('goes on to the API key source when it carries that source\'s prefix', async () => {
    expect(await check(chain(), 'Bearer pc_demo_unknown0000000000')).toMatchObject({ allowed: false, status: 401, reason: 'invalid_api_key' });
  });

  it('goes on when the policy says nonJwtBearer: pass', async () => {
    expect(await check(chain(', nonJwtBearer: pass'), 'Bearer not-a-real-token')).toMatchObject({ allowed: true, principal: { method: 'host' } });
  });
});

describe('a JWT-shaped Bearer value in a chain with introspection but no jwt source', () => {
  const yaml = `identity:\n  - introspection: { endpoint: "http://127.0.0.1:9/introspect", clientId: c, clientSecret: s }\n${HOST}\n${ROUTES}\n`;

  it('is a 401 invalid_token, without asking the provider, not the Host caller', async () => {
    expect(await check(yaml)).toMatchObject({ allowed: true, principal: { method: 'host' } });
    expect(await check(yaml, 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln')).toMatchObject({ allowed: false, status: 401, reason: 'invalid_token' });
  });
});

describe('sources that take the whole Authorization value still get a non-JWT Bearer (review)', () => {
  it('a shared secret on Authorization after a jwt source', async () => {
    const yaml = `${ISSUERS}\nidentity:\n  - jwt: { issuers: [app] }\n  - sharedSecret: { header: authorization, secret: "Bearer whsec_0123456789abcdef", tenant: ops, scopes: [storefront] }\n${HOST}\n${ROUTES}\n`;
    expect(await check(yaml, 'Bearer whsec_0123456789abcdef')).toMatchObject({ allowed: true, principal: { method: 'shared-secret', tenant: 'ops' } });
    expect(await check(yaml, 'Bearer whsec_wrong')).toMatchObject({ allowed: false, status: 401 });
  });

  it('introspection next to a jwt source that reads only a cookie: a JWT-shaped Bearer is not passed on to the Host caller', async () => {
    const yaml = `${ISSUERS}\nidentity:\n  - jwt: { issuers: [app], from: [{ cookie: sess }] }\n  - introspection: { endpoint: "http://127.0.0.1:9/introspect", clientId: c, clientSecret: s }\n${HOST}\n${ROUTES}\n`;
    expect(await check(yaml, 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln')).toMatchObject({ allowed: false, status: 401, reason: 'invalid_token' });
  });
});

describe('per place: a value goes on only to a source reading the place it was found in (review)', () => {
  const check2 = (yaml: string, headers: Record<string, string>): Promise<Decision> =>
    Promise.resolve(authorize(compileYaml(yaml), request({ host: 'shop.example.com', path: '/v1/products', headers })));
  const INTROSPECTION = `  - introspection: { endpoint: "http://127.0.0.1:9/introspect", clientId: c, clientSecret: s }`;

  it('a jwt source on another header or scheme: introspection and bearerPrefixes do not read it', async () => {
    const xToken = (next: string) => `${ISSUERS}\n${KEYS}\nidentity:\n  - jwt: { issuers: [app], from: [{ header: x-token, scheme: Token }] }\n${next}\n${HOST}\n${ROUTES}\n`;
    expect(await check2(xToken(INTROSPECTION), { 'x-token': 'Token garbage' })).toMatchObject({ allowed: false, status: 401, reason: 'invalid_token' });
    expect(await check2(xToken('  - apiKey: { headers: [x-api-key], bearerPrefixes: [pc_demo_] }'), { 'x-token': 'Token pc_demo_garbage' })).toMatchObject({ allowed: false, status: 401, reason: 'invalid_token' });
    const jwtScheme = `${ISSUERS}\nidentity:\n  - jwt: { issuers: [app], from: [{ header: authorization, scheme: JWT }] }\n${INTROSPECTION}\n${HOST}\n${ROUTES}\n`;
    expect(await check2(jwtScheme, { authorization: 'JWT garbage' })).toMatchObject({ allowed: false, status: 401, reason: 'invalid_token' });
  });

  it('a source taking that whole header still gets it', async () => {
    const yaml = `${ISSUERS}\n${KEYS}\nidentity:\n  - jwt: { issuers: [app], from: [{ header: x-token, scheme: Token }] }\n  - apiKey: { headers: [x-token] }\n${HOST}\n${ROUTES}\n`;
    expect(await check2(yaml, { 'x-token': 'Token garbage' })).toMatchObject({ allowed: false, status: 401, reason: 'invalid_api_key' });
  });
});
