// request.headers fed by both of Envoy's encodings, over the real gRPC server: the `headers` map and
// `header_map` with raw_value bytes (encode_raw_headers), including a repeated header, which both
// encodings present joined with ",".

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { headerOf, httpStatusNumber } from '../support/grpc-client.js';
import { startTestServer, type TestServer } from '../support/server.js';

const SECRET = 'grpc-expression-tests-secret-0123';
const POLICY = `
routes:
  - match: { path: "/v1/{org}/reports" }
    identity:
      - sharedSecret: { header: x-hook-secret, secret: "${SECRET}" }
        compute: { tenant: 'request.headers["x-org"]', subject: '"client:" + request.headers["x-client"]' }
    rules:
      - unless: request.params.org == auth.tenant
        deny: { status: 403, reason: org_mismatch }
      - when: '"x-debug" in request.headers'
        deny: { status: 400, reason: debug_not_allowed }
`;

describe('request.headers over gRPC, both header encodings', () => {
  let dir: string;
  let server: TestServer;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'pc-expr-grpc-'));
    writeFileSync(path.join(dir, 'policy.yaml'), POLICY);
    server = await startTestServer(path.join(dir, 'policy.yaml'));
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const raw of [false, true]) {
    it(raw ? 'header_map (raw_value bytes)' : 'headers map', async () => {
      const base = { 'x-hook-secret': SECRET, 'x-org': 'acme', 'x-client': 'web' };
      const ok = await server.client.check({ path: '/v1/acme/reports', headers: base, raw });
      expect(ok.status?.code ?? 0).toBe(0);
      expect(headerOf(ok.ok_response?.headers, 'x-tenant-id')).toBe('acme');
      expect(headerOf(ok.ok_response?.headers, 'x-auth-subject')).toBe('client:web');

      const other = await server.client.check({ path: '/v1/globex/reports', headers: base, raw });
      expect(httpStatusNumber(other.denied_response?.status?.code)).toBe(403);
      expect(JSON.parse(other.denied_response!.body!)).toMatchObject({ reason: 'org_mismatch' });

      const debug = await server.client.check({ path: '/v1/acme/reports', headers: { ...base, 'x-debug': '1' }, raw });
      expect(httpStatusNumber(debug.denied_response?.status?.code)).toBe(400);
      expect(debug.status?.code).toBe(3);

      const noOrg = await server.client.check({ path: '/v1/acme/reports', headers: { 'x-hook-secret': SECRET, 'x-client': 'web' }, raw });
      expect(httpStatusNumber(noOrg.denied_response?.status?.code)).toBe(401);
      expect(JSON.parse(noOrg.denied_response!.body!)).toMatchObject({ reason: 'identity_error' });
    });
  }

  it('a repeated header is joined with "," in both encodings', async () => {
    const headers = { 'x-hook-secret': SECRET, 'x-org': 'acme' };
    const viaMap = await server.client.check({ path: '/v1/acme/reports', headers: { ...headers, 'x-client': 'web,cli' } });
    const viaRaw = await server.client.check({ path: '/v1/acme/reports', headers, raw: true, rawHeaders: [['x-client', 'web'], ['x-client', 'cli']] });
    for (const response of [viaMap, viaRaw]) expect(headerOf(response.ok_response?.headers, 'x-auth-subject')).toBe('client:web,cli');
  });
});
