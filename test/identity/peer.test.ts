// The `peer` source end to end: CheckRequests from a real gRPC client carrying Envoy's
// source.principal (the verified client certificate's URI SAN), in both header encodings.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { headerOf, httpStatusNumber, type CheckInit, type CheckResponse } from '../support/grpc-client.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { compileYaml } from '../support/runtime.js';
import { request } from '../support/request.js';
import { authorize } from '../../src/pipeline/authorize.js';
import { isPromise, type Decision } from '../../src/types.js';

const KEY = 'pk_test_0123456789abcdef0123456789';

const POLICY = `
server: { decisionLog: none }
requireTenant: false
identity:
  - peer:
      principals:
        "spiffe://cluster.local/ns/checkout/sa/payments": { tenant: checkout, subject: payments, scopes: ["payments:write"] }
        "spiffe://cluster.local/ns/{namespace}/sa/{serviceAccount}": { tenant: "{namespace}", subject: "{namespace}/{serviceAccount}", scopes: [internal, "ns:{namespace}"] }
  - sharedSecret: { header: x-api-secret, secret: "${KEY}", tenant: partner, scopes: [internal] }
routes:
  - { name: internal, match: { pathPrefix: /internal/ }, require: { allOf: [internal] } }
  - { name: pay, match: { pathPrefix: /pay/ }, require: { allOf: ["payments:write"] }, credentials: [peer] }
  - name: strict
    match: { pathPrefix: /strict/ }
    identity:
      - peer:
          principals: { "spiffe://cluster.local/ns/{namespace}/sa/reporter": { tenant: "{namespace}" } }
          unmatched: deny
      - sharedSecret: { header: x-api-secret, secret: "${KEY}", tenant: partner }
  - name: behind-proxy
    match: { pathPrefix: /proxied/ }
    identity:
      - peer:
          principals: { "spiffe://cluster.local/ns/{namespace}/sa/{sa}": { tenant: "{namespace}", subject: "{sa}" } }
          forwardedClientCert: { header: x-forwarded-client-cert, proxySetsItAndStripsClientCopies: true }
default: deny
`;

let dir: string;
let running: TestServer;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'portcullis-peer-'));
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  running = await startTestServer(file);
});

afterAll(async () => {
  await running?.close();
  rmSync(dir, { recursive: true, force: true });
});

const upstream = (res: CheckResponse, name: string) => headerOf(res.ok_response?.headers, name);
const status = (res: CheckResponse) => (res.status?.code ? httpStatusNumber(res.denied_response?.status?.code) : 200);
const reasonOf = (res: CheckResponse) => (res.denied_response?.body ? (JSON.parse(res.denied_response.body) as { reason: string }).reason : undefined);

describe.each([false, true])('peer source (raw headers: %s)', (raw) => {
  const check = (init: CheckInit) => running.client.check({ raw, ...init });

  it('identifies an exact principal', async () => {
    const res = await check({ path: '/pay/charge', principal: 'spiffe://cluster.local/ns/checkout/sa/payments' });
    expect(status(res)).toBe(200);
    expect(upstream(res, 'x-tenant-id')).toBe('checkout');
    expect(upstream(res, 'x-auth-subject')).toBe('payments');
    expect(upstream(res, 'x-auth-scopes')).toBe('payments:write');
    expect(upstream(res, 'x-auth-method')).toBe('peer');
  });

  it('identifies a SPIFFE pattern, with values from its named segments', async () => {
    const res = await check({ path: '/internal/report', principal: 'spiffe://cluster.local/ns/billing/sa/invoicer' });
    expect(status(res)).toBe(200);
    expect(upstream(res, 'x-tenant-id')).toBe('billing');
    expect(upstream(res, 'x-auth-subject')).toBe('billing/invoicer');
    expect(upstream(res, 'x-auth-scopes')).toBe('internal ns:billing');
  });

  it('a pattern segment never spans "/" nor matches an empty segment', async () => {
    for (const principal of ['spiffe://cluster.local/ns/a/b/sa/c', 'spiffe://cluster.local/ns//sa/c', 'spiffe://cluster.local/ns/a/sa/c/extra', 'spiffe://other.domain/ns/a/sa/c']) {
      const res = await check({ path: '/internal/report', principal });
      expect([status(res), reasonOf(res)], principal).toEqual([401, 'missing_credential']);
    }
  });

  it('no principal: falls through to the next source', async () => {
    expect(reasonOf(await check({ path: '/internal/x' }))).toBe('missing_credential');
    const res = await check({ path: '/internal/x', headers: { 'x-api-secret': KEY } });
    expect(status(res)).toBe(200);
    expect(upstream(res, 'x-auth-method')).toBe('shared-secret');
  });

  it('a principal that matches nothing falls through by default, and denies where the policy says so', async () => {
    const other = 'spiffe://partner.example/workload/etl';
    const through = await check({ path: '/internal/x', principal: other, headers: { 'x-api-secret': KEY } });
    expect(upstream(through, 'x-auth-method')).toBe('shared-secret');
    const strict = await check({ path: '/strict/x', principal: other, headers: { 'x-api-secret': KEY } });
    expect([status(strict), reasonOf(strict)]).toEqual([403, 'peer_not_allowed']);
    const ok = await check({ path: '/strict/x', principal: 'spiffe://cluster.local/ns/finance/sa/reporter' });
    expect(upstream(ok, 'x-tenant-id')).toBe('finance');
  });

  it('a forged x-forwarded-client-cert is ignored', async () => {
    const xfcc = 'By=spiffe://cluster.local/ns/checkout/sa/payments;URI=spiffe://cluster.local/ns/checkout/sa/payments';
    const res = await check({ path: '/pay/charge', headers: { 'x-forwarded-client-cert': xfcc } });
    expect([status(res), reasonOf(res)]).toEqual([401, 'missing_credential']);
    // The caller is who mTLS says, whatever the header claims.
    const mixed = await check({ path: '/pay/charge', principal: 'spiffe://cluster.local/ns/shop/sa/web', headers: { 'x-forwarded-client-cert': xfcc } });
    expect([status(mixed), reasonOf(mixed)]).toEqual([403, 'insufficient_scope']);
  });
});

describe.each([false, true])('peer source from x-forwarded-client-cert, where the policy trusts it (raw headers: %s)', (raw) => {
  const check = (init: CheckInit) => running.client.check({ raw, ...init });
  const xfcc = (value: string) => ({ 'x-forwarded-client-cert': value });

  it("reads the URI of the proxy's own element (the last one)", async () => {
    const header = 'By=spiffe://cluster.local/ns/edge/sa/gw;URI=spiffe://cluster.local/ns/evil/sa/x,By=spiffe://cluster.local/ns/edge/sa/gw;Hash=abc;Subject="CN=a,O=b";URI=spiffe://cluster.local/ns/orders/sa/api;DNS=api.local';
    const res = await check({ path: '/proxied/x', headers: xfcc(header) });
    expect([upstream(res, 'x-tenant-id'), upstream(res, 'x-auth-subject')]).toEqual(['orders', 'api']);
  });

  it('handles quoted values with separators, and the attribute wins over the header', async () => {
    const res = await check({ path: '/proxied/x', headers: xfcc('Subject="CN=x;y,z";URI="spiffe://cluster.local/ns/q/sa/w"') });
    expect(upstream(res, 'x-tenant-id')).toBe('q');
    const both = await check({ path: '/proxied/x', principal: 'spiffe://cluster.local/ns/real/sa/svc', headers: xfcc('URI=spiffe://cluster.local/ns/q/sa/w') });
    expect(upstream(both, 'x-tenant-id')).toBe('real');
  });

  it('an element without URI, or a malformed header, identifies nobody', async () => {
    for (const header of ['By=spiffe://x;Hash=abc', 'URI="spiffe://cluster.local/ns/q/sa/w', '']) {
      expect(reasonOf(await check({ path: '/proxied/x', headers: xfcc(header) })), header).toBe('missing_credential');
    }
  });
});

describe('peer source on plain request attributes', () => {
  it('reads RequestAttributes.peer only, so a transport that fills nothing identifies nobody', () => {
    const policy = compileYaml(POLICY);
    const run = (extra: object): Decision => {
      const d = authorize(policy, { ...request({ path: '/internal/x' }), ...extra });
      if (isPromise(d)) throw new Error('expected a synchronous decision');
      return d;
    };
    expect(run({}).allowed).toBe(false);
    const d = run({ peer: { principal: 'spiffe://cluster.local/ns/ops/sa/cron', certificate: '' } });
    expect(d.allowed && d.principal?.tenant).toBe('ops');
  });
});
