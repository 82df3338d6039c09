// A real OpenID provider (the npm package oidc-provider) in this process on 127.0.0.1, issuing
// client-credentials JWT access tokens for a resource indicator (the audience) with custom
// namespaced claims, as Auth0 does for seed 000. Keys come by OIDC discovery.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CredentialSource } from '../../src/identity/source.js';
import { isPromise } from '../../src/types.js';
import { testRuntime } from '../support/runtime.js';
import { bearer, compileReady, identify } from './helpers.js';

const API = 'https://inventory.atrope.test';
const TENANT_CLAIM = 'https://atrope.dev/claims/tenant_id';
const PERMISSIONS_CLAIM = 'https://atrope.dev/claims/permissions';

interface Client {
  readonly id: string;
  readonly secret: string;
  readonly tenant: string;
  readonly permissions: string[];
}

const clients: Client[] = [
  { id: 'acme-backend', secret: 'acme-secret-0123456789abcdef0123456789', tenant: '5f0c1c9e-acme', permissions: ['inventory:read', 'inventory:write'] },
  { id: 'globex-reporting', secret: 'globex-secret-0123456789abcdef01234567', tenant: '7d1e2f3a-globex', permissions: ['inventory:read'] },
];

describe('tokens from a real OpenID provider', () => {
  const runtime = testRuntime();
  let server: Server;
  let issuer: string;
  const requests = { jwks: 0, discovery: 0, other: 0 };
  let source: CredentialSource;

  async function accessToken(client: Client, resource = API): Promise<string> {
    const response = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope: 'read:stock' }),
    });
    const body = (await response.json()) as { access_token?: string; error?: string; error_description?: string };
    if (!body.access_token) throw new Error(`token request failed: ${body.error}: ${body.error_description}`);
    return body.access_token;
  }

  beforeAll(async () => {
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    const signingJwk = { ...(await exportJWK(privateKey)), kid: 'provider-key-1', alg: 'RS256', use: 'sig' };

    server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    const provider = new Provider(issuer, {
      clients: clients.map((c) => ({
        client_id: c.id,
        client_secret: c.secret,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        scope: 'read:stock',
      })),
      jwks: { keys: [signingJwk] },
      scopes: ['read:stock'],
      ttl: { ClientCredentials: 3600 },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => API,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx, resourceIndicator) => {
            if (resourceIndicator !== API && resourceIndicator !== 'https://billing.atrope.test') throw new errors.InvalidTarget();
            return { scope: 'read:stock', audience: resourceIndicator, accessTokenFormat: 'jwt', accessTokenTTL: 3600, jwt: { sign: { alg: 'RS256' } } };
          },
        },
      },
      // Auth0-style custom claims under a namespace (seed 000).
      extraTokenClaims: (_ctx, token) => {
        const client = clients.find((c) => c.id === token.clientId);
        return client ? { [TENANT_CLAIM]: client.tenant, [PERMISSIONS_CLAIM]: client.permissions } : undefined;
      },
    });
    const callback = provider.callback();
    server.on('request', (req, res) => {
      if (req.url?.startsWith('/jwks')) requests.jwks++;
      else if (req.url?.startsWith('/.well-known/openid-configuration')) requests.discovery++;
      else requests.other++;
      callback(req, res);
    });

    source = await compileReady(
      {
        identity: [{ jwt: { issuers: ['atrope'] } }],
        issuers: {
          atrope: {
            issuer,
            discovery: true,
            audiences: [API],
            algorithms: ['RS256'],
            claims: { tenant: TENANT_CLAIM, scopes: [PERMISSIONS_CLAIM] },
          },
        },
      },
      runtime,
    );
    // The provider stamps iat from the real clock: line the manual clock up with it after a setup
    // that may take seconds on a loaded machine.
    runtime.clock.set(Date.now());
  });

  afterAll(async () => {
    await runtime.resources.closeAll();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('discovers the keys once at start', () => {
    expect(requests.discovery).toBe(1);
    expect(requests.jwks).toBe(1);
  });

  it('maps the namespaced tenant and permission claims of each client', async () => {
    for (const client of clients) {
      const result = await identify(source, bearer(await accessToken(client)));
      expect(result.kind).toBe('principal');
      if (result.kind !== 'principal') continue;
      expect(result.principal).toMatchObject({ method: 'jwt', issuer: 'atrope', tenant: client.tenant, subject: client.id, scopes: client.permissions });
      expect(result.principal.expiresAt).toBeGreaterThan(runtime.clock.now() / 1000);
      expect(result.removeHeaders).toBeUndefined(); // forwarded by default
    }
  });

  it('answers a repeated token synchronously from the cache, without any request to the provider', async () => {
    const token = await accessToken(clients[0]!);
    const before = { ...requests };
    await source.identify(bearer(token));
    for (let i = 0; i < 100; i++) {
      const again = source.identify(bearer(token));
      expect(isPromise(again)).toBe(false);
      expect(again).toMatchObject({ kind: 'principal', principal: { tenant: clients[0]!.tenant } });
    }
    expect(requests.jwks).toBe(before.jwks);
    expect(requests.discovery).toBe(before.discovery);
  });

  it('refuses a token of the same provider for another API (audience)', async () => {
    const result = await identify(source, bearer(await accessToken(clients[0]!, 'https://billing.atrope.test')));
    expect(result).toMatchObject({ kind: 'deny', denial: { reason: 'invalid_audience' } });
  });

  it('refuses the provider token once it expires, also from the cache', async () => {
    const token = await accessToken(clients[1]!);
    // The provider stamps exp from the real clock: line the manual clock up with it (the setup
    // above may take seconds on a loaded machine), then move it past exp + clockTolerance.
    const saved = runtime.clock.now();
    runtime.clock.set(Date.now());
    expect(await identify(source, bearer(token))).toMatchObject({ kind: 'principal' });
    runtime.clock.advance(3600_000 + 31_000);
    expect(source.identify(bearer(token))).toMatchObject({ kind: 'deny', denial: { reason: 'token_expired' } });
    runtime.clock.set(saved);
  });
});
