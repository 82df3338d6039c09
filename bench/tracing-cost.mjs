#!/usr/bin/env node
// In-process CPU cost of tracing per check (README "Tracing" and "Benchmarks"): a real
// CheckRequest decoded and authorized (Host-identified caller, no crypto: the cheapest allow, so
// the tracing share is the largest it can be), with tracing off, on at 1% and 100% for new traces,
// and on with a caller whose traceparent says "not sampled". Sampled spans are exported over
// OTLP/HTTP to a sink in a child process, and the export's CPU in this process is counted: checks
// run in batches of 500 with a turn of the event loop between batches, as a server would. CPU time
// (user + system) rather than wall time, so a busy machine changes the figures less; variants are
// alternated round by round and the median is reported.
//
//   npm run build && node bench/tracing-cost.mjs [--rounds 9] [--iterations 20000]

import { fork } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { ROOT, checkRequest, encodeCheckRequest } from './lib/proto.mjs';

if (process.argv.includes('--sink')) {
  const http = await import('node:http');
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  server.listen(0, '127.0.0.1', () => process.send(`http://127.0.0.1:${server.address().port}/v1/traces`));
  process.on('disconnect', () => process.exit(0));
} else {
  await main();
}

async function main() {
const { values } = parseArgs({ options: { rounds: { type: 'string', default: '9' }, iterations: { type: 'string', default: '20000' }, sink: { type: 'boolean' } } });
const load = (p) => import(pathToFileURL(path.join(ROOT, 'dist', p)).href);
const { parsePolicyWithLocator } = await load('policy/load.js');
const { compilePolicy } = await load('policy/compile.js');
const { authorize } = await load('pipeline/authorize.js');
const { decodeCheckRequest } = await load('transport/grpc/decode.js');
const { Metrics } = await load('observability/metrics.js');
const { ResourcePool } = await load('runtime.js');
const { silentLogger } = await load('observability/logger.js');
const { systemClock } = await load('clock.js');
const { tracingSettings } = await load('observability/tracing.js');
const { OtelCheckTracer } = await load('observability/otel.js');

// The OTLP sink: another process, so receiving the spans is not counted here.
const sink = fork(new URL(import.meta.url).pathname, ['--sink'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
const sinkUrl = await new Promise((resolve) => sink.once('message', resolve));

const YAML = `
identity:
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [orders:read] } } }
routes:
  - { match: { pathPrefix: /v1/orders }, require: { allOf: ["orders:read"] } }
`;
const runtime = { clock: systemClock, logger: silentLogger(), metrics: new Metrics({ defaultMetrics: false }), resources: new ResourcePool(), env: {} };
const { document, locate } = parsePolicyWithLocator(YAML, 'bench.yaml', {});
const policy = compilePolicy(document, runtime, 'bench.yaml', locate);

const frame = (headers) => encodeCheckRequest(checkRequest({ path: '/v1/orders/42', host: 'shop.example.com', headers, requestId: 'bench-trace-0123456789' }));
const plain = frame({});
const unsampledParent = frame({ traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00' });

const tracer = (ratio) => new OtelCheckTracer(tracingSettings({ enabled: true, endpoint: sinkUrl, sampleRatio: ratio, tenant: false }, {}, silentLogger()), 'bench');
const VARIANTS = [
  { name: 'tracing off', bytes: plain, tracer: undefined },
  { name: 'on, 1% of new traces', bytes: plain, tracer: tracer(0.01) },
  { name: 'tracing off, request with a traceparent', bytes: unsampledParent, tracer: undefined },
  { name: 'on, caller not sampled (traceparent …-00)', bytes: unsampledParent, tracer: tracer(1) },
  { name: 'on, 100% of new traces', bytes: plain, tracer: tracer(1) },
];

/** What the gRPC transport does per check, minus the socket: decode, (span), authorize, (end span). */
function check(bytes, t) {
  const request = decodeCheckRequest(bytes);
  if (t !== undefined) request.trace = t.start(request, 'envoy.service.auth.v3.Authorization', 'Check');
  const decision = authorize(policy, request);
  if (!decision.allowed) throw new Error(`expected allow, got ${decision.reason}`);
  if (request.trace !== undefined) request.trace.finish(decision, 0);
}

const turn = () => new Promise((resolve) => setImmediate(resolve));
const iterations = Number(values.iterations);
for (const v of VARIANTS) {
  v.samples = [];
  for (let i = 0; i < 2000; i++) check(v.bytes, v.tracer); // warm-up
}
for (let round = 0; round < Number(values.rounds); round++) {
  for (const v of VARIANTS) {
    await turn();
    const before = process.cpuUsage();
    for (let done = 0; done < iterations; done += 500) {
      for (let i = 0; i < 500; i++) check(v.bytes, v.tracer);
      await turn();
    }
    // Let the batch processor export what this round produced, inside the measurement.
    if (v.tracer) await v.tracer.flush();
    const used = process.cpuUsage(before);
    v.samples.push(((used.user + used.system) * 1000) / iterations);
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
console.log(`CPU per check (median of ${values.rounds} rounds × ${iterations} checks; decode + authorize, Host caller)`);
for (const v of VARIANTS) {
  const ns = median(v.samples);
  // Against tracing off with the same request bytes (a traceparent header costs its decoding).
  const ref = median((v.bytes === plain ? VARIANTS[0] : VARIANTS[2]).samples);
  const delta = v.tracer === undefined ? '' : `+${((ns - ref) / 1000).toFixed(2)} µs (${((ns / ref - 1) * 100).toFixed(0)}%) over tracing off, same request`;
  console.log(`  ${v.name.padEnd(44)} ${(ns / 1000).toFixed(2).padStart(6)} µs   ${delta}`);
}
for (const v of VARIANTS) await v.tracer?.shutdown();
sink.kill();
process.exit(0);
}
