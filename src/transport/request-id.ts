// The request id Portcullis echoes (deny body, decision log, dynamic metadata decision_id): the
// one Envoy's access log and the upstream see. Envoy's attributes.request.http.id is its internal
// stream id, which matches nothing else; x-request-id is what Envoy generates (or keeps) and
// forwards. Both come from the wire and end up in JSON bodies and log lines, so only a bounded,
// plain value is taken.

import { randomUUID } from 'node:crypto';

/** Longest request id taken from a request (a UUID is 36, a W3C traceparent 55). */
export const MAX_REQUEST_ID_LENGTH = 128;

/**
 * Characters of common id formats (UUID, ULID, traceparent, base64/base64url, Envoy's decimal
 * stream ids) and nothing that needs escaping in JSON, a log line or a header value.
 */
const ALLOWED = (() => {
  const table = new Uint8Array(128);
  for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:~+/=@') table[c.charCodeAt(0)] = 1;
  return table;
})();

/** `value` when it is a usable request id: 1–128 characters, all from the allowed set. */
export function usableRequestId(value: string | undefined): value is string {
  if (value === undefined || value.length === 0 || value.length > MAX_REQUEST_ID_LENGTH) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 128 || ALLOWED[c] === 0) return false;
  }
  return true;
}

/** x-request-id when usable, else Envoy's stream id when usable, else a fresh UUID. */
export function pickRequestId(header: string | undefined, streamId: string | undefined): string {
  if (usableRequestId(header)) return header;
  if (usableRequestId(streamId)) return streamId;
  return randomUUID();
}
