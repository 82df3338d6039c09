// The Node ceiling: a node:http2 server that answers every Check with one fixed, pre-framed
// CheckResponse (status OK, ok_response) and reads nothing of the request: no gRPC parsing, no
// protobuf, no headers looked at. No ext_authz server built on node:http2 can beat it, so every
// ratio to it says how close a server comes to the limit of this design (bench/raw-h2-server.mjs
// shows how much of it is node:http2's own). Keep it fixed:
// one answer prepared at start, nothing done per call but respond, one DATA frame, trailers.
//
//   node bench/ceiling-server.mjs --port 9102 [--max-streams N]
// --max-streams: the SETTINGS_MAX_CONCURRENT_STREAMS it announces (default: Node's). The overload
// bench (overload.mjs) sets 1, the gentlest flood a server without admission control can face.
// --workers N: N processes sharing the port through node:cluster (the primary accepts and hands
// each connection to a worker, as `portcullis serve --workers` does): the reference for the
// bench's workers row, what a second process buys any Node server on the same machine.
// --read: the floor instead, the ceiling plus the least any real server must do: read the request
// to its end (one 'data' and one 'end' listener) and answer then. Same fixed answer, no parsing.
// Prints "listening <port>" once bound; stops on SIGTERM/SIGINT.

import cluster from 'node:cluster';
import http2 from 'node:http2';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' }, 'max-streams': { type: 'string' }, workers: { type: 'string', default: '1' }, read: { type: 'boolean', default: false } } });

// CheckResponse { status: {} (code 0), ok_response: {} }: field 1 (status) and field 3
// (ok_response), both empty length-delimited messages; then the 5-byte gRPC frame header.
const MESSAGE = Buffer.from([0x0a, 0x00, 0x1a, 0x00]);
const FRAME = Buffer.concat([Buffer.from([0, 0, 0, 0, MESSAGE.length]), MESSAGE]);
const HEADERS = { ':status': 200, 'content-type': 'application/grpc' };
const TRAILERS = { 'grpc-status': '0' };
const OPTIONS = { waitForTrailers: true };

function sendTrailers() {
  this.sendTrailers(TRAILERS);
}

/** --read: the request's bytes are kept (a real server decodes them) and the answer waits for its end. */
const BODY = Symbol('body');
function keepChunk(chunk) {
  this[BODY] ??= chunk;
}
function answerAtEnd() {
  this.respond(HEADERS, OPTIONS);
  this.once('wantTrailers', sendTrailers);
  this.end(FRAME);
}

const WORKERS = Number(values.workers);
if (WORKERS > 1 && cluster.isPrimary) {
  // Round-robin: the primary accepts (the default everywhere but Windows), like Portcullis' hand-off.
  cluster.schedulingPolicy = cluster.SCHED_RR;
  let listening = 0;
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('listening', (_worker, address) => {
    if (++listening === WORKERS) console.log(`listening ${address.port}`);
  });
  cluster.on('exit', () => process.exit(1));
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.once(signal, () => {
      cluster.removeAllListeners('exit');
      for (const worker of Object.values(cluster.workers)) worker.kill();
      process.exit(0);
    });
  }
} else {
  serve();
}

function serve() {
  const server = http2.createServer(values['max-streams'] === undefined ? {} : { settings: { maxConcurrentStreams: Number(values['max-streams']) } });
  server.on('stream', (stream) => {
    if (values.read) {
      stream.on('data', keepChunk);
      stream.on('end', answerAtEnd);
      return;
    }
    // The request's bytes are discarded unread (flowing mode, no listener): HTTP/2 flow control
    // needs them consumed, or the connection's window fills and the client stalls.
    stream.resume();
    stream.respond(HEADERS, OPTIONS);
    stream.once('wantTrailers', sendTrailers);
    stream.end(FRAME);
  });
  server.listen({ port: Number(values.port), host: '127.0.0.1', backlog: 4096 }, () => {
    if (cluster.isPrimary) console.log(`listening ${server.address().port}`);
  });
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.once(signal, () => {
      server.close();
      process.exit(0);
    });
  }
}
