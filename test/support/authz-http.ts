// Asking Portcullis's HTTP authorization listener the way each proxy asks it, and reading the
// answer the way each proxy reads it, so one decision table can be run through gRPC and every
// HTTP shape and compared as one Outcome.

import http from 'node:http';
import { headerOf, httpStatusNumber, type CheckClient, type CheckResponse } from './grpc-client.js';

export type ShapeName = 'envoy' | 'nginx' | 'forward-auth';
export const SHAPES: readonly ShapeName[] = ['envoy', 'nginx', 'forward-auth'];

/** The client's request as the proxy received it. */
export interface OriginalInit {
  method?: string;
  /** Path and query, as sent. */
  path?: string;
  host?: string;
  scheme?: string;
  /** Header name → value, or several values (sent as repeated headers). */
  headers?: Record<string, string | string[]>;
  /** x-forwarded-for the proxy sends (its peer last). */
  xff?: string;
  requestId?: string;
}

/** What a proxy does with the answer, in transport-independent terms. */
export interface Outcome {
  allowed: boolean;
  status: number;
  reason: string | undefined;
  /** Identity headers set upstream (name → value), sorted by name. */
  upstream: Record<string, string>;
  /** Headers removed from the upstream request, sorted. */
  removed: string[];
  /** Headers for the client: www-authenticate, retry-after, ratelimit*, content-type. */
  client: Record<string, string>;
}

const CLIENT_HEADERS = /^(www-authenticate|retry-after|ratelimit.*|x-ratelimit.*|content-type)$/;
const IDENTITY = /^x-(tenant-id|auth-.*)$/;

/** The listener's raw answer. */
export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

export function rawRequest(port: number, method: string, target: string, headers: Record<string, string | string[]>): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: target, agent, setHost: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    for (const [name, value] of Object.entries(headers)) req.setHeader(name, value);
    req.end();
  });
}

/** The request `shape`'s proxy sends for `init`, at the listener's default path prefixes. */
export function shapeRequest(shape: ShapeName, init: OriginalInit): { method: string; target: string; headers: Record<string, string | string[]> } {
  const method = init.method ?? 'GET';
  const path = init.path ?? '/';
  const host = init.host ?? 'api.example.com';
  const common: Record<string, string | string[]> = {
    ...init.headers,
    'x-forwarded-proto': init.scheme ?? 'https',
    'x-forwarded-for': init.xff ?? '198.51.100.10',
    'x-request-id': init.requestId ?? 'req-e2e',
  };
  switch (shape) {
    case 'envoy':
      return { method, target: `/envoy${path}`, headers: { ...common, host } };
    case 'nginx':
      return { method: 'GET', target: '/nginx', headers: { ...common, host: 'portcullis', 'x-original-method': method, 'x-original-uri': path, 'x-forwarded-host': host } };
    case 'forward-auth':
      return { method: 'GET', target: '/forward-auth', headers: { ...common, host: 'portcullis', 'x-forwarded-method': method, 'x-forwarded-uri': path, 'x-forwarded-host': host } };
  }
}

export async function askShape(port: number, shape: ShapeName, init: OriginalInit): Promise<HttpAnswer> {
  const r = shapeRequest(shape, init);
  return rawRequest(port, r.method, r.target, r.headers);
}

/** An HTTP answer read as `shape`'s proxy reads it. */
export function outcomeOfHttp(shape: ShapeName, answer: HttpAnswer): Outcome {
  const h = answer.headers;
  if (answer.status === 200) {
    const upstream: Record<string, string> = {};
    // node:http hands header bytes over as latin1; an upstream reads identity values as UTF-8.
    for (const [name, value] of Object.entries(h)) if (IDENTITY.test(name)) upstream[name] = Buffer.from(String(value), 'latin1').toString('utf8');
    const removeHeader = shape === 'envoy' ? 'x-envoy-auth-headers-to-remove' : 'x-portcullis-remove';
    const removed = h[removeHeader] ? String(h[removeHeader]).split(',').map((s) => s.trim()) : [];
    return { allowed: true, status: 200, reason: undefined, upstream: sortObject(upstream), removed: removed.sort(), client: clientHeaders(h) };
  }
  let status = answer.status;
  let body = answer.body;
  if (shape === 'nginx') {
    if (status !== 401 && status !== 403) throw new Error(`nginx only accepts 2xx/401/403 from auth_request, got ${status}`);
    status = Number(h['x-portcullis-status']);
    body = String(h['x-portcullis-body']);
  }
  let parsed: { reason: string; status: number };
  try {
    parsed = JSON.parse(body) as typeof parsed;
  } catch {
    throw new Error(`${shape}: not a JSON body (${answer.status} ${JSON.stringify(answer.headers)}): ${body}`);
  }
  if (parsed.status !== status) throw new Error(`body status ${parsed.status} differs from ${status}`);
  return { allowed: false, status, reason: parsed.reason, upstream: {}, removed: [], client: clientHeaders(h) };
}

export function outcomeOfGrpc(r: CheckResponse): Outcome {
  if (r.http_response === 'ok_response') {
    const upstream: Record<string, string> = {};
    for (const o of r.ok_response!.headers ?? []) upstream[o.header.key] = headerOf(r.ok_response!.headers, o.header.key)!;
    const client: Record<string, string> = {};
    for (const o of r.ok_response!.response_headers_to_add ?? []) client[o.header.key] = headerOf(r.ok_response!.response_headers_to_add, o.header.key)!;
    return { allowed: true, status: 200, reason: undefined, upstream: sortObject(upstream), removed: [...(r.ok_response!.headers_to_remove ?? [])].sort(), client: sortObject(client) };
  }
  const d = r.denied_response!;
  const client: Record<string, string> = {};
  for (const o of d.headers ?? []) if (CLIENT_HEADERS.test(o.header.key)) client[o.header.key] = headerOf(d.headers, o.header.key)!;
  return { allowed: false, status: httpStatusNumber(d.status!.code), reason: (JSON.parse(d.body!) as { reason: string }).reason, upstream: {}, removed: [], client: sortObject(client) };
}

export async function askGrpc(client: CheckClient, init: OriginalInit): Promise<Outcome> {
  const headers: Record<string, string> = {};
  const rawHeaders: [string, string][] = [];
  let raw = false;
  for (const [name, value] of Object.entries(init.headers ?? {})) {
    if (Array.isArray(value)) {
      raw = true;
      for (const v of value) rawHeaders.push([name, v]);
    } else headers[name] = value;
  }
  if (init.xff !== undefined) headers['x-forwarded-for'] = init.xff;
  headers['x-request-id'] = init.requestId ?? 'req-e2e';
  const peer = (init.xff ?? '198.51.100.10').split(',').pop()!.trim();
  return outcomeOfGrpc(
    await client.check({ method: init.method, path: init.path, host: init.host, scheme: init.scheme, headers, raw, rawHeaders, sourceAddress: peer }),
  );
}

function clientHeaders(h: http.IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(h)) if (CLIENT_HEADERS.test(name)) out[name] = String(value);
  return sortObject(out);
}

function sortObject(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
}

export function closeAgent(): void {
  agent.destroy();
}
