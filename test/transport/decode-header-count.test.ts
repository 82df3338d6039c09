// A CheckRequest of hundreds of thousands of tiny header entries fits the message size limit, but
// its decoded names and values are memory the request budget does not count: refused as malformed
// (INVALID_ARGUMENT) beyond MAX_HEADER_ENTRIES, in both header encodings.
import { describe, expect, it } from 'vitest';
import { decodeCheckRequest, MAX_HEADER_ENTRIES, WireError } from '../../src/transport/grpc/decode.js';
import { checkRequestType, CheckClient } from '../support/grpc-client.js';

const bytes = (message: Record<string, unknown>) => Buffer.from(checkRequestType.encode(checkRequestType.fromObject(message)).finish());

function withHeaders(count: number, raw: boolean): Buffer {
  const headers: Record<string, string> = {};
  for (let i = 0; i < count; i++) headers[`x-h${i}`] = 'v';
  return bytes(CheckClient.requestMessage({ path: '/health', headers, raw }));
}

describe('decodeCheckRequest: header entries are bounded', () => {
  it.each([false, true])('accepts the limit and refuses one more (header_map: %s)', (raw) => {
    // requestMessage adds its own few headers (host, :path...): leave room for them.
    const atLimit = decodeCheckRequest(withHeaders(MAX_HEADER_ENTRIES - 20, raw));
    expect(atLimit.headers.get('x-h0')).toBe('v');
    expect(() => decodeCheckRequest(withHeaders(MAX_HEADER_ENTRIES + 1, raw))).toThrow(WireError);
  });
});
