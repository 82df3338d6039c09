// gRPC over HTTP/2 (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md), server side,
// on node:http2 directly: what a server of unary and server-streaming methods needs.
//
// Why not grpc-js's server: Envoy makes one Check per request of every API behind it, and grpc-js
// spends more per call (interceptor chain, Metadata objects, call objects and their events) than
// Portcullis spends deciding. On the same machine a node:http2 server answering a fixed message
// does ~2.2x the calls per second of a grpc-js server doing the same. Clients (Envoy, grpc-js,
// grpc-go, h2load) see the same protocol either way.

import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import zlib from 'node:zlib';
import { GRPC_FRAME_HEADER } from './wire.js';

/** https://grpc.github.io/grpc/core/md_doc_statuscodes.html */
export const enum GrpcStatus {
  OK = 0,
  INVALID_ARGUMENT = 3,
  NOT_FOUND = 5,
  RESOURCE_EXHAUSTED = 8,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
}

/** Compressed-message encodings accepted from clients (responses are never compressed). */
const ACCEPT_ENCODING = 'identity,deflate,gzip';

const RESPONSE_HEADERS = Object.freeze({ ':status': 200, 'content-type': 'application/grpc' });
const OK_TRAILERS = Object.freeze({ 'grpc-status': '0' });
const RESPOND_THEN_TRAILERS = Object.freeze({ waitForTrailers: true });
const RESPOND_AND_END = Object.freeze({ endStream: true });

/** `message` as one uncompressed gRPC frame. */
export function grpcFrame(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(GRPC_FRAME_HEADER + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, GRPC_FRAME_HEADER);
  return out;
}

/** A stream that can no longer be answered: the client reset or cancelled it, or it was answered. */
export function unanswerable(stream: ServerHttp2Stream): boolean {
  return stream.destroyed || stream.closed || stream.headersSent;
}

/** HTTP 415 for a request that is not gRPC at all (the spec's answer to a wrong content-type). */
export function isGrpcRequest(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): boolean {
  const contentType = headers['content-type'];
  if (typeof contentType === 'string' && contentType.startsWith('application/grpc')) return true;
  stream.respond({ ':status': 415 }, RESPOND_AND_END);
  discardInput(stream);
  return false;
}

/** A unary call's answer: response headers, the one framed message, then grpc-status 0. */
export function sendUnary(stream: ServerHttp2Stream, framedMessage: Buffer): boolean {
  if (unanswerable(stream)) return false;
  stream.respond(RESPONSE_HEADERS, RESPOND_THEN_TRAILERS);
  stream.once('wantTrailers', sendOkTrailers);
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
  stream.respond({ ...RESPONSE_HEADERS, 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details), ...extra }, RESPOND_AND_END);
  discardInput(stream);
}

/** Read and drop whatever the client still sends, so no request body is buffered after an answer. */
function discardInput(stream: ServerHttp2Stream): void {
  stream.removeAllListeners('data');
  stream.resume();
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

/**
 * Collect the single request message of a unary (or server-streaming) call and hand it to
 * `onMessage`, or answer the call with the protocol error: too large (RESOURCE_EXHAUSTED, as
 * soon as the frame header says so, before the body is buffered), no message or a second one
 * (UNIMPLEMENTED, as grpc-js does), a truncated frame (INTERNAL), an encoding not supported
 * (UNIMPLEMENTED with grpc-accept-encoding). gzip and deflate messages are inflated with the
 * same size limit on their inflated size.
 */
export function readRequestMessage(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, maxBytes: number, onMessage: MessageHandler): void {
  let first: Buffer | undefined;
  let chunks: Buffer[] | undefined;
  let received = 0;
  let declaredChecked = false;
  stream.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (first === undefined) first = chunk;
    else (chunks ??= [first]).push(chunk);
    if (!declaredChecked && received >= GRPC_FRAME_HEADER) {
      declaredChecked = true;
      const head = chunks === undefined ? first : Buffer.concat(chunks, received);
      const declared = head.readUInt32BE(1);
      if (declared > maxBytes) {
        sendError(stream, GrpcStatus.RESOURCE_EXHAUSTED, `Received message larger than max (${declared} vs. ${maxBytes})`);
        first = chunks = undefined;
        return;
      }
    }
    if (received > GRPC_FRAME_HEADER + maxBytes) {
      // Within the limit by its header, yet more bytes follow: a second message.
      sendError(stream, GrpcStatus.UNIMPLEMENTED, 'Received a second request message for a unary method');
      first = chunks = undefined;
    }
  });
  stream.on('end', () => {
    if (stream.headersSent) return; // answered with an error while reading
    if (received === 0) return sendError(stream, GrpcStatus.UNIMPLEMENTED, 'Received no request message for a unary method');
    const body = chunks === undefined ? first! : Buffer.concat(chunks, received);
    if (received < GRPC_FRAME_HEADER) return sendError(stream, GrpcStatus.INTERNAL, 'Truncated gRPC message frame');
    const length = body.readUInt32BE(1);
    const end = GRPC_FRAME_HEADER + length;
    if (end > received) return sendError(stream, GrpcStatus.INTERNAL, 'Truncated gRPC message frame');
    if (end < received) return sendError(stream, GrpcStatus.UNIMPLEMENTED, 'Received a second request message for a unary method');
    const compressed = body[0];
    const message = body.subarray(GRPC_FRAME_HEADER, end);
    if (compressed === 0) return onMessage(stream, message);
    if (compressed !== 1) return sendError(stream, GrpcStatus.INTERNAL, `Invalid gRPC compressed flag ${compressed}`);
    inflate(stream, headers['grpc-encoding'], message, maxBytes, onMessage);
  });
}

function inflate(stream: ServerHttp2Stream, encoding: string | string[] | undefined, message: Buffer, maxBytes: number, onMessage: MessageHandler): void {
  if (encoding !== 'gzip' && encoding !== 'deflate') {
    if (encoding === undefined || encoding === 'identity') {
      return sendError(stream, GrpcStatus.INTERNAL, 'Compressed flag set on a message without grpc-encoding');
    }
    return sendError(stream, GrpcStatus.UNIMPLEMENTED, `Received message compressed with unsupported encoding "${String(encoding)}"`, {
      'grpc-accept-encoding': ACCEPT_ENCODING,
    });
  }
  const done = (err: Error | null, inflated: Buffer) => {
    if (!err) return onMessage(stream, inflated);
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      return sendError(stream, GrpcStatus.RESOURCE_EXHAUSTED, `Received message that decompresses to a size larger than ${maxBytes}`);
    }
    sendError(stream, GrpcStatus.INTERNAL, 'Failed to decompress message');
  };
  if (encoding === 'gzip') zlib.gunzip(message, { maxOutputLength: maxBytes }, done);
  else zlib.inflate(message, { maxOutputLength: maxBytes }, done);
}
