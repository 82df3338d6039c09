// Attacker review: node:http keeps only the first 2,000 header fields of a request by default and
// silently drops the rest, so a header placed after 2,000 fillers (well inside the head's byte
// limit) was invisible to rules while the upstream read it. Every field is now seen, up to the
// bound the gRPC transport has (MAX_HEADER_ENTRIES); a request over it is refused.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_HEADER_ENTRIES } from '../../../src/transport/grpc/decode.js';
import { closeAgent, rawRequest, shapeRequest, SHAPES, type HttpAnswer, type ShapeName } from '../../support/authz-http.js';
import { startTestServer, type TestServer } from '../../support/server.js';

const POLICY = `
server: { authzHttp: { port: 0, maxHeaderBytes: 1048576 } }
routes:
  - name: reports
    match: { pathPrefix: /v1/reports }
    public: true
    rules:
      - when: '"x-on-behalf-of" in request.headers'
        deny: { status: 403, reason: impersonation_forbidden }
`;

let dir: string;
let server: TestServer;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'portcullis-header-count-'));
  writeFileSync(path.join(dir, 'policy.yaml'), POLICY);
  server = await startTestServer(path.join(dir, 'policy.yaml'), {}, {});
});

afterAll(async () => {
  closeAgent();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The proxy's request for GET /v1/reports: its own headers first, then `count` fillers, then `last`. */
function ask(shape: ShapeName, count: number, last: Record<string, string> = {}): Promise<HttpAnswer> {
  const proxied = shapeRequest(shape, { path: '/v1/reports' });
  const headers: Record<string, string | string[]> = { ...proxied.headers };
  for (let i = 0; i < count; i++) headers[`x-f${i}`] = '1';
  return rawRequest(server.server.authzHttpPort!, proxied.method, proxied.target, { ...headers, ...last });
}

describe('every header field of an HTTP-mode request is judged', () => {
  it.each(SHAPES)('%s: a header after 2,100 others still reaches the rules', async (shape) => {
    expect((await ask(shape, 2_100)).status).toBe(200);
    const late = await ask(shape, 2_100, { 'x-on-behalf-of': 'victim' });
    expect(late.status).toBe(403);
    expect(late.headers['x-portcullis-status'] ?? JSON.parse(late.body).reason).toMatch(/403|impersonation_forbidden/);
  });

  it('a request over the bound is refused, not judged on a part of it', async () => {
    const answer = await ask('forward-auth', MAX_HEADER_ENTRIES + 10);
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toMatchObject({ reason: 'invalid_proxy_request' });
  });
});
