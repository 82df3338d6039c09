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
  stream.once('wantTrailers', sendOkTrailers);
  return true;
}

export function endStreaming(stream: ServerHttp2Stream): void {
  if (!stream.destroyed && !stream.writableEnded) stream.end();
}

function sendOkTrailers(this: ServerHttp2Stream): void {
  if (!this.destroyed) this.sendTrailers(OK_TRAILERS);
}

/** A "trailers-only" error answer: HTTP 200 whose only HEADERS frame carries grpc-status. */
export function sendError(stream: ServerHttp2Stream, code: GrpcStatus, details: string, extra?: Record<string, string>): void {
  if (unanswerable(stream)) return;
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

export type MessageHandler = (stream: ServerHttp2Stream, message: Buffer) => void;

/** Limits shared by every request being read on one server. */
export interface ReadLimits {
  /** Largest message, before and after inflating. */
  maxMessageBytes: number;
  /** Requests still being read after this long (a client trickling bytes) get DEADLINE_EXCEEDED. */
  readTimeoutMs: number;
  /** Bytes all partly received messages larger than BIG_MESSAGE may hold together. */
  maxBufferedBytes: number;
}

/** Below this a message is not counted against maxBufferedBytes (Envoy's checks are a few KiB). */
const BIG_MESSAGE = 64 * 1024;

/**
 * Collects request messages for one server and enforces its limits. The read deadline is swept
 * by one timer over two generations of streams (a stream unfinished for a whole generation is
 * expired, so after readTimeoutMs to twice that), which costs a Set insert per call instead of a
 * timer per call.
 */
export class RequestReader {
  private current = new Set<ServerHttp2Stream>();
  private previous = new Set<ServerHttp2Stream>();
  private readonly sweeper: NodeJS.Timeout;
  /** Bytes held by partly received big messages. */
  buffered = 0;

  constructor(
    readonly limits: ReadLimits,
    /** A bug, not a protocol error, while answering `stream`: end that call, never the process. */
    readonly failed: (stream: ServerHttp2Stream, err: unknown) => void,
  ) {
    this.sweeper = setInterval(() => this.sweep(), limits.readTimeoutMs);
    this.sweeper.unref();
  }

  close(): void {
    clearInterval(this.sweeper);
  }

  /**
   * Read the single request message of a unary (or server-streaming) call and hand it to
   * `onMessage`, or answer the call with the protocol error: too large (RESOURCE_EXHAUSTED, as
   * soon as the frame header says so), no message or a second one (UNIMPLEMENTED, as grpc-js),
   * a truncated frame (INTERNAL), an encoding not supported (UNIMPLEMENTED with
   * grpc-accept-encoding). gzip and deflate messages are inflated under the same size limit.
   */
  read(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, onMessage: MessageHandler, maxBytes = this.limits.maxMessageBytes): void {
    this.current.add(stream);
    new PendingRequest(this, stream, headers, onMessage, maxBytes);
  }

  /** The read is over (message handed on, error answered, or stream gone). */
  settled(stream: ServerHttp2Stream, counted: number): void {
    if (!this.current.delete(stream)) this.previous.delete(stream);
    this.buffered -= counted;
  }

  /** Run a handler; a throw ends that call (INTERNAL, or a reset), never the process. */
  deliver(stream: ServerHttp2Stream, onMessage: MessageHandler, message: Buffer): void {
    if (unanswerable(stream)) return; // the client reset the call while it was being read or inflated
    try {
      onMessage(stream, message);
    } catch (err) {
      this.failed(stream, err);
    }
  }

  private sweep(): void {
    for (const stream of this.previous) {
      try {
        sendError(stream, GrpcStatus.DEADLINE_EXCEEDED, `Request not received within ${this.limits.readTimeoutMs} ms`);
        if (!stream.destroyed && !stream.closed) stream.close(NGHTTP2_CANCEL);
      } catch {
        stream.destroy();
      }
    }
    this.previous = this.current;
    this.current = new Set();
  }
}

/** One call's request being received. */
class PendingRequest {
  private first: Buffer | undefined;
  private chunks: Buffer[] | undefined;
  private received = 0;
  private declared = -1;
  private counted = 0;
  private done = false;

  constructor(
    private readonly reader: RequestReader,
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly onMessage: MessageHandler,
    private readonly maxBytes: number,
  ) {
    stream.on('data', (chunk: Buffer) => {
      try {
        this.data(chunk);
      } catch (err) {
        this.crashed(err);
      }
    });
    stream.on('end', () => {
      try {
        this.end();
      } catch (err) {
        this.crashed(err);
      }
    });
    // A reset stream never ends: settle it here, or the deadline sweep would hold it.
    stream.on('close', () => this.settle());
  }

  private data(chunk: Buffer): void {
    if (this.done) return;
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
    if (this.received > BIG_MESSAGE) this.count(chunk.length);
  }

  /** Big messages arriving in parts count against the server-wide buffer budget. */
  private count(bytes: number): void {
    const reader = this.reader;
    if (this.counted === 0) bytes = this.received; // everything so far
    this.counted += bytes;
    reader.buffered += bytes;
    if (reader.buffered > reader.limits.maxBufferedBytes) {
      this.fail(GrpcStatus.RESOURCE_EXHAUSTED, 'Too many large requests are being received; retry later');
    }
  }

  private end(): void {
    if (this.done) return;
    const { stream, received } = this;
    if (received === 0) return this.fail(GrpcStatus.UNIMPLEMENTED, 'Received no request message for a unary method');
    if (received < GRPC_FRAME_HEADER || received < GRPC_FRAME_HEADER + this.declared) return this.fail(GrpcStatus.INTERNAL, 'Truncated gRPC message frame');
    const body = this.whole();
    const flag = body[0];
    const message = body.subarray(GRPC_FRAME_HEADER, received);
    this.settle();
    if (flag === 1) return inflate(this.reader, stream, this.headers['grpc-encoding'], message, this.maxBytes, this.onMessage);
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
  private crashed(err: unknown): void {
    this.settle();
    this.reader.failed(this.stream, err);
  }

  private settle(): void {
    if (this.done) return;
    this.done = true;
    this.reader.settled(this.stream, this.counted);
  }
}

function inflate(reader: RequestReader, stream: ServerHttp2Stream, encoding: string | string[] | undefined, message: Buffer, maxBytes: number, onMessage: MessageHandler): void {
  if (encoding !== 'gzip' && encoding !== 'deflate') {
    if (encoding === undefined || encoding === 'identity') {
      return sendError(stream, GrpcStatus.INTERNAL, 'Compressed flag set on a message without grpc-encoding');
    }
    return sendError(stream, GrpcStatus.UNIMPLEMENTED, `Received message compressed with unsupported encoding "${String(encoding).slice(0, 64)}"`, {
      'grpc-accept-encoding': ACCEPT_ENCODING,
    });
  }
  const done = (err: Error | null, inflated: Buffer) => {
    if (!err) return reader.deliver(stream, onMessage, inflated);
    try {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        sendError(stream, GrpcStatus.RESOURCE_EXHAUSTED, `Received message that decompresses to a size larger than ${maxBytes}`);
      } else {
        sendError(stream, GrpcStatus.INTERNAL, 'Failed to decompress message');
      }
    } catch (failure) {
      reader.failed(stream, failure);
    }
  };
  if (encoding === 'gzip') zlib.gunzip(message, { maxOutputLength: maxBytes }, done);
  else zlib.inflate(message, { maxOutputLength: maxBytes }, done);
}
