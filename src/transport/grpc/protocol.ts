// gRPC over HTTP/2 (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md), server side,
// on node:http2 directly: what a server of unary and server-streaming methods needs.
//
// Why not grpc-js's server: Envoy makes one Check per request of every API behind it, and grpc-js
// spends more per call (interceptor chain, Metadata objects, call objects and their events) than
// Portcullis spends deciding. On the same machine a node:http2 server answering a fixed message
// does ~2.2x the calls per second of a grpc-js server doing the same. Clients (Envoy, grpc-js,
// grpc-go, h2load) see the same protocol either way.

import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import zlib from 'node:zlib';
import { type ConnectionState, type Holder, type ResourceGovernor, type TransportLimits } from './limits.js';
import { GRPC_FRAME_HEADER, Writer } from './wire.js';

/** https://grpc.github.io/grpc/core/md_doc_statuscodes.html */
export const enum GrpcStatus {
  OK = 0,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  RESOURCE_EXHAUSTED = 8,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
}

/** Status names as grpc-go and the gRPC docs spell them (the `code` label of portcullis_grpc_errors_total). */
export const GRPC_STATUS_NAMES: Readonly<Record<number, string>> = Object.freeze({
  0: 'OK', 1: 'CANCELLED', 2: 'UNKNOWN', 3: 'INVALID_ARGUMENT', 4: 'DEADLINE_EXCEEDED', 5: 'NOT_FOUND', 6: 'ALREADY_EXISTS',
  7: 'PERMISSION_DENIED', 8: 'RESOURCE_EXHAUSTED', 9: 'FAILED_PRECONDITION', 10: 'ABORTED', 11: 'OUT_OF_RANGE',
  12: 'UNIMPLEMENTED', 13: 'INTERNAL', 14: 'UNAVAILABLE', 15: 'DATA_LOSS', 16: 'UNAUTHENTICATED',
});

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL } = http2.constants;

/** Compressed-message encodings accepted from clients (responses are never compressed). */
const ACCEPT_ENCODING = 'identity,deflate,gzip';

const RESPONSE_HEADERS = Object.freeze({ ':status': 200, 'content-type': 'application/grpc' });
const OK_TRAILERS = Object.freeze({ 'grpc-status': String(GrpcStatus.OK) });
const RESPOND_THEN_TRAILERS = Object.freeze({ waitForTrailers: true });
const RESPOND_AND_END = Object.freeze({ endStream: true });

/** `message` as one uncompressed gRPC frame. */
export function grpcFrame(message: Uint8Array): Buffer {
  const w = new Writer(message.length, GRPC_FRAME_HEADER);
  w.raw(message);
  return w.finishFrame();
}

/** A stream that can no longer be answered: the client reset or cancelled it, or it was answered. */
export function unanswerable(stream: ServerHttp2Stream): boolean {
  return stream.destroyed || stream.closed || stream.headersSent;
}

/** HTTP 415 for a request that is not gRPC at all (the spec's answer to a wrong content-type). */
export function isGrpcRequest(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): boolean {
  const contentType = headers['content-type'];
  if (typeof contentType === 'string' && contentType.startsWith('application/grpc')) return true;
  answerAndStop(stream, { ':status': 415 });
  return false;
}

/**
 * A complete answer in one HEADERS frame. If the client is still sending, the stream is then
 * reset with NO_ERROR (RFC 9113 §8.1): the answer is complete, stop sending.
 */
function answerAndStop(stream: ServerHttp2Stream, headers: http2.OutgoingHttpHeaders): void {
  stream.respond(headers, RESPOND_AND_END);
  if (!stream.readableEnded) {
    stream.removeAllListeners('data');
    stream.close(NGHTTP2_NO_ERROR);
  }
}

/** A unary call's answer: response headers, the one framed message, then grpc-status 0. */
export function sendUnary(stream: ServerHttp2Stream, framedMessage: Buffer): boolean {
  if (!startStreaming(stream)) return false;
  stream.end(framedMessage);
  return true;
}

/** Start a server-streaming answer; follow with `stream.write(frame)`, end with `endStreaming`. */
export function startStreaming(stream: ServerHttp2Stream): boolean {
  if (unanswerable(stream)) return false;
  stream.respond(RESPONSE_HEADERS, RESPOND_THEN_TRAILERS);
  // `on`, not `once`: node:http2 emits wantTrailers once per stream, and once() would allocate a
  // wrapper per call; sendOkTrailers ignores a stream whose trailers are already sent.
  stream.on('wantTrailers', sendOkTrailers);
  return true;
}

export function endStreaming(stream: ServerHttp2Stream): void {
  if (!stream.destroyed && !stream.writableEnded) stream.end();
}

function sendOkTrailers(this: ServerHttp2Stream): void {
  if (!this.destroyed && !this.closed && this.sentTrailers === undefined) this.sendTrailers(OK_TRAILERS);
}

/**
 * A "trailers-only" error answer: HTTP 200 whose only HEADERS frame carries grpc-status. Every
 * non-OK status a server sends goes through here, and is told to the session's error sink.
 */
export function sendError(stream: ServerHttp2Stream, code: GrpcStatus, details: string, extra?: Record<string, string>): void {
  if (unanswerable(stream)) return;
  (stream.session as GovernedSession | undefined)?.[ERROR_SINK]?.(code);
  answerAndStop(stream, { ...RESPONSE_HEADERS, 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details), ...extra });
}

/** grpc-message is percent-encoded UTF-8: bytes outside printable ASCII, and '%', become %XX. */
export function encodeGrpcMessage(details: string): string {
  let plain = true;
  for (let i = 0; i < details.length; i++) {
    const c = details.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return details;
  let out = '';
  for (const byte of Buffer.from(details, 'utf8')) {
    out += byte < 0x20 || byte > 0x7e || byte === 0x25 ? `%${byte.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(byte);
  }
  return out;
}

/** Handles a call's request message; `reader` is the reader that read it (answer with `reader.answer`). */
export type MessageHandler = (stream: ServerHttp2Stream, message: Buffer, reader: RequestReader) => void;

/** The connection state of a session (set by the server when the session opens). */
export const CONNECTION = Symbol('portcullis.connection');
/** Told the status of every error answer on a session (the server's error counter). */
const ERROR_SINK = Symbol('portcullis.grpcErrors');
export type GrpcErrorSink = (code: GrpcStatus) => void;
type GovernedSession = http2.ServerHttp2Session & { [CONNECTION]?: ConnectionState; [ERROR_SINK]?: GrpcErrorSink };

export function connectionOf(stream: ServerHttp2Stream): ConnectionState | undefined {
  return (stream.session as GovernedSession | undefined)?.[CONNECTION];
}

export function attachConnection(session: http2.ServerHttp2Session, state: ConnectionState, errors?: GrpcErrorSink): void {
  (session as GovernedSession)[CONNECTION] = state;
  if (errors) (session as GovernedSession)[ERROR_SINK] = errors;
}

/** Fixed charge for one inflation in progress: zlib's window and state, and its output chunk. */
const INFLATE_OVERHEAD = 64 * 1024;

const OVER_BUDGET = 'Request memory budget exhausted for this connection; retry later';

/**
 * Collects request messages for one server and enforces its limits: every byte received or
 * inflated is charged to the server's ResourceGovernor (limits.ts) as it arrives, and a request
 * that does not fit is answered RESOURCE_EXHAUSTED at once (its bytes dropped, so no window is
 * granted for bytes that cannot be afforded). The read deadline is swept by one timer over two
 * generations of streams (a stream unfinished for a whole generation is expired, so after
 * readTimeoutMs to twice that), which costs a Set insert per call instead of a timer per call.
 *
 * A unary call (a check, its 503 `overloaded` refusal, a health Check) stays under that deadline
 * until it is answered, and then under a second, shorter one until its stream closes: an answer
 * the client never takes (its flow-control window stays shut) would otherwise keep the stream open,
 * holding a check in flight and its connection busy — a few such connections held every admission
 * slot and the whole connection cap, and under the read deadline alone a client re-opening ~100
 * stalled streams a second still kept in-flight near maxInFlight. The answer deadline is swept
 * by a second timer every answerTimeoutMs / 2 over three generations (an answer is reset after
 * answerTimeoutMs to 1.5 times that): the stream is reset with CANCEL, which ends its time in
 * flight, and a connection with stalled answers in two sweeps in a row — it is not reading — is
 * closed (`onStalled`). Moving a stream from the read sets to the answer sets is two Set
 * operations per call; nothing per call is scheduled.
 */
export class RequestReader {
  private current = new Set<ServerHttp2Stream>();
  private previous = new Set<ServerHttp2Stream>();
  private readonly sweeper: NodeJS.Timeout;
  /** Answers written and not yet taken, youngest first (answer deadline). */
  private answersNew = new Set<ServerHttp2Stream>();
  private answersMid = new Set<ServerHttp2Stream>();
  private answersOld = new Set<ServerHttp2Stream>();
  /** Streams the last answer sweep reset: destroyed at the next one if they are still open. */
  private resetting: ServerHttp2Stream[] = [];
  /** Connections with stalled answers in the last answer sweep. */
  private stalling = new Set<ConnectionState>();
  private answerSweeper: NodeJS.Timeout;
  private answerSweepMs: number;
  /** Told when a request is refused for the memory budget (metrics, a throttled log line). */
  onOverBudget: () => void = () => undefined;
  /** Told when a connection is closed because it did not take its answers within the deadline. */
  onStalled: () => void = () => undefined;
  /** Told when an answer not taken within answerTimeoutMs is reset. */
  onAnswerReset: () => void = () => undefined;

  constructor(
    readonly governor: ResourceGovernor,
    /** A bug, not a protocol error, while answering `stream`: end that call, never the process. */
    readonly failed: (stream: ServerHttp2Stream, err: unknown) => void,
  ) {
    this.sweeper = setInterval(() => this.sweep(), governor.limits.readTimeoutMs);
    this.sweeper.unref();
    this.answerSweepMs = answerSweepMs(governor.limits);
    this.answerSweeper = this.scheduleAnswerSweep();
  }

  get limits(): TransportLimits {
    return this.governor.limits;
  }

  /** Request bytes held right now, process-wide. */
  get buffered(): number {
    return this.governor.used;
  }

  close(): void {
    clearInterval(this.sweeper);
    clearInterval(this.answerSweeper);
  }

  /** The limits changed (a policy reload): a new answerTimeout applies from the next sweep. */
  limitsChanged(): void {
    const every = answerSweepMs(this.limits);
    if (every === this.answerSweepMs) return;
    clearInterval(this.answerSweeper);
    this.answerSweepMs = every;
    this.answerSweeper = this.scheduleAnswerSweep();
  }

  private scheduleAnswerSweep(): NodeJS.Timeout {
    const timer = setInterval(() => this.sweepAnswers(), this.answerSweepMs);
    timer.unref();
    return timer;
  }

  /**
   * Read the single request message of a unary (or server-streaming) call and hand it to
   * `onMessage`, or answer the call with the protocol error: too large (RESOURCE_EXHAUSTED, as
   * soon as the frame header says so), over the memory budget (RESOURCE_EXHAUSTED), no message or
   * a second one (UNIMPLEMENTED, as grpc-js), a truncated frame (INTERNAL), an encoding not
   * supported (UNIMPLEMENTED with grpc-accept-encoding). gzip and deflate messages are inflated
   * under the same size limit and budget.
   */
  read(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    onMessage: MessageHandler,
    maxBytes = this.limits.maxMessageBytes,
    admittedCheck = false,
    unary = admittedCheck,
  ): void {
    const connection = connectionOf(stream);
    if (connection === undefined) return; // the session is already gone
    this.current.add(stream);
    this.governor.opened(connection);
    new PendingRequest(this, connection, stream, headers, onMessage, maxBytes, admittedCheck, unary);
  }

  /**
   * Answer a unary call read with `read` (a framed message, then grpc-status 0): from now on it is
   * under the answer deadline instead of the read deadline. False when it can no longer be answered.
   */
  answer(stream: ServerHttp2Stream, framedMessage: Buffer): boolean {
    if (!sendUnary(stream, framedMessage)) return false;
    if (!this.current.delete(stream)) this.previous.delete(stream);
    this.answersNew.add(stream);
    return true;
  }

  /** Answer a call without reading it (503 `overloaded`): under the answer deadline until it closes. */
  answerUnread(stream: ServerHttp2Stream, framedMessage: Buffer): void {
    if (!sendUnary(stream, framedMessage)) return;
    this.answersNew.add(stream);
    stream.once('close', () => this.settled(stream));
  }

  /** The read is over (message handed on, error answered, or stream gone), or the stream closed. */
  settled(stream: ServerHttp2Stream): void {
    if (this.answersNew.delete(stream) || this.current.delete(stream) || this.answersMid.delete(stream) || this.answersOld.delete(stream)) return;
    this.previous.delete(stream);
  }

  /** Run a handler; a throw ends that call (INTERNAL, or a reset), never the process. */
  deliver(stream: ServerHttp2Stream, onMessage: MessageHandler, message: Buffer): void {
    if (unanswerable(stream)) return; // the client reset the call while it was being read or inflated
    try {
      onMessage(stream, message, this);
    } catch (err) {
      this.failed(stream, err);
    }
  }

  private sweep(): void {
    for (const stream of this.previous) {
      try {
        if (stream.headersSent && !stream.destroyed && !stream.closed) {
          // Answered, and the answer is still not taken: the client is not reading this connection.
          this.onStalled();
          stream.session?.destroy();
        } else {
          sendError(stream, GrpcStatus.DEADLINE_EXCEEDED, `Request not received within ${this.limits.readTimeoutMs} ms`);
        }
        if (!stream.destroyed && !stream.closed) stream.close(NGHTTP2_CANCEL);
      } catch {
        stream.destroy();
      }
    }
    this.previous = this.current;
    this.current = new Set();
  }

  /**
   * Reset the answers written at least answerTimeoutMs ago and still not taken; close a connection
   * that had such answers in the previous sweep too (or two in this one): it is not reading.
   */
  private sweepAnswers(): void {
    for (const stream of this.resetting) if (!stream.destroyed && !stream.closed) stream.destroy();
    this.resetting = [];
    const expired = this.answersOld;
    this.answersOld = this.answersMid;
    this.answersMid = this.answersNew;
    this.answersNew = new Set();
    const stalling = new Set<ConnectionState>();
    for (const stream of expired) {
      if (stream.destroyed || stream.closed) continue;
      this.onAnswerReset();
      const connection = connectionOf(stream);
      const session = stream.session;
      try {
        stream.close(NGHTTP2_CANCEL);
        this.resetting.push(stream);
      } catch {
        stream.destroy();
      }
      if (connection === undefined) continue;
      if (!stalling.has(connection)) {
        if (!this.stalling.has(connection)) connection.stalledAnswers = 0;
        stalling.add(connection);
      }
      if (++connection.stalledAnswers === STALLED_ANSWERS_BEFORE_CLOSE && session !== undefined && !session.destroyed) {
        this.onStalled();
        session.destroy();
      }
    }
    for (const connection of this.stalling) if (!stalling.has(connection)) connection.stalledAnswers = 0;
    this.stalling = stalling;
  }
}

/** Stalled answers of one connection, in consecutive answer sweeps, at which it is closed. */
const STALLED_ANSWERS_BEFORE_CLOSE = 2;

/** The answer sweep's interval: half the deadline (three generations: reset after 1–1.5× it). */
function answerSweepMs(limits: TransportLimits): number {
  return Math.max(25, Math.floor(limits.answerTimeoutMs / 2));
}

/** The request a stream is receiving, for the stream's listeners (one set of functions for all streams). */
const PENDING = Symbol('portcullis.pendingRequest');
type PendingStream = ServerHttp2Stream & { [PENDING]: PendingRequest };

function onPendingData(this: PendingStream, chunk: Buffer): void {
  const pending = this[PENDING];
  try {
    pending.data(chunk);
  } catch (err) {
    pending.crashed(err);
  }
}

function onPendingEnd(this: PendingStream): void {
  const pending = this[PENDING];
  try {
    pending.end();
  } catch (err) {
    pending.crashed(err);
  }
}

function onPendingClose(this: PendingStream): void {
  this[PENDING].closed();
}

/** One call's request being received. */
class PendingRequest implements Holder {
  counted = 0;
  private first: Buffer | undefined;
  private chunks: Buffer[] | undefined;
  private received = 0;
  private declared = -1;
  private done = false;

  constructor(
    private readonly reader: RequestReader,
    private readonly connection: ConnectionState,
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly onMessage: MessageHandler,
    private readonly maxBytes: number,
    private readonly admittedCheck: boolean,
    /** Under the deadline until the stream closes (answer taken), not only until the request is read. */
    private readonly unary: boolean,
  ) {
    (stream as PendingStream)[PENDING] = this;
    stream.on('data', onPendingData);
    stream.on('end', onPendingEnd);
    // A reset stream never ends: settle it here, or the deadline sweep would hold it. The stream's
    // close (answered and written, or reset) also ends its time open and in flight.
    stream.on('close', onPendingClose);
  }

  /** The stream closed (answered and written, or reset). */
  closed(): void {
    this.settle();
    if (this.unary) this.reader.settled(this.stream);
    this.reader.governor.closed(this.connection, this.admittedCheck);
  }

  data(chunk: Buffer): void {
    if (this.done) return;
    // Every byte held counts against the process-wide budget, small messages included.
    if (!this.reader.governor.charge(this.connection, this, chunk.length)) return this.overBudget();
    this.received += chunk.length;
    if (this.first === undefined) this.first = chunk;
    else (this.chunks ??= [this.first]).push(chunk);
    if (this.declared < 0 && this.received >= GRPC_FRAME_HEADER) {
      this.declared = this.whole().readUInt32BE(1);
      if (this.declared > this.maxBytes) return this.fail(GrpcStatus.RESOURCE_EXHAUSTED, `Received message larger than max (${this.declared} vs. ${this.maxBytes})`);
    }
    if (this.declared >= 0 && this.received > GRPC_FRAME_HEADER + this.declared) {
      return this.fail(GrpcStatus.UNIMPLEMENTED, 'Received a second request message for a unary method');
    }
  }

  /** The budget is full and this connection is over its share: refuse this request. */
  evict(): void {
    this.overBudget();
  }

  private overBudget(): void {
    this.fail(GrpcStatus.RESOURCE_EXHAUSTED, OVER_BUDGET);
    this.reader.onOverBudget();
  }

  end(): void {
    if (this.done) return;
    const { stream, received } = this;
    if (received === 0) return this.fail(GrpcStatus.UNIMPLEMENTED, 'Received no request message for a unary method');
    if (received < GRPC_FRAME_HEADER || received < GRPC_FRAME_HEADER + this.declared) return this.fail(GrpcStatus.INTERNAL, 'Truncated gRPC message frame');
    const body = this.whole();
    const flag = body[0];
    const message = body.subarray(GRPC_FRAME_HEADER, received);
    this.settle();
    if (flag === 1) return inflate(this.reader, this.connection, stream, this.headers['grpc-encoding'], message, this.maxBytes, this.onMessage);
    if (flag !== 0) return sendError(stream, GrpcStatus.INTERNAL, `Invalid gRPC compressed flag ${flag}`);
    this.reader.deliver(stream, this.onMessage, message);
  }

  private whole(): Buffer {
    if (this.chunks !== undefined) {
      this.first = Buffer.concat(this.chunks, this.received);
      this.chunks = undefined;
    }
    return this.first!;
  }

  private fail(code: GrpcStatus, details: string): void {
    this.settle();
    this.first = this.chunks = undefined;
    sendError(this.stream, code, details);
  }

  /** A bug, not a protocol error: end this call (INTERNAL), never the process. */
  crashed(err: unknown): void {
    this.settle();
    this.reader.failed(this.stream, err);
  }

  private settle(): void {
    if (this.done) return;
    this.done = true;
    this.reader.governor.release(this);
    if (!this.unary) this.reader.settled(this.stream);
  }
}

/**
 * Inflate a compressed request message chunk by chunk, every output byte charged to the budget
 * (plus a fixed charge for zlib's state): a 4 KiB message that inflates to 4 MiB costs 4 MiB of
 * budget while it is inflated, and is refused as soon as it does not fit.
 */
function inflate(reader: RequestReader, connection: ConnectionState, stream: ServerHttp2Stream, encoding: string | string[] | undefined, message: Buffer, maxBytes: number, onMessage: MessageHandler): void {
  if (encoding !== 'gzip' && encoding !== 'deflate') {
    if (encoding === undefined || encoding === 'identity') {
      return sendError(stream, GrpcStatus.INTERNAL, 'Compressed flag set on a message without grpc-encoding');
    }
    return sendError(stream, GrpcStatus.UNIMPLEMENTED, `Received message compressed with unsupported encoding "${String(encoding).slice(0, 64)}"`, {
      'grpc-accept-encoding': ACCEPT_ENCODING,
    });
  }
  new Inflation(reader, connection, stream, encoding, message, maxBytes, onMessage);
}

class Inflation implements Holder {
  counted = 0;
  private readonly zlib: zlib.Gunzip | zlib.Inflate;
  private readonly chunks: Buffer[] = [];
  private inflated = 0;
  private done = false;

  constructor(
    private readonly reader: RequestReader,
    private readonly connection: ConnectionState,
    private readonly stream: ServerHttp2Stream,
    encoding: 'gzip' | 'deflate',
    message: Buffer,
    private readonly maxBytes: number,
    private readonly onMessage: MessageHandler,
  ) {
    this.zlib = encoding === 'gzip' ? zlib.createGunzip() : zlib.createInflate();
    this.zlib.on('error', () => this.finish(GrpcStatus.INTERNAL, 'Failed to decompress message'));
    if (!reader.governor.charge(connection, this, message.length + INFLATE_OVERHEAD)) {
      this.evict();
      return;
    }
    this.zlib.on('data', (chunk: Buffer) => this.data(chunk));
    this.zlib.on('end', () => this.end());
    stream.once('close', () => this.finish());
    this.zlib.end(message);
  }

  private data(chunk: Buffer): void {
    if (this.done) return;
    this.inflated += chunk.length;
    if (this.inflated > this.maxBytes) return this.finish(GrpcStatus.RESOURCE_EXHAUSTED, `Received message that decompresses to a size larger than ${this.maxBytes}`);
    if (!this.reader.governor.charge(this.connection, this, chunk.length)) return this.evict();
    this.chunks.push(chunk);
  }

  private end(): void {
    if (this.done) return;
    const message = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.inflated);
    this.finish();
    this.reader.deliver(this.stream, this.onMessage, message);
  }

  evict(): void {
    this.finish(GrpcStatus.RESOURCE_EXHAUSTED, OVER_BUDGET);
    this.reader.onOverBudget();
  }

  /** Stop inflating, release the budget, and answer `code` when given. Never throws. */
  private finish(code?: GrpcStatus, details?: string): void {
    if (this.done) return;
    this.done = true;
    this.chunks.length = 0;
    this.reader.governor.release(this);
    try {
      if (!this.zlib.destroyed) this.zlib.destroy();
      if (code !== undefined) sendError(this.stream, code, details!);
    } catch (err) {
      this.reader.failed(this.stream, err);
    }
  }
}
