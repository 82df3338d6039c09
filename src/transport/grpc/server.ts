// gRPC transport: envoy.service.auth.v3.Authorization/Check and grpc.health.v1.Health on one
// HTTP/2 port. A thin adapter: request frame → decodeCheckRequest → Authorizer →
// encodeCheckResponseFrame. The protocol rules live in protocol.ts (why not grpc-js: see there).

import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { Authorizer } from '../../pipeline/authorizer.js';
import { internalError } from '../../pipeline/authorize.js';
import type { Logger } from '../../observability/logger.js';
import { isPromise, type Decision, type RequestAttributes } from '../../types.js';
import { decodeCheckRequest, NO_HTTP_ATTRIBUTES, WireError } from './decode.js';
import { encodeCheckResponseFrame } from './encode.js';
import { HEALTH_CHECK_PATH, HEALTH_WATCH_PATH, HealthService } from './health.js';
import { GrpcStatus, isGrpcRequest, RequestReader, sendError, sendUnary, unanswerable } from './protocol.js';

export const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization';
const CHECK_PATH = `/${AUTHORIZATION_SERVICE}/Check`;
const PORTCULLIS = { realm: 'portcullis' };

export interface GrpcServerOptions {
  bind: string;
  port: number;
  /** Largest CheckRequest accepted (bytes). Envoy's default header limit is 60 KiB; bodies add more. */
  maxMessageBytes?: number;
  /** A request still arriving after this long is answered DEADLINE_EXCEEDED (a client trickling bytes). */
  readTimeoutMs?: number;
  /** Bytes that partly received large requests may hold together. */
  maxBufferedBytes?: number;
}

export class GrpcTransport {
  readonly health = new HealthService([AUTHORIZATION_SERVICE]);
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly reader: RequestReader;
  private inFlight = 0;
  boundPort = 0;

  constructor(
    private readonly authorizer: Authorizer,
    private readonly logger: Logger,
    private readonly options: GrpcServerOptions,
  ) {
    this.reader = new RequestReader(
      {
        maxMessageBytes: options.maxMessageBytes ?? 4 * 1024 * 1024,
        readTimeoutMs: options.readTimeoutMs ?? 10_000,
        maxBufferedBytes: options.maxBufferedBytes ?? 256 * 1024 * 1024,
      },
      (stream, err) => this.failed(stream, err),
    );
    this.server = http2.createServer({
      // Envoy keeps a few connections and multiplexes checks on them (and opens another at this
      // limit); bound what one connection may hold open.
      settings: { maxConcurrentStreams: 1024 },
      // Node refuses new streams once a session's nghttp2 memory passes this (default 10 MB), and
      // a refused check is a denied request. The limits above bound memory; as grpc-js does.
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
    });
    this.server.on('stream', this.onStream);
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
    });
    // A peer that went away without a FIN is noticed by TCP keepalive rather than never.
    this.server.on('connection', (socket: Socket) => socket.setKeepAlive(true, 60_000));
    this.server.on('sessionError', (err: Error) => this.logger.debug({ err: err.message }, 'HTTP/2 session error'));
  }

  async start(): Promise<number> {
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.bind, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as AddressInfo).port);
      });
    });
    this.server.on('error', (err: Error) => this.logger.error({ err: err.message }, 'gRPC server error'));
    return this.boundPort;
  }

  /** Checks currently being answered (drain waits for zero). */
  get pending(): number {
    return this.inFlight;
  }

  /**
   * Stop accepting connections, send GOAWAY on every connection so clients move to another
   * replica, let in-flight calls finish, and close what is left after `timeoutMs`.
   */
  async shutdown(timeoutMs: number): Promise<void> {
    this.reader.close();
    const closed = Promise.all([
      this.server.listening ? new Promise<void>((resolve) => this.server.close(() => resolve())) : undefined,
      ...[...this.sessions].map((session) => new Promise<void>((resolve) => (session.closed ? resolve() : session.once('close', () => resolve())))),
    ]);
    for (const session of this.sessions) session.close();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs);
    });
    if (await Promise.race([closed.then(() => false), timedOut])) {
      this.logger.warn({ pending: this.inFlight, connections: this.sessions.size }, 'drain timeout; closing remaining gRPC connections');
      for (const session of this.sessions) session.destroy();
      await closed;
    }
    clearTimeout(timer);
  }

  private readonly onStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void => {
    // A reset stream emits 'error'; unhandled, that would end the process.
    stream.on('error', ignoreStreamError);
    try {
      if (!isGrpcRequest(stream, headers)) return;
      const path = headers[':path'];
      if (path === CHECK_PATH) this.reader.read(stream, headers, this.check);
      else if (path === HEALTH_CHECK_PATH || path === HEALTH_WATCH_PATH) this.health.serve(this.reader, stream, headers, path);
      else sendError(stream, GrpcStatus.UNIMPLEMENTED, `The server does not implement the method ${String(path).slice(0, 200)}`);
    } catch (err) {
      this.failed(stream, err);
    }
  };

  private readonly check = (stream: http2.ServerHttp2Stream, message: Buffer): void => {
    let request: RequestAttributes & { [NO_HTTP_ATTRIBUTES]?: boolean };
    try {
      request = decodeCheckRequest(message);
    } catch (err) {
      // Not a CheckRequest at all: the one case that is an RPC error rather than a denial.
      const details = err instanceof WireError ? `malformed CheckRequest: ${err.message}` : 'malformed CheckRequest';
      this.logger.info({ err: details }, 'rejected undecodable CheckRequest');
      sendError(stream, GrpcStatus.INVALID_ARGUMENT, details);
      return;
    }
    this.inFlight++;
    let decision;
    try {
      decision = this.authorizer.check(request, request[NO_HTTP_ATTRIBUTES] === true);
    } catch (err) {
      decision = internalError(PORTCULLIS, request, 'unknown', err);
    }
    if (isPromise(decision)) {
      decision
        .then(
          (d) => this.reply(stream, request, d),
          (err: unknown) => this.reply(stream, request, internalError(PORTCULLIS, request, 'unknown', err)),
        )
        .catch((err: unknown) => this.failed(stream, err));
    } else {
      this.reply(stream, request, decision);
    }
  };

  private reply(stream: http2.ServerHttp2Stream, request: RequestAttributes, decision: Decision): void {
    this.inFlight--;
    let frame: Buffer;
    try {
      frame = encodeCheckResponseFrame(decision);
    } catch (err) {
      this.logger.error({ err: (err as Error)?.message, requestId: request.requestId }, 'failed to encode CheckResponse; answering 503');
      frame = encodeCheckResponseFrame(internalError(PORTCULLIS, request, 'unknown', err));
    }
    // Nothing is sent when Envoy already gave up on this check (its timeout) and reset the stream.
    sendUnary(stream, frame);
  }

  /** A failure in the transport itself (never a decision): end that call, never the process. */
  private failed(stream: http2.ServerHttp2Stream, err: unknown): void {
    try {
      this.logger.error({ err: (err as Error)?.message }, 'gRPC transport error');
      if (!unanswerable(stream)) sendError(stream, GrpcStatus.INTERNAL, 'internal error');
      else if (!stream.destroyed && !stream.closed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    } catch {
      stream.destroy();
    }
  }
}

function ignoreStreamError(): void {
  // The stream is gone (client reset, connection closed); its call can no longer be answered.
}
