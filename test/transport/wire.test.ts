// Decoder and encoder checked against protobufjs built from proto/ (an independent implementation
// of the same wire format).

import { describe, expect, it } from 'vitest';
import { decodeCheckRequest, normalizeHost, NO_HTTP_ATTRIBUTES } from '../../src/transport/grpc/decode.js';
import { encodeCheckResponse } from '../../src/transport/grpc/encode.js';
import { repeatedLatin1Of, WireError } from '../../src/transport/grpc/wire.js';
import { allowDecision, denyDecision } from '../../src/pipeline/decision.js';
import { checkRequestType, checkResponseType, CheckClient } from '../support/grpc-client.js';
import { compileYaml } from '../support/runtime.js';

function bytes(message: Record<string, unknown>): Buffer {
  return Buffer.from(checkRequestType.encode(checkRequestType.fromObject(message)).finish());
}

describe('decodeCheckRequest', () => {
  it('reads method, host, path/query, scheme, id, source address and headers', () => {
    const msg = CheckClient.requestMessage({
      method: 'post',
      path: '/v1/items/7?expand=lots&x=1',
      host: 'API.Example.com:8443',
      headers: { Authorization: 'Bearer abc', 'x-request-id': 'rid-1' },
      sourceAddress: '2001:db8::1',
      id: '7301',
    });
    const r = decodeCheckRequest(bytes(msg));
    expect(r.method).toBe('POST');
    expect(r.host).toBe('api.example.com:8443');
    expect(r.path).toBe('/v1/items/7');
    expect(r.query).toBe('expand=lots&x=1');
    expect(r.scheme).toBe('https');
    expect(r.requestId).toBe('rid-1');
    expect(r.sourceAddress).toBe('2001:db8::1');
    expect(r.headers.get('authorization')).toBe('Bearer abc');
    expect(r[NO_HTTP_ATTRIBUTES]).toBeUndefined();
  });

  it('reads header_map raw_value entries like headers and joins duplicates (cookies with "; ")', () => {
    const msg = CheckClient.requestMessage({
      raw: true,
      rawHeaders: [
        ['x-api-key', 'k1'],
        ['x-api-key', 'k2'],
        ['cookie', 'a=1'],
        ['cookie', 'b=2'],
        ['X-Upper', 'v'],
      ],
    });
    const r = decodeCheckRequest(bytes(msg));
    expect(r.headers.get('x-api-key')).toBe('k1,k2');
    expect(r.headers.get('cookie')).toBe('a=1; b=2');
    expect(r.headers.get('x-upper')).toBe('v');
    expect(r.headers.get(':authority')).toBe('api.example.com');
  });

  it('keeps invalid UTF-8 bytes distinct (latin1, injective) instead of replacing them', () => {
    const a = decodeCheckRequest(bytes(CheckClient.requestMessage({ raw: true, rawHeaders: [['x-v', Buffer.from([0xff])]] })));
    const b = decodeCheckRequest(bytes(CheckClient.requestMessage({ raw: true, rawHeaders: [['x-v', Buffer.from([0xfe])]] })));
    expect(a.headers.get('x-v')).not.toBe(b.headers.get('x-v'));
  });

  it('falls back to pseudo-headers and generates a request id when Envoy sent none', () => {
    const r = decodeCheckRequest(bytes({ attributes: { request: { http: { headers: { ':method': 'GET', ':path': '/p?q', ':authority': 'h.example' } } } } }));
    expect(r.method).toBe('GET');
    expect(r.path).toBe('/p');
    expect(r.query).toBe('q');
    expect(r.host).toBe('h.example');
    expect(r.requestId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('flags a message without HTTP attributes', () => {
    expect(decodeCheckRequest(Buffer.alloc(0))[NO_HTTP_ATTRIBUTES]).toBe(true);
    expect(decodeCheckRequest(bytes({ attributes: { source: {} } }))[NO_HTTP_ATTRIBUTES]).toBe(true);
  });

  it('skips unknown fields of every wire type', () => {
    const known = bytes(CheckClient.requestMessage({ path: '/x' }));
    // field 99 varint, field 98 fixed64, field 97 fixed32, field 96 LEN — appended at top level
    const unknown = Buffer.from([0x98, 0x06, 0x01, 0x91, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0x8d, 0x06, 1, 2, 3, 4, 0x82, 0x06, 0x02, 0xaa, 0xbb]);
    expect(decodeCheckRequest(Buffer.concat([unknown, known])).path).toBe('/x');
  });

  it.each([
    ['truncated length', [0x0a, 0x05, 0x01]],
    ['truncated varint', [0x08, 0xff]],
    ['group wire type', [0x0b]],
    ['field number zero', [0x00, 0x01]],
    ['overlong varint', [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
    ['nested length past parent', [0x0a, 0x02, 0x22, 0x05]],
  ])('throws WireError on %s', (_name, raw) => {
    expect(() => decodeCheckRequest(Buffer.from(raw))).toThrow(WireError);
  });

  it('lower-cases hosts and keeps port and trailing dot for the pipeline (authz/host.ts) to judge', () => {
    expect(normalizeHost('Shop.Example.COM.')).toBe('shop.example.com.');
    expect(normalizeHost('[::1]:8080')).toBe('[::1]:8080');
    expect(normalizeHost('example.com:443')).toBe('example.com:443');
  });
});

describe('encodeCheckResponse', () => {
  const policy = compileYaml(`
identity:
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [storefront, "cart:write"] } } }
routes:
  - { match: { path: /x }, require: { allOf: [storefront] } }
`);

  it('encodes an allow exactly as Envoy expects', () => {
    const decision = allowDecision(
      policy,
      'rid',
      'r1',
      { method: 'host', tenant: 'acmé', subject: 's', scopes: ['storefront', 'cart:write'] },
      ['x-api-key'],
      [],
      [{ name: 'ratelimit', value: '"default";r=9;t=60' }],
    );
    const decoded = checkResponseType.toObject(checkResponseType.decode(encodeCheckResponse(decision)), { enums: String, defaults: false }) as any;
    expect(decoded.status ?? {}).toEqual({});
    expect(decoded.ok_response.headers).toEqual([
      { header: { key: 'x-tenant-id', value: 'acmé' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      { header: { key: 'x-auth-subject', value: 's' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      { header: { key: 'x-auth-scopes', value: 'storefront cart:write' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      { header: { key: 'x-auth-method', value: 'host' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
    ]);
    expect(decoded.ok_response.headers_to_remove).toEqual(['x-auth-key-id', 'x-auth-email', 'x-api-key']);
    expect(decoded.ok_response.response_headers_to_add).toEqual([{ header: { key: 'ratelimit', value: '"default";r=9;t=60' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }]);
    expect(decoded.denied_response).toBeUndefined();
    const fields = decoded.dynamic_metadata.fields;
    expect(fields.tenant.stringValue).toBe('acmé');
    expect(fields.decision.stringValue).toBe('allow');
    expect(fields.route.stringValue).toBe('r1');
  });

  it('encodes a deny with gRPC status, explicit HTTP status, headers and body', () => {
    const decision = denyDecision(policy, 'rid-9', 'r1', { reason: 'rate_limited', retryAfter: 12.2, headers: [{ name: 'ratelimit', value: 'x' }] });
    const decoded = checkResponseType.toObject(checkResponseType.decode(encodeCheckResponse(decision)), { enums: Number, defaults: false }) as any;
    expect(decoded.status).toEqual({ code: 8, message: 'rate_limited' });
    expect(decoded.denied_response.status).toEqual({ code: 429 });
    expect(decoded.denied_response.headers.map((h: any) => [h.header.key, h.header.value])).toEqual([
      ['content-type', 'application/json'],
      ['retry-after', '13'],
      ['ratelimit', 'x'],
    ]);
    expect(JSON.parse(decoded.denied_response.body)).toEqual({ error: 'Too Many Requests', code: 'RATE_LIMITED', status: 429, reason: 'rate_limited', requestId: 'rid-9' });
    expect(decoded.ok_response).toBeUndefined();
  });

  /** A route's removeHeaders: one array per compiled route, which is what identifies the route. */
  const ROUTE_REMOVES: readonly string[] = [];

  it('encodes a repeated caller from its cached parts: same bytes, filled on the second use', () => {
    const principal = { method: 'host' as const, tenant: 'acme', subject: 'shop', scopes: ['storefront'] };
    const encodeFor = (requestId: string) => {
      const decision = allowDecision(policy, requestId, 'r1', principal, undefined, ROUTE_REMOVES, []);
      return { decision, bytes: encodeCheckResponse(decision) };
    };
    const first = encodeFor('rid-1');
    expect(first.decision.encodeCache?.bytes).toBeUndefined(); // a caller seen once is not copied
    const second = encodeFor('rid-1');
    expect(second.decision.encodeCache).toBe(first.decision.encodeCache);
    expect(second.decision.encodeCache?.bytes).toBeDefined();
    expect(Buffer.compare(second.bytes, first.bytes)).toBe(0);
    const third = encodeFor('rid-3');
    const decoded = checkResponseType.toObject(checkResponseType.decode(third.bytes), { enums: String, defaults: false }) as any;
    expect(decoded.dynamic_metadata.fields.decision_id.stringValue).toBe('rid-3');
    expect(decoded.ok_response.headers.map((h: any) => h.header.value)).toEqual(['acme', 'shop', 'storefront', 'host']);
  });

  it('keeps the parts of a bounded number of callers per policy', () => {
    const callers = Array.from({ length: 5000 }, (_, i) => ({ method: 'host' as const, tenant: 'acme', subject: `s${i}`, scopes: ['storefront'] }));
    const partsOf = (p: (typeof callers)[number]) => allowDecision(policy, 'rid', 'r1', p, undefined, ROUTE_REMOVES, []).upstreamHeaders;
    const firstParts = partsOf(callers[0]!);
    expect(partsOf(callers[0]!)).toBe(firstParts); // a repeated caller reuses its parts
    for (const caller of callers) partsOf(caller);
    // 5000 callers later the first one was evicted: its parts are built again, and equal.
    const rebuilt = partsOf(callers[0]!);
    expect(rebuilt).not.toBe(firstParts);
    expect(rebuilt).toEqual(firstParts);
    expect(partsOf(callers[4999]!)).toBe(partsOf(callers[4999]!));
  });

  it('removes exactly the owned headers a caller does not set, per credential and route', () => {
    const withKey = { method: 'api-key' as const, tenant: 'acme', subject: 'svc', scopes: ['storefront'], keyId: 'k1' };
    const withoutKey = { method: 'host' as const, tenant: 'acme', subject: 'shop', scopes: ['storefront'] };
    const sameShape = { method: 'host' as const, tenant: 'other', subject: 'shop-2', scopes: ['cart:write'] };
    const credential = ['x-api-key'];
    const route = ['x-debug'];
    const removes = (p: typeof withKey | typeof withoutKey, cred?: readonly string[]) => allowDecision(policy, 'rid', 'r1', p, cred, route, []).removeHeaders;
    expect(removes(withKey, credential)).toEqual(['x-auth-email', 'x-api-key', 'x-debug']);
    expect(removes(withoutKey)).toEqual(['x-auth-key-id', 'x-auth-email', 'x-debug']);
    expect(removes(sameShape)).toBe(removes(withoutKey)); // one list per combination, shared
    expect(removes({ ...withoutKey, tenant: '' })).toEqual(['x-tenant-id', 'x-auth-key-id', 'x-auth-email', 'x-debug']);
    // A list made per request (not one of the source's own) still gives the right answer.
    for (let i = 0; i < 100; i++) expect(removes(withoutKey, [`x-key-${i}`])).toEqual(['x-auth-key-id', 'x-auth-email', `x-key-${i}`, 'x-debug']);
  });

  it('escapes a hostile request id in the JSON body', () => {
    const decision = denyDecision(policy, 'a"b\\c\n', 'r', { reason: 'missing_credential' });
    expect(JSON.parse(decision.body).requestId).toBe('a"b\\c\n');
  });
});

describe('repeatedLatin1Of (memo of texts that repeat across requests)', () => {
  it('always gives the latin1 text of exactly the bytes asked for, whatever was seen before', () => {
    // Many distinct short texts (far more than the memo's slots, so slots collide and are
    // replaced), texts that differ only in their last byte, every byte value, and long texts.
    const texts: Buffer[] = [];
    for (let i = 0; i < 5000; i++) texts.push(Buffer.from(`x-header-${i}`, 'latin1'));
    for (let b = 0; b < 256; b++) texts.push(Buffer.from([0x61, 0x62, b]));
    texts.push(Buffer.alloc(40, 0x41), Buffer.alloc(41, 0x41), Buffer.alloc(0));
    for (let round = 0; round < 3; round++) {
      for (const bytes of texts) {
        const framed = Buffer.concat([Buffer.from([7, 7]), bytes, Buffer.from([9])]);
        expect(repeatedLatin1Of(framed, 2, 2 + bytes.length)).toBe(bytes.toString('latin1'));
      }
    }
  });

  it('hands back the very same string for the same bytes', () => {
    const a = Buffer.from('..authorization..');
    const b = Buffer.from('xxauthorizationyy');
    const first = repeatedLatin1Of(a, 2, 15);
    expect(repeatedLatin1Of(b, 2, 15)).toBe(first);
    expect(first).toBe('authorization');
  });
});
