// A closed-loop HTTP/2 gRPC load generator for what h2load cannot do: a different request
// body on every request (scenario b, every JWT distinct; the memory spray). It keeps
// `connections × streams` Checks in flight, cycles through the frames of a file, checks every
// response (HTTP 200, grpc-status 0, a CheckResponse that is ok_response / denied_response) and
// reports throughput and latency percentiles as JSON on stdout.
//
//   node bench/loadgen.mjs --port P --frames FILE [--connections 8] [--streams 16]
//        [--duration 10] [--warmup 2] [--max-requests N] [--rss-pid PID --rss-every N]
//        [--start I] [--spray jwt|api-key --spray-marker CREDENTIAL]
// FILE holds gRPC frames back to back (5-byte prefix + CheckRequest). With --spray, every request
// is a distinct variant of the first frame's CREDENTIAL (bench/lib/spray.mjs).
// Load goes to 127.0.0.1 only, and stops after --duration (or --max-requests) by itself.

import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { RawH2Connection, grpcRequestHeaderBlocks, requestBody } from './lib/h2-raw-client.mjs';
import { sprayBodies } from './lib/spray.mjs';
import { percentile, readVmRssKb } from './lib/stats.mjs';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    frames: { type: 'string' },
    connections: { type: 'string', default: '8' },
    streams: { type: 'string', default: '16' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    'max-requests': { type: 'string', default: '0' },
    'rss-pid': { type: 'string' },
    'rss-every': { type: 'string', default: '100000' },
    start: { type: 'string', default: '0' },
    spray: { type: 'string' },
    'spray-marker': { type: 'string' },
  },
});

const port = Number(values.port);
const connections = Number(values.connections);
const streamsPerConnection = Number(values.streams);
const warmupMs = Number(values.warmup) * 1000;
const durationMs = Number(values.duration) * 1000;
const maxRequests = Number(values['max-requests']) || Infinity;
const rssPid = values['rss-pid'] ? Number(values['rss-pid']) : undefined;
const rssEvery = Number(values['rss-every']);
if (!port || !values.frames) {
  console.error('usage: loadgen.mjs --port P --frames FILE [...]');
  process.exit(2);
}

const headerBlocks = grpcRequestHeaderBlocks(`127.0.0.1:${port}`, '/envoy.service.auth.v3.Authorization/Check');
const frames = splitFrames(fs.readFileSync(values.frames));
const bodies = frames.map(requestBody);
// --start: where in the frames to begin, so consecutive runs walk one cycle (scenario b).
let next = Number(values.start) % bodies.length;
const sprayed = values.spray ? sprayBodies(frames[0], values['spray-marker'] ?? '', values.spray) : undefined;

function nextBody() {
  if (sprayed) return requestBody(sprayed(sent));
  const body = bodies[next];
  next = next + 1 === bodies.length ? 0 : next + 1;
  return body;
}

let sent = 0;
let measuring = warmupMs === 0;
let stopping = false;
let measuredStart = 0n;
let measuredEnd = 0n;
let latencies = new Uint32Array(1 << 16);
let measured = 0;
const counts = { ok: 0, deny: {}, grpcError: {}, httpError: 0, malformed: 0, streamError: 0 };
const rssSamples = [];
let inFlight = 0;

function splitFrames(buffer) {
  const list = [];
  for (let offset = 0; offset + 5 <= buffer.length; ) {
    const length = buffer.readUInt32BE(offset + 1);
    list.push(buffer.subarray(offset, offset + 5 + length));
    offset += 5 + length;
  }
  if (list.length === 0) throw new Error(`no gRPC frames in ${values.frames}`);
  return list;
}

/** Top-level scan of a CheckResponse: which http_response it carries and the denied HTTP status. */
function classify(message) {
  let offset = 0;
  while (offset < message.length) {
    const [tag, afterTag] = varint(message, offset);
    const field = tag >>> 3;
    const wire = tag & 7;
    if (wire === 0) {
      offset = varint(message, afterTag)[1];
      continue;
    }
    if (wire !== 2) return 'malformed';
    const [length, start] = varint(message, afterTag);
    if (field === 3) return 'ok';
    if (field === 2) return `deny ${deniedStatus(message.subarray(start, start + length))}`;
    offset = start + length;
  }
  return 'malformed';
}

/** DeniedHttpResponse.status (field 1, HttpStatus) .code (field 1, enum). */
function deniedStatus(denied) {
  let offset = 0;
  while (offset < denied.length) {
    const [tag, afterTag] = varint(denied, offset);
    if (tag === 0x0a) {
      const [length, start] = varint(denied, afterTag);
      const status = denied.subarray(start, start + length);
      return status[0] === 0x08 ? varint(status, 1)[0] : 0;
    }
    if ((tag & 7) === 0) offset = varint(denied, afterTag)[1];
    else if ((tag & 7) === 2) {
      const [length, start] = varint(denied, afterTag);
      offset = start + length;
    } else return 0;
  }
  return 0;
}

function varint(buffer, offset) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = buffer[offset++];
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [value, offset];
    shift += 7;
  }
}

function record(outcome, startedAt) {
  if (!measuring) return;
  const micros = Number((process.hrtime.bigint() - startedAt) / 1000n);
  if (measured === latencies.length) {
    const grown = new Uint32Array(latencies.length * 2);
    grown.set(latencies);
    latencies = grown;
  }
  latencies[measured++] = micros;
  if (outcome === 'ok') counts.ok++;
  else if (outcome.startsWith('deny ')) counts.deny[outcome.slice(5)] = (counts.deny[outcome.slice(5)] ?? 0) + 1;
  else if (outcome.startsWith('grpc ')) counts.grpcError[outcome.slice(5)] = (counts.grpcError[outcome.slice(5)] ?? 0) + 1;
  else counts[outcome]++;
  if (rssPid !== undefined && measured % rssEvery === 0) rssSamples.push({ requests: measured, rssKb: readVmRssKb(rssPid) });
}

function outcomeOf({ status, grpcStatus, body, error }) {
  if (error !== undefined) return 'streamError';
  if (status !== '200') return 'httpError';
  if (grpcStatus !== '0') return `grpc ${grpcStatus}`;
  if (body === undefined || body.length < 5 || body.readUInt32BE(1) !== body.length - 5) return 'malformed';
  return classify(body.subarray(5));
}

function fire(connection) {
  if (stopping || sent >= maxRequests || connection.closed) return;
  const body = nextBody();
  sent++;
  inFlight++;
  const startedAt = process.hrtime.bigint();
  connection.send(body, (result) => {
    inFlight--;
    record(outcomeOf(result), startedAt);
    fire(connection);
    if ((stopping || sent >= maxRequests) && inFlight === 0) finish();
  });
}

const connectionList = [];
for (let c = 0; c < connections; c++) {
  connectionList.push(
    new RawH2Connection(port, headerBlocks, {
      onReady: (connection) => {
        for (let s = 0; s < streamsPerConnection; s++) fire(connection);
      },
      onClose: (_connection, reason) => {
        if (finished) return;
        console.error(`connection closed: ${reason}`);
        // Nothing left to send on: report what was measured instead of going quiet.
        if (connectionList.every((connection) => connection.closed)) finish();
      },
    }),
  );
}

setTimeout(() => {
  measuring = true;
  measuredStart = process.hrtime.bigint();
  setTimeout(() => {
    measuredEnd = process.hrtime.bigint();
    stopping = true;
    if (inFlight === 0) finish();
  }, durationMs).unref();
}, warmupMs).unref();
// Hard stop: never run unbounded, even if the server stops answering.
setTimeout(() => finish(true), warmupMs + durationMs + 15_000).unref();

let finished = false;
function finish(timedOut = false) {
  if (finished) return;
  finished = true;
  if (!measuredEnd) measuredEnd = process.hrtime.bigint();
  for (const connection of connectionList) connection.close();
  const seconds = Number(measuredEnd - (measuredStart || measuredEnd)) / 1e9;
  const sorted = latencies.subarray(0, measured).sort();
  const result = {
    requests: measured,
    seconds,
    checksPerSec: seconds > 0 ? measured / seconds : 0,
    p50Ms: percentile(sorted, 0.5) / 1000,
    p99Ms: percentile(sorted, 0.99) / 1000,
    distinctBodies: sprayed ? sent : bodies.length,
    sent,
    outcomes: counts,
    rssSamples,
    timedOut,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}
