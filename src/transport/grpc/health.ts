// grpc.health.v1.Health (Check and Watch) for Kubernetes' native gRPC probes and Envoy/Istio
// health checking. SERVING only once a policy is loaded and its dependencies are ready;
// NOT_SERVING while starting and while draining.

import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { endStreaming, GrpcStatus, grpcFrame, type RequestReader, sendError, startStreaming } from './protocol.js';
import { Reader, WIRE_LEN } from './wire.js';

export const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';
export const HEALTH_WATCH_PATH = '/grpc.health.v1.Health/Watch';
/** A HealthCheckRequest is one short service name; anything bigger is not one. */
const MAX_REQUEST_BYTES = 4096;
/**
 * Watch streams live as long as their client wants (~6 KB each): unbounded, 300 connections × 128
 * Watch streams took the process to 299 MB RSS (the chart's limit is 256 Mi). A client needs one
 * per connection (grpc-go's client-side health checking); probes and Envoy use Check.
 */
export const MAX_WATCHES_PER_CONNECTION = 4;
export const MAX_WATCHES = 1024;

export const enum ServingStatus {
  UNKNOWN = 0,
  SERVING = 1,
  NOT_SERVING = 2,
  SERVICE_UNKNOWN = 3,
}

/** HealthCheckResponse { ServingStatus status = 1 }, framed */
function statusFrame(status: ServingStatus): Buffer {
  return grpcFrame(status === ServingStatus.UNKNOWN ? Buffer.alloc(0) : Buffer.from([0x08, status]));
}

/** HealthCheckRequest { string service = 1 } */
function decodeService(buf: Buffer): string {
  const r = new Reader(buf);
  let service = '';
  while (!r.done()) {
    const tag = r.tag();
    if (tag === ((1 << 3) | WIRE_LEN)) service = r.utf8();
    else r.skip(tag & 7);
  }
  return service;
}

export class HealthService {
  private status: ServingStatus = ServingStatus.NOT_SERVING;
  private readonly known: Set<string>;
  private readonly watchers = new Map<ServerHttp2Stream, string>();
  /** Watch streams per connection (only connections that have one). */
  private readonly watchesOf = new Map<object, number>();
  private closed = false;

  constructor(services: readonly string[]) {
    this.known = new Set(['', ...services]);
  }

  /** Answer a call to grpc.health.v1.Health (`path` is one of the two methods). */
  serve(reader: RequestReader, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, path: typeof HEALTH_CHECK_PATH | typeof HEALTH_WATCH_PATH): void {
    const unary = path === HEALTH_CHECK_PATH;
    reader.read(stream, headers, unary ? this.check : this.watch, MAX_REQUEST_BYTES, false, unary);
  }

  private readonly check = (stream: ServerHttp2Stream, request: Buffer, reader: RequestReader): void => {
    const service = this.service(stream, request);
    if (service === undefined) return;
    if (!this.known.has(service)) return sendError(stream, GrpcStatus.NOT_FOUND, `unknown service ${service}`);
    reader.answer(stream, statusFrame(this.status));
  };

  private readonly watch = (stream: ServerHttp2Stream, request: Buffer): void => {
    const service = this.service(stream, request);
    if (service === undefined) return;
    const session = stream.session;
    const mine = session === undefined ? 0 : this.watchesOf.get(session) ?? 0;
    if (!this.closed && (mine >= MAX_WATCHES_PER_CONNECTION || this.watchers.size >= MAX_WATCHES)) {
      return sendError(stream, GrpcStatus.RESOURCE_EXHAUSTED, `too many health Watch streams (at most ${MAX_WATCHES_PER_CONNECTION} per connection, ${MAX_WATCHES} in all)`);
    }
    if (!startStreaming(stream)) return;
    stream.write(statusFrame(this.known.has(service) ? this.status : ServingStatus.SERVICE_UNKNOWN));
    // Shutting down: a Watch that arrives now gets the status and its end, or it would hold its
    // connection open until the drain timeout.
    if (this.closed || session === undefined) return endStreaming(stream);
    this.watchers.set(stream, service);
    this.watchesOf.set(session, mine + 1);
    stream.once('close', () => {
      this.watchers.delete(stream);
      const left = (this.watchesOf.get(session) ?? 1) - 1;
      if (left <= 0) this.watchesOf.delete(session);
      else this.watchesOf.set(session, left);
    });
  };

  private service(stream: ServerHttp2Stream, request: Buffer): string | undefined {
    try {
      return decodeService(request);
    } catch {
      sendError(stream, GrpcStatus.INVALID_ARGUMENT, 'malformed HealthCheckRequest');
      return undefined;
    }
  }

  get current(): ServingStatus {
    return this.status;
  }

  set(status: ServingStatus): void {
    if (status === this.status) return;
    this.status = status;
    const frame = statusFrame(status);
    for (const [stream, service] of this.watchers) {
      if (this.known.has(service) && !stream.destroyed) stream.write(frame);
    }
  }

  /** End every Watch stream with grpc-status OK (shutdown). */
  closeWatchers(): void {
    this.closed = true;
    for (const stream of this.watchers.keys()) endStreaming(stream);
    this.watchers.clear();
    this.watchesOf.clear();
  }
}
