// RFC 7662 introspection against a real OpenID provider (npm oidc-provider) issuing OPAQUE access
// tokens: active, expired (at the provider, and by exp on Portcullis' clock), revoked, wrong
// audience, wrong client credentials (503, never an allow), basic and post client
// authentication, claims mapped like a JWT issuer's, JWT-shaped bearers left to the jwt source.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider, { errors } from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { decide, header, reasonOf } from './helpers.js';

const API = 'https://orders.commerce.test';
const OTHER_API = 'https://billing.commerce.test';

const callers = [
  { id: 'acme-backend', secret: 'acme-secret-0123456789abcdef0123456789', tenant: 'org-acme' },
  { id: 'globex-backend', secret: 'globex-secret-0123456789abcdef01234567', tenant: 'org-globex' },
];
const introspectors = [
  { id: 'portcullis-basic', secret: 'portcullis-basic-secret-0123456789abcdef', method: 'client_secret_basic' as const },
  { id: 'portcullis-post', secret: 'portcullis-post-secret-0123456789abcdef0', method: 'client_secret_post' as const },
];

describe('introspection source against oidc-provider', () => {
  let server: Server;
  let issuer: string;
  let introspections = 0;

  async function accessToken(caller: (typeof callers)[number], resource = API, scope = 'orders:read orders:write'): Promise<string> {
    const response = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${caller.id}:${caller.secret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope }),
    });
    const body = (await response.json()) as { access_token?: string; error?: string };
    if (!body.access_token) throw new Error(`token request failed: ${body.error}`);
    return body.access_token;
  }

  async function revoke(caller: (typeof callers)[number], token: string): Promise<void> {
    const response = await fetch(`${issuer}/token/revocation`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${caller.id}:${caller.secret}`).toString('base64')}` },
      body: new URLSearchParams({ token }),
    });
    if (!response.ok) throw new Error(`revocation failed: ${response.status}`);
  }

  beforeAll(async () => {
    server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const provider = new Provider(issuer, {
      clients: [
        ...callers.map((c) => ({ client_id: c.id, client_secret: c.secret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [], scope: 'orders:read orders:write' })),
        ...introspectors.map((c) => ({ client_id: c.id, client_secret: c.secret, grant_types: [], redirect_uris: [], response_types: [], token_endpoint_auth_method: c.method })),
      ],
      scopes: ['orders:read', 'orders:write'],
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        introspection: { enabled: true },
        revocation: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => API,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx, resource) => {
            if (resource !== API && resource !== OTHER_API) throw new errors.InvalidTarget();
            const ttl = (_ctx.oidc.params?.scope as string | undefined)?.includes('short') ? 1 : 3600;
            return { scope: 'orders:read orders:write short', audience: resource, accessTokenFormat: 'opaque', accessTokenTTL: ttl };
          },
        },
      },
      extraTokenClaims: (_ctx, token) => {
        const caller = callers.find((c) => c.id === token.clientId);
        return caller ? { org_id: caller.tenant } : undefined;
      },
    });
    const callback = provider.callback();
    server.on('request', (req, res) => {
      if (req.url?.startsWith('/token/introspection')) introspections++;
      callback(req, res);
    });
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  function policy(introspector = introspectors[0]!, secret = introspector.secret): string {
    return `
identity:
  - introspection:
      endpoint: ${issuer}/token/introspection
      clientId: ${introspector.id}
      clientSecret: "${secret}"
      clientAuth: ${introspector.method === 'client_secret_post' ? 'post' : 'basic'}
      audiences: ["${API}"]
      map: { tenant: org_id }
      timeout: 2s
routes:
  - { match: { pathPrefix: /v1/orders }, require: { allOf: ["orders:read"] } }
`;
  }

  const withToken = (token: string) => request({ path: '/v1/orders', headers: { authorization: `Bearer ${token}` } });

  for (const introspector of introspectors) {
    it(`accepts an active opaque token, mapping tenant, subject and scope (${introspector.method})`, async () => {
      const compiled = compileYaml(policy(introspector), testRuntime());
      for (const caller of callers) {
        const token = await accessToken(caller);
        expect(token.split('.').length).toBe(1); // opaque, not a JWT
        const decision = await decide(compiled, withToken(token));
        expect(reasonOf(decision)).toBe('allow');
        expect(header(decision, 'x-tenant-id')).toBe(caller.tenant);
        expect(header(decision, 'x-auth-subject')).toBe(caller.id); // no sub in client credentials: client_id
        expect(header(decision, 'x-auth-scopes')).toBe('orders:read orders:write');
        expect(header(decision, 'x-auth-method')).toBe('introspection');
      }
    });
  }

  it('answers a repeated token from the cache, without introspecting again', async () => {
    const compiled = compileYaml(policy(), testRuntime());
    const token = await accessToken(callers[0]!);
    await decide(compiled, withToken(token));
    const before = introspections;
    for (let i = 0; i < 50; i++) expect(reasonOf(await decide(compiled, withToken(token)))).toBe('allow');
    expect(introspections).toBe(before);
  });

  it('refuses a token the provider says is inactive: unknown, revoked, expired (401 token_inactive)', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(), runtime);
    expect(reasonOf(await decide(compiled, withToken('not-a-token-the-provider-knows')))).toBe('token_inactive');

    const revoked = await accessToken(callers[0]!);
    expect(reasonOf(await decide(compiled, withToken(revoked)))).toBe('allow');
    await revoke(callers[0]!, revoked);
    expect(reasonOf(await decide(compileYaml(policy(), testRuntime()), withToken(revoked)))).toBe('token_inactive');
    runtime.clock.advance(30_001); // at the latest one positive TTL later
    const decision = await decide(compiled, withToken(revoked));
    expect(reasonOf(decision), decision.allowed ? '' : decision.detail).toBe('token_inactive');
    expect(decision.allowed ? 0 : decision.status).toBe(401);

    const short = await accessToken(callers[0]!, API, 'orders:read short');
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // the provider's own 1 s TTL passes
    expect(reasonOf(await decide(compileYaml(policy(), testRuntime()), withToken(short)))).toBe('token_inactive');
  });

  it('honours exp on its own clock: a cached token is not used past exp', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(), runtime);
    const token = await accessToken(callers[1]!);
    expect(reasonOf(await decide(compiled, withToken(token)))).toBe('allow');
    runtime.clock.advance(3_601_000);
    expect(reasonOf(await decide(compiled, withToken(token)))).toBe('token_expired');
  });

  it('refuses a token for another audience (invalid_audience)', async () => {
    const compiled = compileYaml(policy(), testRuntime());
    const token = await accessToken(callers[0]!, OTHER_API);
    expect(reasonOf(await decide(compiled, withToken(token)))).toBe('invalid_audience');
  });

  it('answers 503 lookup_unavailable, never an allow, when its own client credentials are wrong', async () => {
    const compiled = compileYaml(policy(introspectors[0], 'wrong-secret-0123456789abcdef0123456789'), testRuntime());
    const token = await accessToken(callers[0]!);
    const decision = await decide(compiled, withToken(token));
    expect(reasonOf(decision)).toBe('lookup_unavailable');
    expect(decision.allowed ? 0 : decision.status).toBe(503);
  });

  it('gets opaque tokens past a jwt source earlier in the chain (JWTs stay with the jwt source)', async () => {
    const yaml = policy().replace(
      'identity:\n',
      'issuers: { app: { secret: "0123456789abcdef0123456789abcdef", audiences: [x] } }\nidentity:\n  - jwt: { issuers: [app] }\n',
    );
    const compiled = compileYaml(yaml, testRuntime());
    const token = await accessToken(callers[0]!);
    expect(header(await decide(compiled, withToken(token)), 'x-tenant-id')).toBe('org-acme');
    expect(reasonOf(await decide(compiled, withToken('eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln')))).toBe('invalid_signature');
  });

  it('refuses a JWT-shaped token when no jwt source would take it (401, not a fall-through), without asking, and refuses two Authorization headers', async () => {
    const compiled = compileYaml(policy(), testRuntime());
    const before = introspections;
    const decision = await decide(compiled, withToken('eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln'));
    expect(reasonOf(decision)).toBe('invalid_token');
    expect(decision.allowed ? 0 : decision.status).toBe(401);
    expect(introspections).toBe(before);
    expect(reasonOf(await decide(compiled, request({ path: '/v1/orders', headers: { authorization: 'Bearer a, Bearer b' } })))).toBe('malformed_credential');
  });
});
