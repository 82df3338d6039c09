// Distinct invalid credentials made on the fly for the memory spray (bench/memory.mjs): a million
// request bodies would not fit in a file, so each one is a copy of a template CheckRequest frame
// with the credential's bytes changed in place (same length, so no protobuf length changes).

import { crc32 } from 'node:zlib';

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const COUNTER_CHARS = 8;

function writeCounter(buffer, offset, n, alphabet) {
  for (let i = COUNTER_CHARS - 1; i >= 0; i--) {
    buffer[offset + i] = alphabet.charCodeAt(n % alphabet.length);
    n = Math.floor(n / alphabet.length);
  }
}

/**
 * kind 'jwt': a well-formed RS256 token whose signature starts with a counter (fails signature
 * verification). kind 'api-key': a Portcullis-format key (prefix, 49 base62, 6 base62 CRC-32) whose
 * last random characters are a counter and whose checksum is recomputed, so it passes the offline
 * check and reaches the key store as an unknown key.
 * Returns (n) => a fresh frame Buffer carrying variant n.
 */
export function sprayBodies(template, marker, kind) {
  const at = template.indexOf(Buffer.from(marker, 'latin1'));
  if (at < 0) throw new Error('spray: the credential is not in the template frame');
  if (kind === 'jwt') {
    const signatureStart = marker.lastIndexOf('.') + 1;
    if (signatureStart <= 0 || marker.length - signatureStart < COUNTER_CHARS) throw new Error('spray: not a compact JWS');
    return (n) => {
      const frame = Buffer.from(template);
      writeCounter(frame, at + signatureStart, n, BASE64URL);
      return frame;
    };
  }
  if (kind === 'api-key') {
    const checksumStart = marker.length - 6;
    const counterStart = checksumStart - COUNTER_CHARS;
    return (n) => {
      const frame = Buffer.from(template);
      writeCounter(frame, at + counterStart, n, BASE62);
      let checksum = crc32(frame.subarray(at, at + checksumStart));
      for (let i = 5; i >= 0; i--) {
        frame[at + checksumStart + i] = BASE62.charCodeAt(checksum % 62);
        checksum = Math.floor(checksum / 62);
      }
      return frame;
    };
  }
  throw new Error(`spray: unknown kind ${kind}`);
}
