// Issue 13 §6: credentials sent to a public route, and underscore variants of owned headers, never
// travel upstream. Unit level here (both header encodings through the real decoder); end to end in
// test/e2e/path-express.test.ts.
import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import { decodeCheckRequest } from '../../src/transport/grpc/decode.js';
import type { Decision } from '../../src/types.js';
import { CheckClient, checkRequestType } from '../support/grpc-client.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const SECRET = 'a-long-enough-shared-secret';

const policy = compileYaml(
  `
identity:
  - apiKey: { headers: [x-api-key], bearerPrefixes: [pc_live_] }
  - sharedSecret: { header: x-internal, secret: "${SECRET}", tenant: ops }
routes:
  - { name: health, match: { path: /health }, public: true }
  - name: hook
    match: { path: /hook }
    identity: [{ sharedSecret: { header: x-hook-secret, secret: "${SECRET}-hook", tenant: pay } }]
  - name: kept
    match: { path: /kept }
    identity: [{ sharedSecret: { header: x-kept-secret, secret: "${SECRET}-kept", tenant: pay, removeHeader: false } }]
  - { name: internal, match: { pathPrefix: /internal }, requireTenant: false }
`,
  testRuntime({ offline: true }),
);

function removals(d: Decision): readonly string[] {
  expect(d.allowed).toBe(true);
  return d.allowed ? d.removeHeaders : [];
}

describe('credentials are stripped on every allow (public routes included)', () => {
  it('API key headers and every source\'s secret header on a public route', async () => {
    const d = await authorize(policy, request({ path: '/health', headers: { 'x-api-key': 'pc_live_whatever', 'x-internal': 'x', 'x-hook-secret': 'y' } }));
    expect(removals(d)).toEqual(expect.arrayContaining(['x-api-key', 'x-internal', 'x-hook-secret']));
    expect(removals(d)).not.toContain('x-kept-secret');
    expect(removals(d)).not.toContain('authorization');
  });

  it('a route whose own source forwards its header keeps it', async () => {
    const d = await authorize(policy, request({ path: '/kept', headers: { 'x-kept-secret': `${SECRET}-kept`, 'x-hook-secret': 'z' } }));
    expect(removals(d)).not.toContain('x-kept-secret');
    expect(removals(d)).toContain('x-hook-secret');
  });

  it('an API key sent as Bearer to a public route; a JWT there is left alone', async () => {
    expect(removals(await authorize(policy, request({ path: '/health', headers: { authorization: 'Bearer pc_live_abc' } })))).toContain('authorization');
    expect(removals(await authorize(policy, request({ path: '/health', headers: { authorization: 'Bearer eyJhbGciOi.x.y' } })))).not.toContain('authorization');
  });

  it('on a protected route, credentials of the sources that did not decide are stripped too', async () => {
    const d = await authorize(policy, request({ path: '/internal/x', headers: { 'x-internal': SECRET, 'x-api-key-unrelated': '1', 'x-hook-secret': 'z' } }));
    expect(removals(d)).toEqual(expect.arrayContaining(['x-internal', 'x-api-key', 'x-hook-secret']));
  });
});

describe('underscore variants of owned headers (both header encodings)', () => {
  const VARIANTS = { x_tenant_id: 'victim', 'x-tenant_id': 'victim', x_auth_subject: 'root', 'x-auth_scopes': 'admin', x_auth_method: 'jwt', 'x_unrelated': 'keep' };

  for (const raw of [false, true]) {
    it(`${raw ? 'header_map (raw_value)' : 'headers map'}: removed on a public and on a protected allow`, async () => {
      for (const [path, headers] of [
        ['/health', VARIANTS],
        ['/internal/a', { ...VARIANTS, 'x-internal': SECRET }],
      ] as const) {
        const message = CheckClient.requestMessage({ path, headers, raw });
        const bytes = Buffer.from(checkRequestType.encode(checkRequestType.fromObject(message)).finish());
        const d = await authorize(policy, decodeCheckRequest(bytes));
        const removed = removals(d);
        for (const name of ['x_tenant_id', 'x-tenant_id', 'x_auth_subject', 'x-auth_scopes', 'x_auth_method']) expect(removed, name).toContain(name);
        expect(removed).not.toContain('x_unrelated');
      }
    });
  }

  it('a request without such names shares the per-combination removal list', async () => {
    const a = await authorize(policy, request({ path: '/health' }));
    const b = await authorize(policy, request({ path: '/health' }));
    expect(a.allowed && b.allowed && a.removeHeaders === b.removeHeaders).toBe(true);
  });
});
