// README's quickstart promise, checked against the real example policy over real gRPC:
// /health public, 401 elsewhere without a credential, the demo API key and the storefront Host
// accepted, a smuggled x-tenant-id never forwarded.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { CheckClient, headerOf, httpStatusNumber } from '../support/grpc-client.js';
import { startTestServer, type TestServer } from '../support/server.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DEMO_KEY = /#\s+(pc_demo_\w+)/.exec(readFileSync(path.join(ROOT, 'examples/keys/quickstart.yaml'), 'utf8'))![1]!;

let running: TestServer;
let server: RunningServer;
let client: CheckClient;

beforeAll(async () => {
  running = await startTestServer(path.join(ROOT, 'examples/portcullis.yaml'), {});
  server = running.server;
  client = running.client;
});

afterAll(async () => {
  await running?.close();
});

describe('quickstart (examples/portcullis.yaml)', () => {
  it('allows /health without credentials and strips a smuggled x-tenant-id', async () => {
    const r = await client.check({ path: '/health', headers: { 'x-tenant-id': 'evil' } });
    expect(r.http_response).toBe('ok_response');
    expect(r.ok_response!.headers_to_remove).toContain('x-tenant-id');
  });

  it('answers 401 with a JSON body on every other path without a credential', async () => {
    for (const p of ['/v1/products', '/v1/admin/users', '/anything/else']) {
      const r = await client.check({ path: p });
      expect(httpStatusNumber(r.denied_response!.status!.code)).toBe(401);
      expect(JSON.parse(r.denied_response!.body!)).toMatchObject({ code: 'UNAUTHORIZED', reason: 'missing_credential' });
    }
  });

  it('accepts the demo API key (header or Bearer), injects the tenant and strips the key', async () => {
    const presentations: Record<string, string>[] = [{ 'x-api-key': DEMO_KEY }, { authorization: `Bearer ${DEMO_KEY}` }];
    for (const headers of presentations) {
      const r = await client.check({ path: '/v1/admin/users', headers: { ...headers, 'x-tenant-id': 'evil' } });
      expect(r.http_response).toBe('ok_response');
      expect(headerOf(r.ok_response!.headers, 'x-tenant-id')).toBe('acme');
      expect(headerOf(r.ok_response!.headers, 'x-auth-method')).toBe('api-key');
      expect(r.ok_response!.headers_to_remove).toContain(Object.keys(headers)[0]);
    }
    const wrong = await client.check({ path: '/v1/products', headers: { 'x-api-key': DEMO_KEY.slice(0, -1) + (DEMO_KEY.endsWith('a') ? 'b' : 'a') } });
    expect(JSON.parse(wrong.denied_response!.body!).reason).toBe('invalid_api_key');
  });

  it('accepts the storefront Host on the catalog and refuses it on admin routes', async () => {
    const ok = await client.check({ path: '/v1/products/42', host: 'shop.example.com' });
    expect(headerOf(ok.ok_response!.headers, 'x-auth-scopes')).toBe('storefront');
    const no = await client.check({ path: '/v1/admin/users', host: 'shop.example.com' });
    expect(JSON.parse(no.denied_response!.body!).reason).toBe('credential_not_allowed');
  });
});
