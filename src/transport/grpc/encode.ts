// Decision → CheckResponse bytes. Sizes are computed first, then one buffer is written once.
// Field numbers are Envoy's (proto/envoy/service/auth/v3/external_auth.proto).

import { STATUS_LABELS, type HttpDenyStatus } from '../../reasons.js';
import type { AllowDecision, Decision, DenyDecision, HeaderPair } from '../../types.js';
import { lenFieldSize, varintSize, WIRE_LEN, WIRE_VARINT, Writer } from './wire.js';

/** HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD */
const OVERWRITE_IF_EXISTS_OR_ADD = 2;

const byteLength = (s: string): number => Buffer.byteLength(s, 'utf8');

// ---- sizes ---------------------------------------------------------------------------------

function headerValueSize(h: HeaderPair): number {
  return lenFieldSize(byteLength(h.name)) + lenFieldSize(byteLength(h.value));
}

/** HeaderValueOption { header = 1; append_action = 3 } */
function headerOptionSize(h: HeaderPair): number {
  return lenFieldSize(headerValueSize(h)) + 2;
}

function headerOptionsSize(headers: readonly HeaderPair[]): number {
  let n = 0;
  for (const h of headers) n += lenFieldSize(headerOptionSize(h));
  return n;
}

function metadataEntries(decision: Decision): [string, string][] {
  const entries: [string, string][] = [
    ['decision', decision.allowed ? 'allow' : 'deny'],
    ['decision_id', decision.requestId],
    ['route', decision.route],
  ];
  const p = decision.principal;
  if (p) {
    entries.push(['method', p.method]);
    if (p.tenant !== undefined) entries.push(['tenant', p.tenant]);
    if (p.subject !== undefined) entries.push(['subject', p.subject]);
    if (p.keyId !== undefined) entries.push(['key_id', p.keyId]);
    if (p.issuer !== undefined) entries.push(['issuer', p.issuer]);
  }
  if (!decision.allowed) entries.push(['reason', decision.reason]);
  return entries;
}

/** Struct { map<string, Value> fields = 1 }, Value { string_value = 3 } */
function structEntrySize(key: string, value: string): number {
  return lenFieldSize(byteLength(key)) + lenFieldSize(lenFieldSize(byteLength(value)));
}

// ---- writers -------------------------------------------------------------------------------

function writeHeaderOption(w: Writer, field: number, h: HeaderPair): void {
  const nameLen = byteLength(h.name);
  const valueLen = byteLength(h.value);
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

function writeStruct(w: Writer, field: number, entries: [string, string][], size: number): void {
  w.tag(field, WIRE_LEN);
  w.varint(size);
  for (const [key, value] of entries) {
    const keyLen = byteLength(key);
    const valueLen = byteLength(value);
    w.tag(1, WIRE_LEN);
    w.varint(structEntrySize(key, value));
    w.string(1, key, keyLen);
    w.tag(2, WIRE_LEN);
    w.varint(lenFieldSize(valueLen));
    w.string(3, value, valueLen);
  }
}

function structSize(entries: [string, string][]): number {
  let n = 0;
  for (const [k, v] of entries) n += lenFieldSize(structEntrySize(k, v));
  return n;
}

// ---- CheckResponse -------------------------------------------------------------------------

export function encodeCheckResponse(decision: Decision): Buffer {
  return decision.allowed ? encodeAllow(decision) : encodeDeny(decision);
}

function encodeAllow(d: AllowDecision): Buffer {
  // OkHttpResponse { headers = 2; headers_to_remove = 5; response_headers_to_add = 6 }
  let ok = headerOptionsSize(d.upstreamHeaders) + headerOptionsSize(d.responseHeaders);
  for (const name of d.removeHeaders) ok += lenFieldSize(byteLength(name));
  const meta = metadataEntries(d);
  const metaSize = structSize(meta);
  // status = 1 (empty google.rpc.Status: code 0), ok_response = 3, dynamic_metadata = 4
  const total = 2 + lenFieldSize(ok) + lenFieldSize(metaSize);
  const w = new Writer(total);
  w.tag(1, WIRE_LEN);
  w.varint(0);
  w.tag(3, WIRE_LEN);
  w.varint(ok);
  for (const h of d.upstreamHeaders) writeHeaderOption(w, 2, h);
  for (const name of d.removeHeaders) w.string(5, name, byteLength(name));
  for (const h of d.responseHeaders) writeHeaderOption(w, 6, h);
  writeStruct(w, 4, meta, metaSize);
  return w.finish();
}

function encodeDeny(d: DenyDecision): Buffer {
  const grpcCode = STATUS_LABELS[d.status as HttpDenyStatus].grpc;
  const messageLen = byteLength(d.reason);
  // google.rpc.Status { code = 1; message = 2 }
  const status = 1 + varintSize(grpcCode) + lenFieldSize(messageLen);
  // DeniedHttpResponse { status = 1 (HttpStatus { code = 1 }); headers = 2; body = 3 }
  const httpStatus = 1 + varintSize(d.status);
  const bodyLen = byteLength(d.body);
  const denied = lenFieldSize(httpStatus) + headerOptionsSize(d.headers) + lenFieldSize(bodyLen);
  const meta = metadataEntries(d);
  const metaSize = structSize(meta);
  const total = lenFieldSize(status) + lenFieldSize(denied) + lenFieldSize(metaSize);
  const w = new Writer(total);
  w.tag(1, WIRE_LEN);
  w.varint(status);
  w.tag(1, WIRE_VARINT);
  w.varint(grpcCode);
  w.string(2, d.reason, messageLen);
  w.tag(2, WIRE_LEN);
  w.varint(denied);
  w.tag(1, WIRE_LEN);
  w.varint(httpStatus);
  w.tag(1, WIRE_VARINT);
  w.varint(d.status);
  for (const h of d.headers) writeHeaderOption(w, 2, h);
  w.string(3, d.body, bodyLen);
  writeStruct(w, 4, meta, metaSize);
  return w.finish();
}
