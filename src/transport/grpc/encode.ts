// Decision → CheckResponse bytes. Field numbers are Envoy's
// (proto/envoy/service/auth/v3/external_auth.proto).
//
// The parts of a response that repeat from request to request (identity headers of a cached
// caller, headers to remove, the fixed dynamic-metadata entries, a denial's headers) are encoded
// once into the decision's EncodeCache; per request only the request id, the denial body and any
// rate-limit headers are written.

import { STATUS_LABELS, type HttpDenyStatus } from '../../reasons.js';
import type { AllowDecision, Decision, DenyDecision, EncodeCache, HeaderPair } from '../../types.js';
import { GRPC_FRAME_HEADER, lenFieldSize, varintSize, WIRE_LEN, WIRE_VARINT, Writer } from './wire.js';

/** HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD */
const OVERWRITE_IF_EXISTS_OR_ADD = 2;

// CheckResponse { status = 1; denied_response = 2; ok_response = 3; dynamic_metadata = 4;
//   error_response = 5 (Envoy 1.37+) }
const TAG_STATUS = (1 << 3) | WIRE_LEN;
const TAG_DENIED = (2 << 3) | WIRE_LEN;
const TAG_ERROR = (5 << 3) | WIRE_LEN;
const TAG_OK = (3 << 3) | WIRE_LEN;
const TAG_METADATA = (4 << 3) | WIRE_LEN;

/** UTF-8 length without a native call for the short ASCII strings that dominate here. */
function utf8Length(s: string): number {
  const n = s.length;
  if (n > 64) return Buffer.byteLength(s, 'utf8');
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) >= 0x80) return Buffer.byteLength(s, 'utf8');
  return n;
}

// ---- building blocks ---------------------------------------------------------------------------

/** HeaderValueOption { header = 1 (HeaderValue { key = 1; value = 2 }); append_action = 3 } */
function headerOptionSize(h: HeaderPair): number {
  const hv = lenFieldSize(utf8Length(h.name)) + lenFieldSize(utf8Length(h.value));
  return lenFieldSize(hv) + 2;
}

function headerOptionsSize(headers: readonly HeaderPair[]): number {
  let n = 0;
  for (let i = 0; i < headers.length; i++) n += lenFieldSize(headerOptionSize(headers[i]!));
  return n;
}

function writeHeaderOptions(w: Writer, field: number, headers: readonly HeaderPair[]): void {
  // Indexed loops here and in the size functions: the header lists have several shapes (frozen,
  // shared, built per check), and for-of over them left an iterator object per check.
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    const nameLen = utf8Length(h.name);
    const valueLen = utf8Length(h.value);
    const hv = lenFieldSize(nameLen) + lenFieldSize(valueLen);
    w.tag(field, WIRE_LEN);
    w.varint(lenFieldSize(hv) + 2);
    w.tag(1, WIRE_LEN);
    w.varint(hv);
    w.string(1, h.name, nameLen);
    w.string(2, h.value, valueLen);
    w.tag(3, WIRE_VARINT);
    w.varint(OVERWRITE_IF_EXISTS_OR_ADD);
  }
}

/** One google.protobuf.Struct field entry { key = 1; value = 2 (Value { string_value = 3 }) }. */
function structEntrySize(key: string, value: string): number {
  return lenFieldSize(utf8Length(key)) + lenFieldSize(lenFieldSize(utf8Length(value)));
}

function writeStructEntry(w: Writer, key: string, value: string): void {
  const keyLen = utf8Length(key);
  const valueLen = utf8Length(value);
  w.tag(1, WIRE_LEN);
  w.varint(lenFieldSize(keyLen) + lenFieldSize(lenFieldSize(valueLen)));
  w.string(1, key, keyLen);
  w.tag(2, WIRE_LEN);
  w.varint(lenFieldSize(valueLen));
  w.string(3, value, valueLen);
}

// The dynamic-metadata entries that do not change between requests of the same kind: decision,
// route, the principal's method/tenant/subject/key_id/issuer, a denial's reason. Sized and
// written field by field (no intermediate list: this runs for every caller not seen recently).

function fixedMetadataSize(decision: Decision): number {
  let size = lenFieldSize(structEntrySize('decision', decision.allowed ? 'allow' : 'deny'));
  size += lenFieldSize(structEntrySize('route', decision.route));
  const p = decision.principal;
  if (p) {
    size += lenFieldSize(structEntrySize('method', p.method));
    if (p.tenant !== undefined) size += lenFieldSize(structEntrySize('tenant', p.tenant));
    if (p.subject !== undefined) size += lenFieldSize(structEntrySize('subject', p.subject));
    if (p.keyId !== undefined) size += lenFieldSize(structEntrySize('key_id', p.keyId));
    if (p.issuer !== undefined) size += lenFieldSize(structEntrySize('issuer', p.issuer));
  }
  if (!decision.allowed) size += lenFieldSize(structEntrySize('reason', decision.reason));
  return size;
}

function writeFixedMetadata(w: Writer, decision: Decision): void {
  writeStructEntry(w, 'decision', decision.allowed ? 'allow' : 'deny');
  writeStructEntry(w, 'route', decision.route);
  const p = decision.principal;
  if (p) {
    writeStructEntry(w, 'method', p.method);
    if (p.tenant !== undefined) writeStructEntry(w, 'tenant', p.tenant);
    if (p.subject !== undefined) writeStructEntry(w, 'subject', p.subject);
    if (p.keyId !== undefined) writeStructEntry(w, 'key_id', p.keyId);
    if (p.issuer !== undefined) writeStructEntry(w, 'issuer', p.issuer);
  }
  if (!decision.allowed) writeStructEntry(w, 'reason', decision.reason);
}

function fixedMetadata(decision: Decision): Buffer {
  const w = new Writer(fixedMetadataSize(decision));
  writeFixedMetadata(w, decision);
  return w.finish();
}

/**
 * Keep the fixed parts of a response in its EncodeCache: on the cache's second use (a caller
 * seen once is not worth a copy), in an allocation of its own — a small pooled Buffer is a slice
 * of a shared 8 KiB slab, and one cached slice would keep the whole slab alive.
 */
function remember(cache: EncodeCache, fixed: Uint8Array, meta: Uint8Array): void {
  if (!cache.seen) {
    cache.seen = true;
    return;
  }
  const bytes = Buffer.allocUnsafeSlow(fixed.length + meta.length);
  bytes.set(fixed, 0);
  bytes.set(meta, fixed.length);
  cache.bytes = bytes;
  cache.split = fixed.length;
}

/** [fixed part, fixed metadata] of a denial: from its EncodeCache, or encoded now. */
function fixedParts<D extends Decision>(decision: D, fixedPart: (d: D) => Buffer): [Uint8Array, Uint8Array] {
  const cache = decision.encodeCache;
  if (cache?.bytes !== undefined) return [cache.bytes.subarray(0, cache.split), cache.bytes.subarray(cache.split)];
  const fixed = fixedPart(decision);
  const meta = fixedMetadata(decision);
  if (cache) remember(cache, fixed, meta);
  return [fixed, meta];
}

// ---- CheckResponse -----------------------------------------------------------------------------

/**
 * The CheckResponse as one gRPC message frame, encoded in place (what the transport sends).
 * `dependencyErrors` (policy dependencyFailure: error): a 503 is sent as error_response, without
 * its HTTP status, so Envoy treats it as a failure of the service (ext_authz.error,
 * failure_mode_allow, status_on_error) rather than a denial.
 */
export function encodeCheckResponseFrame(decision: Decision, dependencyErrors = false): Buffer {
  if (decision.allowed) return encodeAllow(decision);
  return encodeDeny(decision, dependencyErrors && decision.status === 503);
}

/** The bare CheckResponse message. */
export function encodeCheckResponse(decision: Decision, dependencyErrors = false): Buffer {
  return encodeCheckResponseFrame(decision, dependencyErrors).subarray(GRPC_FRAME_HEADER);
}

/** OkHttpResponse { headers = 2; headers_to_remove = 5 } — the part fixed per caller and route. */
function fixedOkSize(d: AllowDecision): number {
  let size = headerOptionsSize(d.upstreamHeaders);
  for (const name of d.removeHeaders) size += lenFieldSize(utf8Length(name));
  return size;
}

function writeFixedOk(w: Writer, d: AllowDecision): void {
  writeHeaderOptions(w, 2, d.upstreamHeaders);
  for (const name of d.removeHeaders) w.string(5, name, utf8Length(name));
}

function encodeAllow(d: AllowDecision): Buffer {
  const cache = d.encodeCache;
  const cached = cache?.bytes;
  const fixedSize = cached !== undefined ? cache!.split : fixedOkSize(d);
  const metaFixedSize = cached !== undefined ? cached.length - cache!.split : fixedMetadataSize(d);
  const idEntry = structEntrySize('decision_id', d.requestId);
  const okSize = fixedSize + headerOptionsSize(d.responseHeaders); // response_headers_to_add = 6
  const metaSize = metaFixedSize + lenFieldSize(idEntry);
  // status = 1: an empty google.rpc.Status (code 0, OK)
  const w = new Writer(2 + lenFieldSize(okSize) + lenFieldSize(metaSize), GRPC_FRAME_HEADER);
  w.varint(TAG_STATUS);
  w.varint(0);
  w.varint(TAG_OK);
  w.varint(okSize);
  const fixedStart = w.pos;
  if (cached !== undefined) w.raw(cached.subarray(0, fixedSize));
  else writeFixedOk(w, d);
  const fixedEnd = w.pos;
  writeHeaderOptions(w, 6, d.responseHeaders);
  w.varint(TAG_METADATA);
  w.varint(metaSize);
  const metaStart = w.pos;
  if (cached !== undefined) w.raw(cached.subarray(fixedSize));
  else writeFixedMetadata(w, d);
  const metaEnd = w.pos;
  writeStructEntry(w, 'decision_id', d.requestId);
  const out = w.finishFrame();
  // Encoded in place this time (no intermediate buffers); the cache copies the fixed parts out.
  if (cache !== undefined && cached === undefined) remember(cache, out.subarray(fixedStart, fixedEnd), out.subarray(metaStart, metaEnd));
  return out;
}

/** status (google.rpc.Status { code = 1; message = 2 }) and DeniedHttpResponse's status + headers. */
function fixedDeny(d: DenyDecision): Buffer {
  const grpcCode = STATUS_LABELS[d.status as HttpDenyStatus].grpc;
  const messageLen = utf8Length(d.reason);
  const status = 1 + varintSize(grpcCode) + lenFieldSize(messageLen);
  const httpStatus = 1 + varintSize(d.status); // HttpStatus { code = 1 }
  const size = lenFieldSize(status) + lenFieldSize(httpStatus) + headerOptionsSize(d.headers);
  const w = new Writer(size);
  w.varint(TAG_STATUS);
  w.varint(status);
  w.tag(1, WIRE_VARINT);
  w.varint(grpcCode);
  w.string(2, d.reason, messageLen);
  // What follows is the start of DeniedHttpResponse's payload; encodeDeny frames it.
  w.tag(1, WIRE_LEN);
  w.varint(httpStatus);
  w.tag(1, WIRE_VARINT);
  w.varint(d.status);
  writeHeaderOptions(w, 2, d.headers);
  return w.finish();
}

function encodeDeny(d: DenyDecision, asError: boolean): Buffer {
  const [fixed, meta] = fixedParts(d, fixedDeny);
  // fixed = [status field][denied payload prefix]; split point = size of the status field.
  const statusFieldSize = 1 + 1 + fixed[1]!; // tag, one-byte length (status is always < 128 bytes), payload
  // An error_response leaves out the HttpStatus (the payload prefix's first field) so that
  // Envoy's status_on_error applies.
  const skip = asError ? lenFieldSize(1 + varintSize(d.status)) : 0;
  const deniedPrefix = fixed.length - statusFieldSize - skip;
  const idEntry = structEntrySize('decision_id', d.requestId);
  const bodyLen = utf8Length(d.body);
  const deniedSize = deniedPrefix + lenFieldSize(bodyLen); // body = 3
  const metaSize = meta.length + lenFieldSize(idEntry);
  const w = new Writer(statusFieldSize + lenFieldSize(deniedSize) + lenFieldSize(metaSize), GRPC_FRAME_HEADER);
  w.raw(fixed.subarray(0, statusFieldSize));
  w.varint(asError ? TAG_ERROR : TAG_DENIED);
  w.varint(deniedSize);
  w.raw(fixed.subarray(statusFieldSize + skip));
  w.string(3, d.body, bodyLen);
  w.varint(TAG_METADATA);
  w.varint(metaSize);
  w.raw(meta);
  writeStructEntry(w, 'decision_id', d.requestId);
  return w.finishFrame();
}
