// Issue 13 §6: the request id in deny bodies, the decision log and decision_id is the one Envoy's
// access log and the upstream see (x-request-id), not Envoy's internal stream id; and since it is
// echoed into JSON bodies and logs, only a bounded, plain value is taken from the wire.
import { describe, expect, it } from 'vitest';
import { decodeCheckRequest } from '../../src/transport/grpc/decode.js';
import { CheckClient, checkRequestType } from '../support/grpc-client.js';

function decode(init: Parameters<typeof CheckClient.requestMessage>[0]) {
  const message = CheckClient.requestMessage(init);
  return decodeCheckRequest(Buffer.from(checkRequestType.encode(checkRequestType.fromObject(message)).finish()));
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('request id', () => {
  it.each([false, true])('takes x-request-id over Envoy\'s stream id (raw header_map: %s)', (raw) => {
    const id = '6f1c9a52-3b7e-4d2a-9c1f-0e5b8a7d4c21';
    expect(decode({ raw, id: '1234567890123456789', headers: { 'x-request-id': id } }).requestId).toBe(id);
  });

  it('falls back to the stream id when x-request-id is absent', () => {
    expect(decode({ id: '1234567890123456789' }).requestId).toBe('1234567890123456789');
  });

  it.each([
    ['too long', 'a'.repeat(129)],
    ['a quote', 'abc"def'],
    ['a backslash', 'abc\\def'],
    ['a control byte', 'abc\ndef'],
    ['a space', 'abc def'],
    ['non-ASCII', 'abcé'],
    ['two values joined', 'abc,def'],
    ['empty', ''],
  ])('refuses an x-request-id with %s and uses the stream id instead', (_label, value) => {
    expect(decode({ raw: true, id: '42', headers: { 'x-request-id': value } }).requestId).toBe('42');
  });

  it('generates a UUID when neither is usable', () => {
    expect(decode({ raw: true, id: 'x'.repeat(500), headers: { 'x-request-id': '<script>' } }).requestId).toMatch(UUID);
    expect(decode({ id: '' }).requestId).toMatch(UUID);
  });

  it('accepts the characters of common id formats (UUID, ULID, W3C trace ids, base64)', () => {
    for (const id of ['01HZX3K9W6Q8R2T4V5Y7A1B3C5', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'YWJj+ZGVm/Z2hp==', 'req_123.abc:def@host~x']) {
      expect(decode({ id: '1', headers: { 'x-request-id': id } }).requestId).toBe(id);
    }
    expect(decode({ id: '1', headers: { 'x-request-id': 'a'.repeat(128) } }).requestId).toBe('a'.repeat(128));
  });
});
