// examples/mesh-service-to-service.yaml: in-mesh callers identified by their SPIFFE ID (peer first
// in the chain), and the identity token an upstream verifies, as examples/mesh/verify-identity.mjs
// does, against the policy's published keys.
import { createLocalJWKSet, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { allowed, denied, readExample, TEST_ENV, upstream } from './helpers.js';

describe('examples/mesh-service-to-service.yaml', () => {
  // offline: the external callers' JWKS is not fetched; these cases are all in-mesh callers.
  const runtime = testRuntime({ env: { ...TEST_ENV }, offline: true });
  const policy = compileYaml(readExample('mesh-service-to-service.yaml'), runtime);
  const from = (principal: string | undefined, path: string, headers: Record<string, string> = {}) =>
    authorize(policy, { ...request({ path, headers }), peer: principal === undefined ? undefined : { principal, certificate: '' } });
  const verify = (token: string, audience: string) =>
    jwtVerify(token, createLocalJWKSet(JSON.parse(policy.identityToken!.keyring.current.jwksJson)), {
      issuer: 'https://portcullis.portcullis.svc.cluster.local',
      audience,
      typ: 'portcullis-identity+jwt',
      currentDate: new Date(runtime.clock.now()),
    });

  it('a mesh workload gets its namespace as tenant, and an identity token for the orders API', async () => {
    const d = allowed(await from('spiffe://cluster.local/ns/shipping/sa/tracker', '/v1/orders/42'));
    expect(upstream(d)).toMatchObject({ 'x-tenant-id': 'shipping', 'x-auth-subject': 'shipping/tracker', 'x-auth-method': 'peer', 'x-auth-scopes': 'orders:read' });
    const { payload } = await verify(upstream(d)['x-portcullis-identity']!, 'orders-api');
    expect(payload).toMatchObject({ sub: 'shipping/tracker', tenant: 'shipping', scopes: ['orders:read'], method: 'peer' });
  });

  it('payments: only the payments workload, with a token for the payments API', async () => {
    const d = allowed(await from('spiffe://cluster.local/ns/checkout/sa/payments', '/v1/payments/charge'));
    expect((await verify(upstream(d)['x-portcullis-identity']!, 'payments-api')).payload.sub).toBe('payments');
    expect(denied(await from('spiffe://cluster.local/ns/shipping/sa/tracker', '/v1/payments/charge')).reason).toBe('insufficient_scope');
  });

  it('the ingress gateway is not a caller: its traffic needs the outside caller\'s JWT (attacker review)', async () => {
    for (const gateway of ['spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account', 'spiffe://cluster.local/ns/istio-ingress/sa/istio-ingress']) {
      expect(denied(await from(gateway, '/v1/orders/42')).reason).toBe('missing_credential');
      expect(denied(await from(gateway, '/v1/orders/42', { authorization: 'Bearer garbage.x.y' })).status).toBe(401);
    }
  });

  it('is refused at load without the statement that only the proxies can call Check (a token would be signed for any claimed workload)', () => {
    const unstated = readExample('mesh-service-to-service.yaml').replace('  checkCallersAreTheProxies: true\n', '');
    expect(() => compileYaml(unstated, testRuntime({ env: { ...TEST_ENV }, offline: true }))).toThrow(/checkCallersAreTheProxies/);
  });

  it('no mTLS identity and no token: 401; a client-sent identity token never reaches the upstream', async () => {
    expect(denied(await from(undefined, '/v1/orders/42', { 'x-forwarded-client-cert': 'URI=spiffe://cluster.local/ns/checkout/sa/payments' })).reason).toBe('missing_credential');
    expect(allowed(await from(undefined, '/healthz', { 'x-portcullis-identity': 'forged' })).removeHeaders).toContain('x-portcullis-identity');
  });
});
