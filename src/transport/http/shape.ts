// What the proxy shapes of the HTTP authorization listener share: the request's headers as the
// pipeline reads them, the original request rebuilt from the proxy's headers into the same
// RequestAttributes the gRPC decoder builds, and the plain answer.
//
// A shape never trusts a client header to say which shape a request has (the listener picks the
// shape from its configuration), and never guesses: a missing or malformed proxy header is a 400
// `invalid_proxy_request`, because a proxy that sends it is misconfigured and whatever Portcullis
// decided from a guess would protect the wrong request.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { AuthzHttpShape } from '../../policy/schema.js';
import type { Decision, HeaderPair, RequestAttributes, RequestHeaders } from '../../types.js';
import { normalizeHost } from '../grpc/decode.js';
import { pickRequestId } from '../request-id.js';
import { splitRequestTarget } from '../target.js';

/** One proxy's request and response conventions. */
export interface ProxyShape {
  readonly name: AuthzHttpShape;
  /**
   * The original request the proxy asks about, or why the request is not one this proxy sends.
   * `rest` is the request target after the listener's path prefix ("" when none is left).
   */
  read(req: IncomingMessage, headers: NodeHeaders, rest: string): RequestAttributes | ShapeProblem;
  /** Answer the proxy with `decision` in its conventions. */
  write(res: ServerResponse, decision: Decision): void;
}

/** Why a request is refused before the pipeline (the decision log's detail; never echoed). */
export class ShapeProblem {
  constructor(readonly detail: string) {}
}

const EMPTY_MAP: ReadonlyMap<string, string> = new Map();

/**
 * The request's headers by lower-case name, duplicates joined as Envoy joins them ("," and "; "
 * for cookies) so that both transports show the pipeline the same values — node:http's own
 * `req.headers` keeps only the first of some (authorization among them), which would hide a
 * credential sent twice.
 */
export class NodeHeaders implements RequestHeaders {
  private readonly values = new Map<string, string>();
  /** Names containing "_" (lower-case), undefined when none. */
  underscored: string[] | undefined = undefined;

  constructor(raw: readonly string[]) {
    const values = this.values;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = lower(raw[i]!);
      const value = raw[i + 1]!;
      const existing = values.get(name);
      if (existing === undefined) {
        values.set(name, value);
        if (name.includes('_')) (this.underscored ??= []).push(name);
      } else values.set(name, existing + (name === 'cookie' ? '; ' : ',') + value);
    }
  }

  get(name: string): string | undefined {
    return this.values.get(name);
  }
}

function lower(name: string): string {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 65 && c <= 90) return name.toLowerCase();
  }
  return name;
}

/** An HTTP method token (RFC 9110 §5.6.2), at most 32 characters. */
const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/;

/** The parts of the original request a shape read from the proxy's headers. */
export interface OriginalRequest {
  readonly method: string | undefined;
  /** Origin-form request target: path and query, as the client sent it. */
  readonly target: string | undefined;
  readonly host: string | undefined;
  /** x-forwarded-proto. */
  readonly scheme: string | undefined;
}

/**
 * RequestAttributes from what a proxy said about the original request. The client address is the
 * last x-forwarded-for entry — the peer the proxy itself saw and appended — and the whole header
 * stays visible to the pipeline, exactly as Envoy presents a request it appended the peer to, so
 * the one client-IP rule (pipeline/client-ip.ts, clientIp.xffTrustedHops) applies unchanged.
 */
export function originalRequest(headers: NodeHeaders, proxy: string, original: OriginalRequest): RequestAttributes | ShapeProblem {
  const { method, target, host, scheme } = original;
  if (method === undefined || !METHOD.test(method)) return new ShapeProblem(`${proxy}: the original method is missing or not a method`);
  if (target === undefined || target.charCodeAt(0) !== 47 /* / */) return new ShapeProblem(`${proxy}: the original URI is missing or not an absolute path`);
  if (host === undefined || host.length === 0) return new ShapeProblem(`${proxy}: the original host is missing`);
  const proto = scheme?.toLowerCase();
  if (proto !== 'http' && proto !== 'https') return new ShapeProblem(`${proxy}: x-forwarded-proto is missing or not http/https`);
  const xff = headers.get('x-forwarded-for');
  if (xff === undefined) return new ShapeProblem(`${proxy}: x-forwarded-for is missing`);
  const comma = xff.lastIndexOf(',');
  const peer = (comma < 0 ? xff : xff.slice(comma + 1)).trim();
  if (isIP(peer) === 0) return new ShapeProblem(`${proxy}: the last x-forwarded-for entry is not an IP address`);
  const { path, query } = splitRequestTarget(target);
  return {
    requestId: requestIdOf(headers),
    method: method.toUpperCase(),
    host: normalizeHost(host),
    path,
    query,
    scheme: proto,
    protocol: '',
    headers,
    sourceAddress: peer,
    contextExtensions: EMPTY_MAP,
  };
}

/** Attributes for a request refused before the pipeline: only what the decision log shows. */
export function refusedRequest(headers: NodeHeaders, req: IncomingMessage): RequestAttributes {
  return {
    requestId: requestIdOf(headers),
    method: req.method ?? '',
    host: '',
    path: '',
    query: '',
    scheme: '',
    protocol: '',
    headers,
    sourceAddress: '',
    contextExtensions: EMPTY_MAP,
  };
}

/** x-request-id when usable (bounded, plain: it is echoed in bodies and logs), else a fresh UUID. */
function requestIdOf(headers: NodeHeaders): string {
  return pickRequestId(headers.get('x-request-id'), undefined);
}

/** Response headers as node:http's flat [name, value, name, value, …] list. */
export function flatHeaders(...lists: readonly (readonly HeaderPair[])[]): string[] {
  const out: string[] = [];
  for (const list of lists) for (const h of list) out.push(h.name, wireValue(h.value));
  return out;
}

/**
 * node:http writes a header value's characters as latin1 bytes (and throws beyond U+00FF); gRPC
 * sends the value's UTF-8 bytes. The same bytes on both transports: a value with non-ASCII
 * characters is handed to node:http as its UTF-8 bytes read as latin1.
 */
function wireValue(value: string): string {
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) > 0x7f) return Buffer.from(value, 'utf8').toString('latin1');
  return value;
}

/** Send status, headers (a flat list, extended here) and body; never cached by anything between. */
export function send(res: ServerResponse, status: number, headers: string[], body: string): void {
  headers.push('cache-control', 'no-store', 'content-length', String(Buffer.byteLength(body)));
  res.writeHead(status, headers);
  res.end(body);
}

/** Header carrying the headers the proxy must remove from the upstream request (nginx, forward-auth). */
export const REMOVE_HEADER = 'x-portcullis-remove';

/** An allow: 200, the identity headers for the upstream, the removal list, the client's quota headers. */
export function sendAllow(res: ServerResponse, decision: Decision & { allowed: true }, removeHeaderName: string): void {
  const headers = flatHeaders(decision.upstreamHeaders, decision.responseHeaders);
  if (decision.removeHeaders.length > 0) headers.push(removeHeaderName, decision.removeHeaders.join(', '));
  send(res, 200, headers, '');
}
