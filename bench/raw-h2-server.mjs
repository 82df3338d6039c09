// An experiment, not a server to deploy: the Node ceiling's fixed gRPC answer, with HTTP/2 framed
// by hand on net.Socket instead of node:http2. It reads frame headers only (no HPACK decoding: every
// request gets the same answer), answers each stream when its request ends, and writes everything
// one read of the socket produced in one write. What it measures: how much of the ceiling's cost
// per check is node:http2's own machinery (stream objects, header objects, events, one write per
// frame), i.e. what a transport written for Portcullis could at most save.
//
// What it leaves out, and a real transport could not: HPACK decoding (a dynamic table, Huffman),
// stream states and their errors, SETTINGS beyond the few it sends, CONTINUATION, priorities,
// GOAWAY, and the defences nghttp2 gives node:http2 (rapid reset, CONTINUATION and SETTINGS floods,
// header-list bounds). Its answers keep to the client's connection window; the client's per-stream
// windows (65,535 bytes by default) are far above one 9-byte answer.
//
//   node bench/raw-h2-server.mjs --port 9103        (127.0.0.1 only; prints "listening <port>")

import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const DATA = 0;
const HEADERS = 1;
const SETTINGS = 4;
const PING = 6;
const WINDOW_UPDATE = 8;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
/** A connection that sends more than this without completing a frame is dropped. */
const MAX_BUFFERED = 1 << 20;

function frame(type, flags, stream, payload) {
  const bytes = Buffer.alloc(9 + payload.length);
  bytes.writeUIntBE(payload.length, 0, 3);
  bytes[3] = type;
  bytes[4] = flags;
  bytes.writeUInt32BE(stream, 5);
  payload.copy(bytes, 9);
  return bytes;
}

// HPACK without a dynamic table: ":status: 200" is static entry 8; content-type a literal without
// indexing on static name 31; grpc-status a literal without indexing with a new name.
const CONTENT_TYPE = Buffer.from('application/grpc');
const RESPONSE_HEADERS = Buffer.concat([Buffer.from([0x88, 0x0f, 0x10, CONTENT_TYPE.length]), CONTENT_TYPE]);
const GRPC_STATUS = Buffer.from('grpc-status');
const TRAILERS = Buffer.concat([Buffer.from([0x00, GRPC_STATUS.length]), GRPC_STATUS, Buffer.from([1, 0x30])]);
// CheckResponse { status: {}, ok_response: {} } in a gRPC frame, as the ceiling sends it.
const MESSAGE = Buffer.from([0, 0, 0, 0, 4, 0x0a, 0x00, 0x1a, 0x00]);
/** One answer: HEADERS, DATA, trailing HEADERS with END_STREAM; the stream id is written per answer. */
const ANSWER = Buffer.concat([frame(HEADERS, END_HEADERS, 0, RESPONSE_HEADERS), frame(DATA, 0, 0, MESSAGE), frame(HEADERS, END_HEADERS | END_STREAM, 0, TRAILERS)]);
const STREAM_ID_AT = [5, 9 + RESPONSE_HEADERS.length + 5, 9 + RESPONSE_HEADERS.length + 9 + MESSAGE.length + 5];
// MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 2^31-1; then the connection window opened fully.
const SERVER_PREFACE = Buffer.concat([
  frame(SETTINGS, 0, 0, Buffer.from([0, 3, 0, 0, 0, 100, 0, 4, 0x7f, 0xff, 0xff, 0xff])),
  frame(WINDOW_UPDATE, 0, 0, Buffer.from([0x7f, 0xff, 0x00, 0x00])),
]);
const SETTINGS_ACK = frame(SETTINGS, ACK, 0, Buffer.alloc(0));
/** Re-opens the connection window by 2^30 once that much request data has been read. */
const REOPEN = frame(WINDOW_UPDATE, 0, 0, Buffer.from([0x40, 0, 0, 0]));

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  let pending = Buffer.alloc(0);
  let prefaced = false;
  let received = 0;
  /** Bytes of DATA the client lets us send on the connection, and answers waiting for more. */
  let sendWindow = 65_535;
  const waiting = [];
  socket.write(SERVER_PREFACE);
  socket.on('data', (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let pos = 0;
    if (!prefaced) {
      if (pending.length < PREFACE.length) return;
      if (!pending.subarray(0, PREFACE.length).equals(PREFACE)) return socket.destroy();
      pos = PREFACE.length;
      prefaced = true;
    }
    const out = [];
    while (pending.length - pos >= 9) {
      const length = pending.readUIntBE(pos, 3);
      if (pending.length - pos < 9 + length) break;
      const type = pending[pos + 3];
      const flags = pending[pos + 4];
      const stream = pending.readUInt32BE(pos + 5) & 0x7fffffff;
      if (type === DATA) {
        received += length;
        if (flags & END_STREAM) {
          const answer = Buffer.from(ANSWER);
          for (const at of STREAM_ID_AT) answer.writeUInt32BE(stream, at);
          if (sendWindow >= MESSAGE.length && waiting.length === 0) {
            sendWindow -= MESSAGE.length;
            out.push(answer);
          } else waiting.push(answer);
        }
      } else if (type === SETTINGS && !(flags & ACK)) out.push(SETTINGS_ACK);
      else if (type === PING && !(flags & ACK)) out.push(frame(PING, ACK, 0, pending.subarray(pos + 9, pos + 17)));
      else if (type === WINDOW_UPDATE && stream === 0 && length === 4) {
        sendWindow += pending.readUInt32BE(pos + 9) & 0x7fffffff;
        while (waiting.length > 0 && sendWindow >= MESSAGE.length) {
          sendWindow -= MESSAGE.length;
          out.push(waiting.shift());
        }
      }
      pos += 9 + length;
    }
    if (received >= 1 << 30) {
      out.push(REOPEN);
      received -= 1 << 30;
    }
    pending = pos === pending.length ? Buffer.alloc(0) : pending.subarray(pos);
    if (pending.length > MAX_BUFFERED) return socket.destroy();
    if (out.length > 0) socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
  });
  socket.on('error', () => {});
});
server.listen({ port: Number(values.port), host: '127.0.0.1', backlog: 4096 }, () => console.log(`listening ${server.address().port}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    server.close();
    process.exit(0);
  });
}
