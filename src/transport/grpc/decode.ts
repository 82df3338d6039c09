// CheckRequest bytes → RequestAttributes, reading only the fields Portcullis uses. Field numbers
// are Envoy's (proto/envoy/service/auth/v3/attribute_context.proto).

import { pickRequestId } from '../request-id.js';
import type { PeerAttributes, RequestAttributes, RequestHeaders } from '../../types.js';
import { splitRequestTarget } from '../target.js';
import { latin1Of, Reader, repeatedLatin1Of, WIRE_LEN, WireError } from './wire.js';

// tag = field << 3 | wire type, for the LEN fields we read
const T1 = (1 << 3) | WIRE_LEN;
const T2 = (2 << 3) | WIRE_LEN;
const T3 = (3 << 3) | WIRE_LEN;
const T4 = (4 << 3) | WIRE_LEN;
const T5 = (5 << 3) | WIRE_LEN;
const T6 = (6 << 3) | WIRE_LEN;
const T10 = (10 << 3) | WIRE_LEN;
const T13 = (13 << 3) | WIRE_LEN;

const EMPTY_MAP: ReadonlyMap<string, string> = new Map();

/**
 * Header entries one CheckRequest may carry. Envoy sends at most its max_headers_count (100 by
 * default); a message of hundreds of thousands of tiny entries fits the size limit but its decoded
 * names and values are memory the request budget does not see, so it is refused as malformed.
 */
export const MAX_HEADER_ENTRIES = 10_000;

/**
 * Header values stay bytes until asked for: a check reads a handful of the dozens of headers
 * Envoy sends. Names are decoded up front (they are the keys). Bytes are read as latin1, which is
 * injective, so invalid UTF-8 can never make two different values compare equal.
 */
export class LazyHeaders implements RequestHeaders {
  /** name → decoded value, or the index of its byte span in `spans`. */
  private readonly values = new Map<string, string | number>();
  private readonly spans: number[] = [];
  private entries = 0;
  /** Names containing "_" (README: underscore headers), undefined when none. */
  underscored: string[] | undefined = undefined;

  constructor(private readonly buf: Buffer) {}

  get(name: string): string | undefined {
    const v = this.values.get(name);
    if (typeof v !== 'number') return v;
    const decoded = latin1Of(this.buf, this.spans[v]!, this.spans[v + 1]!);
    this.values.set(name, decoded);
    return decoded;
  }

  /** A value whose bytes are buf[start, end); a repeated name is joined as Envoy joins it. */
  addSpan(name: string, start: number, end: number): void {
    this.count();
    if (this.values.has(name)) {
      this.addString(name, latin1Of(this.buf, start, end));
      return;
    }
    if (name.includes('_')) (this.underscored ??= []).push(name);
    this.values.set(name, this.spans.length);
    this.spans.push(start, end);
  }

  /** Map semantics for `headers` (a protobuf map: a repeated key replaces). */
  setSpan(name: string, start: number, end: number): void {
    this.count();
    if (name.includes('_') && !this.values.has(name)) (this.underscored ??= []).push(name);
    this.values.set(name, this.spans.length);
    this.spans.push(start, end);
  }

  private count(): void {
    if (++this.entries > MAX_HEADER_ENTRIES) throw new WireError(`more than ${MAX_HEADER_ENTRIES} header entries`);
  }

  private addString(name: string, value: string): void {
    const existing = this.get(name);
    this.values.set(name, existing === undefined ? value : existing + (name === 'cookie' ? '; ' : ',') + value);
  }
}

/** A Check request Envoy could not have sent: no HTTP attributes at all. */
export const NO_HTTP_ATTRIBUTES = Symbol('no-http-attributes');

interface Draft {
  id: string;
  method: string;
  host: string;
  path: string;
  scheme: string;
  protocol: string;
  headers: LazyHeaders;
  sourceAddress: string;
  contextExtensions: ReadonlyMap<string, string>;
  peer: LazyPeer | undefined;
  sawHttp: boolean;
}

/**
 * source.principal and source.certificate stay bytes until a peer source asks (a certificate is a
 * few kB of URL-encoded PEM that most policies never read).
 */
class LazyPeer implements PeerAttributes {
  principalStart = 0;
  principalEnd = 0;
  certificateStart = 0;
  certificateEnd = 0;
  private principalText: string | undefined;
  private certificateText: string | undefined;
  constructor(private readonly buf: Buffer) {}
  get principal(): string {
    return (this.principalText ??= latin1Of(this.buf, this.principalStart, this.principalEnd));
  }
  get certificate(): string {
    return (this.certificateText ??= latin1Of(this.buf, this.certificateStart, this.certificateEnd));
  }
}

/**
 * Decode a CheckRequest. Throws WireError for bytes that are not a valid protobuf message (the
 * transport answers INVALID_ARGUMENT); a valid message without HTTP attributes yields a request
 * flagged so the pipeline denies it.
 */
export function decodeCheckRequest(buf: Buffer): RequestAttributes & { readonly [NO_HTTP_ATTRIBUTES]?: true } {
  const d: Draft = {
    id: '',
    method: '',
    host: '',
    path: '',
    scheme: '',
    protocol: '',
    headers: new LazyHeaders(buf),
    sourceAddress: '',
    contextExtensions: EMPTY_MAP,
    peer: undefined,
    sawHttp: false,
  };
  const r = new Reader(buf);
  while (!r.done()) {
    const tag = r.tag();
    if (tag === T1) readAttributeContext(r, r.lenEnd(), d);
    else r.skip(tag & 7);
  }
  return finish(d);
}

function readAttributeContext(r: Reader, end: number, d: Draft): void {
  const outer = r.enter(end);
  while (!r.done()) {
    const tag = r.tag();
    if (tag === T1) d.sourceAddress = readSourcePeer(r, r.lenEnd(), d);
    else if (tag === T4) readRequest(r, r.lenEnd(), d);
    else if (tag === T10) readMapEntry(r, r.lenEnd(), (d.contextExtensions === EMPTY_MAP ? (d.contextExtensions = new Map()) : d.contextExtensions) as Map<string, string>);
    else r.skip(tag & 7);
  }
  r.leave(outer);
}

/**
 * The source Peer: address(1) → Address.socket_address(1) → SocketAddress.address(2); principal(4)
 * and certificate(5) kept as byte spans (LazyPeer).
 */
function readSourcePeer(r: Reader, end: number, d: Draft): string {
  let address = '';
  const peerOuter = r.enter(end);
  while (!r.done()) {
    const tag = r.tag();
    if (tag === T4 || tag === T5) {
      const e = r.lenEnd();
      const lazy = (d.peer ??= new LazyPeer(r.buf));
      if (tag === T4) {
        lazy.principalStart = r.pos;
        lazy.principalEnd = e;
      } else {
        lazy.certificateStart = r.pos;
        lazy.certificateEnd = e;
      }
      r.pos = e;
    } else if (tag === T1) {
      const addrOuter = r.enter(r.lenEnd());
      while (!r.done()) {
        const t = r.tag();
        if (t === T1) {
          const sockOuter = r.enter(r.lenEnd());
          while (!r.done()) {
            const st = r.tag();
            if (st === T2) address = r.repeatedLatin1();
            else r.skip(st & 7);
          }
          r.leave(sockOuter);
        } else r.skip(t & 7);
      }
      r.leave(addrOuter);
    } else r.skip(tag & 7);
  }
  r.leave(peerOuter);
  return address;
}

/** Request.http(2) → HttpRequest. */
function readRequest(r: Reader, end: number, d: Draft): void {
  const outer = r.enter(end);
  while (!r.done()) {
    const tag = r.tag();
    if (tag === T2) {
      d.sawHttp = true;
      readHttpRequest(r, r.lenEnd(), d);
    } else r.skip(tag & 7);
  }
  r.leave(outer);
}

function readHttpRequest(http: Reader, end: number, d: Draft): void {
  const outer = http.enter(end);
  while (!http.done()) {
    const tag = http.tag();
    switch (tag) {
      case T1:
        d.id = http.latin1();
        break;
      case T2:
        d.method = http.repeatedLatin1();
        break;
      case T3:
        readHeaderEntry(http, http.lenEnd(), d.headers);
        break;
      case T4:
        d.path = http.latin1();
        break;
      case T5:
        d.host = http.repeatedLatin1();
        break;
      case T6:
        d.scheme = http.repeatedLatin1();
        break;
      case (10 << 3) | WIRE_LEN:
        d.protocol = http.repeatedLatin1();
        break;
      case T13:
        readHeaderMap(http, http.lenEnd(), d.headers);
        break;
      default:
        http.skip(tag & 7);
    }
  }
  http.leave(outer);
}

/** map<string,string> entry: key(1), value(2). */
function readMapEntry(r: Reader, end: number, into: Map<string, string>): void {
  let key = '';
  let value = '';
  const outer = r.enter(end);
  while (!r.done()) {
    const tag = r.tag();
    if (tag === T1) key = r.latin1();
    else if (tag === T2) value = r.latin1();
    else r.skip(tag & 7);
  }
  r.leave(outer);
  into.set(key, value);
}

/** A `headers` map entry (already joined by Envoy): key(1) decoded, value(2) kept as a span. */
function readHeaderEntry(r: Reader, end: number, into: LazyHeaders): void {
  const buf = r.buf;
  let key = '';
  let valueStart = 0;
  let valueEnd = 0;
  const outer = r.enter(end);
  while (!r.done()) {
    const tag = r.tag();
    if (tag === T1) {
      const e = r.lenEnd();
      key = repeatedLatin1Of(buf, r.pos, e);
      r.pos = e;
    } else if (tag === T2) {
      valueEnd = r.lenEnd();
      valueStart = r.pos;
      r.pos = valueEnd;
    } else r.skip(tag & 7);
  }
  r.leave(outer);
  into.setSpan(lower(key), valueStart, valueEnd);
}

/** HeaderMap.headers(1) → HeaderValue: key(1), value(2), raw_value(3). Duplicates are joined. */
function readHeaderMap(r: Reader, end: number, into: LazyHeaders): void {
  const buf = r.buf;
  const mapOuter = r.enter(end);
  while (!r.done()) {
    const tag = r.tag();
    if (tag !== T1) {
      r.skip(tag & 7);
      continue;
    }
    const hvOuter = r.enter(r.lenEnd());
    let key = '';
    let valueStart = 0;
    let valueEnd = 0;
    let sawRaw = false;
    while (!r.done()) {
      const t = r.tag();
      if (t === T1) {
        const e = r.lenEnd();
        key = repeatedLatin1Of(buf, r.pos, e);
        r.pos = e;
      } else if (t === T2 || t === T3) {
        const e = r.lenEnd();
        // raw_value (3) wins over value (2) whatever their order.
        if (t === T3 || !sawRaw) {
          valueStart = r.pos;
          valueEnd = e;
          sawRaw ||= t === T3;
        }
        r.pos = e;
      } else r.skip(t & 7);
    }
    r.leave(hvOuter);
    into.addSpan(lower(key), valueStart, valueEnd);
  }
  r.leave(mapOuter);
}

function lower(name: string): string {
  // Envoy already sends lower-case names; only pay for toLowerCase when needed.
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 65 && c <= 90) return name.toLowerCase();
  }
  return name;
}

function finish(d: Draft): RequestAttributes & { readonly [NO_HTTP_ATTRIBUTES]?: true } {
  const headers = d.headers;
  const { path, query } = splitRequestTarget(d.path || headers.get(':path') || '');
  const request: RequestAttributes & { [NO_HTTP_ATTRIBUTES]?: true } = {
    requestId: pickRequestId(headers.get('x-request-id'), d.id),
    method: (d.method || headers.get(':method') || '').toUpperCase(),
    host: normalizeHost(d.host || headers.get(':authority') || headers.get('host') || ''),
    path,
    query,
    scheme: d.scheme || headers.get(':scheme') || '',
    protocol: d.protocol,
    headers,
    sourceAddress: d.sourceAddress,
    contextExtensions: d.contextExtensions,
    peer: d.peer,
    trace: undefined, // set by the transport when the check is traced (one object shape either way)
  };
  if (!d.sawHttp) request[NO_HTTP_ATTRIBUTES] = true;
  return request;
}

/**
 * Lower-case, port and trailing dot kept ("API.Example.com.:8443" → "api.example.com.:8443"): which
 * port and whether a dot matches a rule is the pipeline's decision (authz/host.ts), not the decoder's.
 */
export function normalizeHost(host: string): string {
  return lower(host);
}

export { WireError };
