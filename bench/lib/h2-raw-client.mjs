// A minimal HTTP/2 client for gRPC unary calls, written for load generation: requests are
// pre-framed bytes, responses are parsed frame by frame with no per-stream objects beyond a small
// record. Node's http2 client costs ~50 µs of CPU per stream, too much to drive a server to its
// limit from one core; this costs a few µs.
//
// It speaks just enough HTTP/2 to be correct against grpc-js (nghttp2): the connection preface,
// SETTINGS (with a zero HPACK dynamic table, so responses use only the static table and literals),
// flow control in both directions, PING and GOAWAY. HPACK decoding is partial on purpose: it finds
// `:status` and `grpc-status`, the two headers a load generator must check.

import net from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 };
const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 };
const MAX_WINDOW = 0x7fffffff;

// Huffman codes (RFC 7541 appendix B) of the few symbols needed to recognise "grpc-status" and
// short status values when the server chose to Huffman-encode them.
const HUFFMAN = {
  '0': [0x0, 5], '1': [0x1, 5], '2': [0x2, 5], a: [0x3, 5], c: [0x4, 5], e: [0x5, 5], i: [0x6, 5], o: [0x7, 5], s: [0x8, 5], t: [0x9, 5],
  '-': [0x16, 6], '3': [0x19, 6], '4': [0x1a, 6], '5': [0x1b, 6], '6': [0x1c, 6], '7': [0x1d, 6], '8': [0x1e, 6], '9': [0x1f, 6],
  g: [0x26, 6], p: [0x2b, 6], r: [0x2c, 6], u: [0x2d, 6],
};

/** Huffman-encode a string made of the symbols above (padding with the EOS prefix, all ones). */
export function huffmanEncode(text) {
  let bits = 0n;
  let length = 0;
  for (const char of text) {
    const [code, size] = HUFFMAN[char] ?? [];
    if (size === undefined) throw new Error(`no Huffman code for ${JSON.stringify(char)}`);
    bits = (bits << BigInt(size)) | BigInt(code);
    length += size;
  }
  const padding = (8 - (length % 8)) % 8;
  bits = (bits << BigInt(padding)) | ((1n << BigInt(padding)) - 1n);
  const bytes = Buffer.alloc((length + padding) / 8);
  for (let i = bytes.length - 1; i >= 0; i--, bits >>= 8n) bytes[i] = Number(bits & 0xffn);
  return bytes;
}

// HPACK static table entries with the name :status (indices 8..14) and their values.
const STATIC_STATUS = { 8: '200', 9: '204', 10: '206', 11: '304', 12: '400', 13: '404', 14: '500' };
const GRPC_STATUS = Buffer.from('grpc-status', 'latin1');
const GRPC_STATUS_HUFFMAN = huffmanEncode('grpc-status');
/** Huffman forms of the values we may need to read back (nghttp2 uses Huffman when it is shorter). */
const HUFFMAN_VALUES = ['200', '0', '1', '2', '4', '7', '8', '13', '14', '16'].map((v) => [huffmanEncode(v), v]);

function readInteger(block, offset, prefixBits) {
  const mask = (1 << prefixBits) - 1;
  let value = block[offset++] & mask;
  if (value < mask) return [value, offset];
  let shift = 0;
  for (;;) {
    const byte = block[offset++];
    if (byte === undefined) throw new Error('hpack: truncated integer');
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if (byte < 0x80) return [value, offset];
  }
}

function readString(block, offset) {
  const huffman = (block[offset] & 0x80) !== 0;
  const [length, start] = readInteger(block, offset, 7);
  if (start + length > block.length) throw new Error('hpack: truncated string');
  return [block.subarray(start, start + length), huffman, start + length];
}

function stringValue(bytes, huffman) {
  if (!huffman) return bytes.toString('latin1');
  for (const [encoded, value] of HUFFMAN_VALUES) if (encoded.equals(bytes)) return value;
  return '?';
}

/**
 * Finds :status and grpc-status in a header block encoded with the static table only (we
 * advertise SETTINGS_HEADER_TABLE_SIZE 0). Returns { status, grpcStatus } (strings, or undefined).
 */
export function decodeStatusHeaders(block) {
  let status;
  let grpcStatus;
  let offset = 0;
  while (offset < block.length) {
    const first = block[offset];
    if (first & 0x80) {
      const [index, next] = readInteger(block, offset, 7);
      if (index === 0 || index > 61) throw new Error(`hpack: index ${index} outside the static table`);
      if (STATIC_STATUS[index]) status = STATIC_STATUS[index];
      offset = next;
      continue;
    }
    if ((first & 0xe0) === 0x20) {
      offset = readInteger(block, offset, 5)[1]; // dynamic table size update
      continue;
    }
    const [nameIndex, afterIndex] = readInteger(block, offset, (first & 0x40) ? 6 : 4);
    if (nameIndex > 61) throw new Error(`hpack: name index ${nameIndex} outside the static table`);
    let isGrpcStatus = false;
    offset = afterIndex;
    if (nameIndex === 0) {
      const [name, huffman, next] = readString(block, offset);
      isGrpcStatus = (huffman ? GRPC_STATUS_HUFFMAN : GRPC_STATUS).equals(name);
      offset = next;
    }
    const [value, huffman, next] = readString(block, offset);
    offset = next;
    if (nameIndex >= 8 && nameIndex <= 14) status = stringValue(value, huffman);
    else if (isGrpcStatus) grpcStatus = stringValue(value, huffman);
  }
  return { status, grpcStatus };
}

function writeFrameHeader(buffer, offset, length, type, flags, streamId) {
  buffer.writeUIntBE(length, offset, 3);
  buffer[offset + 3] = type;
  buffer[offset + 4] = flags;
  buffer.writeUInt32BE(streamId, offset + 5);
}

function frameHeader(length, type, flags, streamId) {
  const header = Buffer.allocUnsafe(9);
  writeFrameHeader(header, 0, length, type, flags, streamId);
  return header;
}

function literalWithIndexing(name, value) {
  // Literal header field with incremental indexing, new name; no Huffman (lengths < 127).
  return Buffer.concat([Buffer.from([0x40, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)]);
}

/**
 * The request header blocks of a gRPC call (:method POST, :scheme http, :path, :authority,
 * content-type, te), as a browser or Envoy would send them: the first request of a connection
 * adds the four literal headers to the server's HPACK dynamic table, every later request refers to
 * them by index (62..65, newest first). Servers decode indexed headers much faster than literals.
 */
export function grpcRequestHeaderBlocks(authority, path) {
  const first = Buffer.concat([
    Buffer.from([0x83, 0x86]), // static 3 ":method: POST", static 6 ":scheme: http"
    literalWithIndexing(':path', path),
    literalWithIndexing(':authority', authority),
    literalWithIndexing('content-type', 'application/grpc'),
    literalWithIndexing('te', 'trailers'),
  ]);
  const indexed = Buffer.from([0x83, 0x86, 0x80 | 65, 0x80 | 64, 0x80 | 63, 0x80 | 62]);
  return { first, indexed };
}

/** A request body: one gRPC frame, sent as a single DATA frame with END_STREAM. */
export function requestBody(grpcFrame) {
  return { frame: grpcFrame, length: grpcFrame.length };
}

/**
 * One HTTP/2 connection. `send(body, onDone)` starts a stream; onDone(result) gets
 * { status, grpcStatus, body (Buffer | undefined), error (string | undefined) }.
 */
export class RawH2Connection {
  constructor(port, headerBlocks, { onReady, onClose } = {}) {
    this.headerBlocks = headerBlocks;
    this.sentFirst = false;
    this.nextStreamId = 1;
    this.streams = new Map();
    this.sendWindow = 65535;
    this.peerStreamWindow = 65535;
    this.peerMaxConcurrent = Infinity;
    this.received = 0;
    this.pending = [];
    this.input = Buffer.alloc(0);
    this.continuation = undefined;
    this.closed = false;
    this.onClose = onClose;
    this.socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    this.socket.on('connect', () => {
      const settings = Buffer.alloc(18);
      settings.writeUInt16BE(0x1, 0); // HEADER_TABLE_SIZE
      settings.writeUInt32BE(0, 2);
      settings.writeUInt16BE(0x2, 6); // ENABLE_PUSH
      settings.writeUInt32BE(0, 8);
      settings.writeUInt16BE(0x4, 12); // INITIAL_WINDOW_SIZE
      settings.writeUInt32BE(MAX_WINDOW, 14);
      const windowUpdate = Buffer.alloc(4);
      windowUpdate.writeUInt32BE(MAX_WINDOW - 65535, 0);
      this.socket.write(Buffer.concat([PREFACE, frameHeader(18, FRAME.SETTINGS, 0, 0), settings, frameHeader(4, FRAME.WINDOW_UPDATE, 0, 0), windowUpdate]));
      onReady?.(this);
    });
    this.socket.on('data', (chunk) => this.onData(chunk));
    this.socket.on('error', (error) => this.fail(`connection: ${error.message}`));
    this.socket.on('close', () => this.fail('connection closed'));
  }

  send(body, onDone) {
    if (this.closed) {
      onDone({ error: 'connection closed' });
      return;
    }
    this.pending.push({ body, onDone });
    this.flush();
  }

  flush() {
    while (this.pending.length > 0 && this.streams.size < this.peerMaxConcurrent) {
      const { body, onDone } = this.pending[0];
      if (body.length > this.sendWindow || body.length > this.peerStreamWindow) return;
      this.pending.shift();
      const id = this.nextStreamId;
      this.nextStreamId += 2;
      const block = this.sentFirst ? this.headerBlocks.indexed : this.headerBlocks.first;
      this.sentFirst = true;
      const bytes = Buffer.allocUnsafe(18 + block.length + body.length);
      writeFrameHeader(bytes, 0, block.length, FRAME.HEADERS, FLAG.END_HEADERS, id);
      block.copy(bytes, 9);
      writeFrameHeader(bytes, 9 + block.length, body.length, FRAME.DATA, FLAG.END_STREAM, id);
      body.frame.copy(bytes, 18 + block.length);
      this.sendWindow -= body.length;
      this.streams.set(id, { onDone, status: undefined, grpcStatus: undefined, body: undefined });
      this.socket.write(bytes);
    }
  }

  close() {
    this.closed = true;
    this.socket.destroy();
  }

  fail(reason) {
    if (this.closed && this.streams.size === 0 && this.pending.length === 0) return;
    this.closed = true;
    this.socket.destroy();
    const streams = [...this.streams.values(), ...this.pending];
    this.streams.clear();
    this.pending = [];
    for (const stream of streams) stream.onDone({ error: reason });
    this.onClose?.(this, reason);
  }

  onData(chunk) {
    let input = this.input.length === 0 ? chunk : Buffer.concat([this.input, chunk]);
    let offset = 0;
    this.socket.cork();
    try {
      while (input.length - offset >= 9) {
        const length = input.readUIntBE(offset, 3);
        if (input.length - offset < 9 + length) break;
        const type = input[offset + 3];
        const flags = input[offset + 4];
        const streamId = input.readUInt32BE(offset + 5) & MAX_WINDOW;
        this.onFrame(type, flags, streamId, input.subarray(offset + 9, offset + 9 + length));
        offset += 9 + length;
      }
    } catch (error) {
      this.fail(`protocol: ${error.message}`);
      return;
    } finally {
      this.socket.uncork();
    }
    this.input = offset === input.length ? Buffer.alloc(0) : Buffer.from(input.subarray(offset));
  }

  onFrame(type, flags, streamId, payload) {
    switch (type) {
      case FRAME.DATA: {
        const data = flags & FLAG.PADDED ? payload.subarray(1, payload.length - payload[0]) : payload;
        this.received += payload.length;
        if (this.received > 1 << 30) {
          const increment = Buffer.allocUnsafe(4);
          increment.writeUInt32BE(this.received, 0);
          this.socket.write(Buffer.concat([frameHeader(4, FRAME.WINDOW_UPDATE, 0, 0), increment]));
          this.received = 0;
        }
        const stream = this.streams.get(streamId);
        if (!stream) return;
        stream.body = stream.body === undefined ? Buffer.from(data) : Buffer.concat([stream.body, data]);
        if (flags & FLAG.END_STREAM) this.complete(streamId, stream);
        return;
      }
      case FRAME.HEADERS: {
        let start = 0;
        let end = payload.length;
        if (flags & FLAG.PADDED) {
          start = 1;
          end -= payload[0];
        }
        if (flags & FLAG.PRIORITY) start += 5;
        const fragment = payload.subarray(start, end);
        if (flags & FLAG.END_HEADERS) this.onHeaderBlock(streamId, fragment, (flags & FLAG.END_STREAM) !== 0);
        else this.continuation = { streamId, endStream: (flags & FLAG.END_STREAM) !== 0, parts: [Buffer.from(fragment)] };
        return;
      }
      case FRAME.CONTINUATION: {
        if (!this.continuation || this.continuation.streamId !== streamId) throw new Error('unexpected CONTINUATION');
        this.continuation.parts.push(Buffer.from(payload));
        if (flags & FLAG.END_HEADERS) {
          const { endStream, parts } = this.continuation;
          this.continuation = undefined;
          this.onHeaderBlock(streamId, Buffer.concat(parts), endStream);
        }
        return;
      }
      case FRAME.RST_STREAM: {
        const stream = this.streams.get(streamId);
        if (stream) {
          this.streams.delete(streamId);
          stream.onDone({ error: `RST_STREAM ${payload.readUInt32BE(0)}` });
          this.flush();
        }
        return;
      }
      case FRAME.SETTINGS: {
        if (flags & FLAG.ACK) return;
        for (let i = 0; i + 6 <= payload.length; i += 6) {
          const id = payload.readUInt16BE(i);
          const value = payload.readUInt32BE(i + 2);
          if (id === 0x3) this.peerMaxConcurrent = value;
          if (id === 0x4) this.peerStreamWindow = value; // bodies are far smaller; per-stream use is one DATA frame
        }
        this.socket.write(frameHeader(0, FRAME.SETTINGS, FLAG.ACK, 0));
        this.flush();
        return;
      }
      case FRAME.PING: {
        if (!(flags & FLAG.ACK)) this.socket.write(Buffer.concat([frameHeader(8, FRAME.PING, FLAG.ACK, 0), payload]));
        return;
      }
      case FRAME.GOAWAY:
        throw new Error(`GOAWAY error code ${payload.readUInt32BE(4)}`);
      case FRAME.WINDOW_UPDATE: {
        if (streamId === 0) {
          this.sendWindow += payload.readUInt32BE(0) & MAX_WINDOW;
          this.flush();
        }
        return;
      }
      default:
        return; // PRIORITY, unknown extension frames: ignored as RFC 9113 requires
    }
  }

  onHeaderBlock(streamId, block, endStream) {
    const stream = this.streams.get(streamId);
    if (!stream) return;
    const { status, grpcStatus } = decodeStatusHeaders(block);
    if (status !== undefined) stream.status = status;
    if (grpcStatus !== undefined) stream.grpcStatus = grpcStatus;
    if (endStream) this.complete(streamId, stream);
  }

  complete(streamId, stream) {
    this.streams.delete(streamId);
    stream.onDone({ status: stream.status, grpcStatus: stream.grpcStatus, body: stream.body, error: undefined });
    this.flush();
  }
}

/** One call over a fresh connection: { status, grpcStatus, body } of the answer. */
export function callOnce(port, grpcFrame, { path = '/envoy.service.auth.v3.Authorization/Check', timeoutMs = 3000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      connection.close();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const headerBlocks = grpcRequestHeaderBlocks(`127.0.0.1:${port}`, path);
    const connection = new RawH2Connection(port, headerBlocks, {
      onReady: () =>
        connection.send(requestBody(grpcFrame), (result) => {
          clearTimeout(timer);
          connection.close();
          if (result.error !== undefined) reject(new Error(result.error));
          else resolve(result);
        }),
    });
  });
}
