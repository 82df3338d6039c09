// source.principal (4) and source.certificate (5) of AttributeContext.Peer, Envoy's numbers
// (api/envoy/service/auth/v3/attribute_context.proto): decoded into RequestAttributes.peer, and
// only from the source peer, never the destination.
import { describe, expect, it } from 'vitest';
import { decodeCheckRequest } from '../../src/transport/grpc/decode.js';
import { checkRequestType, CheckClient } from '../support/grpc-client.js';

const bytes = (message: Record<string, unknown>) => Buffer.from(checkRequestType.encode(checkRequestType.fromObject(message)).finish());

describe('decodeCheckRequest: the source peer', () => {
  const cert = encodeURIComponent('-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n');

  it.each([false, true])('reads principal and certificate, whatever the header encoding (raw: %s)', (raw) => {
    const r = decodeCheckRequest(bytes(CheckClient.requestMessage({ raw, principal: 'spiffe://cluster.local/ns/a/sa/b', certificate: cert })));
    expect(r.peer?.principal).toBe('spiffe://cluster.local/ns/a/sa/b');
    expect(r.peer?.certificate).toBe(cert);
    expect(r.sourceAddress).toBe('198.51.100.10');
  });

  it("has no peer when Envoy sent neither field; the destination's principal is never the caller's", () => {
    const r = decodeCheckRequest(bytes(CheckClient.requestMessage({})));
    expect(r.peer).toBeUndefined();
    const onlyDestination = decodeCheckRequest(bytes({ attributes: { destination: { principal: 'spiffe://x/ns/d/sa/d' }, request: { http: { path: '/' } } } }));
    expect(onlyDestination.peer).toBeUndefined();
  });

  it('a certificate alone leaves the principal empty', () => {
    const r = decodeCheckRequest(bytes({ attributes: { source: { certificate: cert }, request: { http: { path: '/' } } } }));
    expect(r.peer?.principal).toBe('');
    expect(r.peer?.certificate).toBe(cert);
  });
});
