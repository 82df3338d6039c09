// Review of issue 13 §1: the decoder cut the path at a "#" ("/health#/../v1/admin" became
// "/health") and the request was judged — and allowed — as the public /health route. Envoy strips
// fragments by default, so a "#" that reaches Portcullis means the upstream gets it too, and
// upstreams disagree on what it means (WSGI keeps it in PATH_INFO, Node's URL parser cuts it).
// Normalising and then allowing is fail-open: the path is judged as sent, and "#" is not a path
// character, so it is refused (400 invalid_path) in every mode.
import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import { decodeCheckRequest } from '../../src/transport/grpc/decode.js';
import { CheckClient, checkRequestType } from '../support/grpc-client.js';
import { compileYaml } from '../support/runtime.js';

const SECRET = 'admin-secret-long-enough-1234';
const policyFor = (mode: string) =>
  compileYaml(`
paths: { nonCanonical: ${mode} }
identity:
  - sharedSecret: { header: x-admin-secret, secret: "${SECRET}", tenant: ops, scopes: [admin] }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: admin, match: { pathPrefix: /v1/admin }, require: { anyOf: [admin] } }
  - { name: everything, match: { pathPrefix: / }, require: { anyOf: [admin] } }
`);

function decoded(path: string) {
  const message = CheckClient.requestMessage({ path });
  return decodeCheckRequest(Buffer.from(checkRequestType.encode(checkRequestType.fromObject(message)).finish()));
}

describe('a "#" in the path field', () => {
  it.each(['/health#/../v1/admin', '/health#', '/health#x', '/v1/admin#', '/health%23#/../v1/admin'])('%s is refused in every mode', async (path) => {
    for (const mode of ['refuse', 'strictest']) {
      const d = await authorize(policyFor(mode), decoded(path));
      expect({ mode, d }).toMatchObject({ mode, d: { allowed: false, status: 400, reason: 'invalid_path' } });
    }
  });

  it('a fragment after the query only ends the query', async () => {
    const request = decoded('/health?a=1#/../v1/admin');
    expect(request).toMatchObject({ path: '/health', query: 'a=1' });
    expect(await authorize(policyFor('refuse'), request)).toMatchObject({ allowed: true, route: 'health' });
  });
});
