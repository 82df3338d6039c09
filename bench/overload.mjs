// Issue 14 §2 in figures: what a well-behaved client (one check at a time on its own connection)
// waits while h2load floods the gRPC port with 128 connections × 1000 streams, for Portcullis and
// for the Node ceiling (ceiling-server.mjs) under the same flood, in alternating rounds of one run.
//
//   npm run build && node bench/overload.mjs [--rounds 3] [--duration 6] [--connections 128]
//                                            [--streams 1000] [--cli path/to/dist/cli.js] [--no-save]
//
// Portcullis runs with the Helm chart's V8 settings and `maxInFlight: 128`, so its admission
// control (503 `overloaded`, per-connection stream throttling, turns) is what the flood meets. The
// ceiling has no admission control: it announces SETTINGS_MAX_CONCURRENT_STREAMS 1, the gentlest
// flood such a server can face (with Node's default limit every flood stream is in flight at once
// and the quiet client waits behind all of them: p99 in the hundreds of ms). So the ceiling row is
// the floor for any Node server on this machine: node:http2's work per flood check, V8's
// collections and the cores the load generator shares.
//
// Saves bench/results/overload-<timestamp>.json and overload-latest.json. Load goes to 127.0.0.1
// only; every flood is bounded by --duration (h2load -D) and killed after twice that.

import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { H2LOAD_INSTALL_HINT, h2loadVersion } from './lib/measure.mjs';
import { chartNodeOptions, cpuPlan, freePort, runToCompletion, startProcess } from './lib/processes.mjs';
import { CHECK_PATH, ROOT, checkRequest, decodeCheckResponse, describeResponse, encodeCheckRequest, grpcFrame, waitUntilServing } from './lib/proto.mjs';
import { percentile, readVmHwmKb } from './lib/stats.mjs';

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '6' },
    connections: { type: 'string', default: '128' },
    streams: { type: 'string', default: '1000' },
    cli: { type: 'string', default: path.join(ROOT, 'dist', 'cli.js') },
    'no-save': { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.duration);
const UNLOADED_MS = 1500;
const POLICY = `server:
  decisionLog: none
  grpc: { maxInFlight: 128 }
routes:
  - { name: health, match: { path: /health }, public: true }
`;

if (h2loadVersion() === undefined) {
  console.error(H2LOAD_INSTALL_HINT);
  process.exit(2);
}
const plan = cpuPlan();
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-overload-'));
const request = checkRequest({ path: '/health', requestId: 'overload-quiet' });
const frame = grpcFrame(encodeCheckRequest(request));
const frameFile = path.join(workDir, 'check.bin');
fs.writeFileSync(frameFile, frame);
const policyFile = path.join(workDir, 'policy.yaml');
fs.writeFileSync(policyFile, POLICY);

/** A well-behaved client: one Check at a time on its own HTTP/2 connection, each answer decoded. */
function quietClient(port) {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  const latencies = [];
  const failures = [];
  let running = true;
  const once = () =>
    new Promise((resolve) => {
      const started = performance.now();
      const stream = session.request({ ':method': 'POST', ':path': CHECK_PATH, 'content-type': 'application/grpc', te: 'trailers' });
      const chunks = [];
      let grpcStatus;
      stream.on('data', (chunk) => chunks.push(chunk));
      stream.on('trailers', (trailers) => (grpcStatus = trailers['grpc-status']));
      stream.on('error', (error) => failures.push(error.message));
      stream.on('close', () => {
        const body = Buffer.concat(chunks);
        const answer = grpcStatus === '0' && body.length >= 5 ? describeResponse(decodeCheckResponse(body.subarray(5))) : undefined;
        if (answer?.kind === 'ok') latencies.push(performance.now() - started);
        else failures.push(`grpc-status ${grpcStatus}, ${answer?.kind ?? 'no answer'}`);
        resolve();
      });
      stream.end(frame);
    });
  const done = (async () => {
    while (running && !session.destroyed) await once();
  })();
  return {
    latencies,
    failures,
    async stop() {
      running = false;
      await done;
      session.close();
    },
  };
}

const summary = (latencies) => {
  const sorted = [...latencies].sort((a, b) => a - b);
  return { checks: sorted.length, p50Ms: percentile(sorted, 0.5), p90Ms: percentile(sorted, 0.9), p99Ms: percentile(sorted, 0.99), maxMs: sorted.at(-1) ?? NaN };
};

async function metric(httpPort, sample) {
  const text = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text(), () => '');
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? 0 : Number(line.slice(sample.length + 1));
}

/** One target: start it, the quiet client alone, then the quiet client under the flood. */
async function measureTarget(target) {
  const port = await freePort();
  const httpPort = await freePort();
  const server =
    target === 'portcullis'
      ? startProcess({
          cpu: plan.serverCpu,
          command: process.execPath,
          args: [args.cli, 'serve', '--config', policyFile, '--bind', '127.0.0.1', '--grpc-port', String(port), '--http-port', String(httpPort)],
          env: { ...process.env, NODE_OPTIONS: chartNodeOptions(), PORTCULLIS_LOG_LEVEL: 'warn' },
          logFile: path.join(workDir, `${target}.log`),
        })
      : startProcess({
          cpu: plan.serverCpu,
          command: process.execPath,
          args: [path.join(ROOT, 'bench', 'ceiling-server.mjs'), '--port', String(port), '--max-streams', '1'],
          env: { ...process.env, NODE_OPTIONS: chartNodeOptions() },
          logFile: path.join(workDir, `${target}.log`),
        });
  try {
    await waitUntilServing(port, request, server);
    const alone = quietClient(port);
    await new Promise((r) => setTimeout(r, UNLOADED_MS));
    await alone.stop();
    const quiet = quietClient(port);
    const flood = await runToCompletion({
      cpu: plan.loadCpu,
      command: 'h2load',
      args: ['-c', args.connections, '-m', args.streams, '-t', '1', '-D', String(SECONDS), '-d', frameFile, '-H', 'content-type: application/grpc', '-H', 'te: trailers', `http://127.0.0.1:${port}${CHECK_PATH}`],
      timeoutMs: 2 * SECONDS * 1000 + 5000,
    });
    await quiet.stop();
    const done = /requests: \d+ total, \d+ started, (\d+) done/.exec(flood.stdout ?? '')?.[1];
    return {
      unloaded: summary(alone.latencies),
      loaded: summary(quiet.latencies),
      quietFailures: quiet.failures.length + alone.failures.length,
      floodChecksPerSec: done === undefined ? NaN : Number(done) / SECONDS,
      refusedOverloaded: target === 'portcullis' ? await metric(httpPort, 'portcullis_grpc_refused_total{reason="overloaded"}') : undefined,
      peakRssMb: (readVmHwmKb(server.pid) ?? NaN) / 1024,
      alive: server.running,
    };
  } finally {
    await server.stop();
  }
}

const TARGETS = ['portcullis', 'ceiling'];
const rounds = [];
console.log(`overload: h2load ${args.connections} × ${args.streams} for ${SECONDS} s, ${ROUNDS} alternating rounds; ${plan.note}; quiet client in this process`);
for (let round = 0; round < ROUNDS; round++) {
  const results = {};
  for (const target of round % 2 === 0 ? TARGETS : [...TARGETS].reverse()) {
    results[target] = await measureTarget(target);
    const r = results[target];
    console.log(
      `  round ${round + 1} ${target.padEnd(10)} unloaded p50 ${r.unloaded.p50Ms.toFixed(2)} p99 ${r.unloaded.p99Ms.toFixed(2)} ms | flood: quiet p50 ${r.loaded.p50Ms.toFixed(2)} p90 ${r.loaded.p90Ms.toFixed(2)} p99 ${r.loaded.p99Ms.toFixed(2)} ms (${r.loaded.checks} checks, ${r.quietFailures} failed), flood ${Math.round(r.floodChecksPerSec)} checks/s${r.refusedOverloaded === undefined ? '' : `, ${r.refusedOverloaded} refused overloaded`}, peak RSS ${r.peakRssMb.toFixed(0)} MB${r.alive ? '' : ', DIED'}`,
    );
  }
  rounds.push(results);
}

const median = (values) => {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.floor((sorted.length - 1) / 2)];
};
const medians = {};
for (const target of TARGETS) {
  const pick = (f) => median(rounds.map((r) => f(r[target])));
  medians[target] = {
    unloadedP99Ms: pick((r) => r.unloaded.p99Ms),
    loadedP50Ms: pick((r) => r.loaded.p50Ms),
    loadedP90Ms: pick((r) => r.loaded.p90Ms),
    loadedP99Ms: pick((r) => r.loaded.p99Ms),
    floodChecksPerSec: pick((r) => r.floodChecksPerSec),
    peakRssMb: pick((r) => r.peakRssMb),
  };
}
const p = medians.portcullis;
const c = medians.ceiling;
console.log(`\nmedians of ${ROUNDS} rounds (the quiet client's latency, ms):`);
console.log(`  ${''.padEnd(12)} ${'unloaded p99'.padStart(12)} ${'flood p50'.padStart(10)} ${'flood p90'.padStart(10)} ${'flood p99'.padStart(10)} ${'flood checks/s'.padStart(15)} ${'peak RSS MB'.padStart(12)}`);
for (const [name, m] of [['portcullis', p], ['ceiling', c]]) {
  console.log(`  ${name.padEnd(12)} ${m.unloadedP99Ms.toFixed(2).padStart(12)} ${m.loadedP50Ms.toFixed(2).padStart(10)} ${m.loadedP90Ms.toFixed(2).padStart(10)} ${m.loadedP99Ms.toFixed(2).padStart(10)} ${Math.round(m.floodChecksPerSec).toString().padStart(15)} ${m.peakRssMb.toFixed(0).padStart(12)}`);
}
console.log(`  Portcullis' flood p99 over the ceiling's: ${(p.loadedP99Ms / c.loadedP99Ms).toFixed(2)}× (${(p.loadedP99Ms - c.loadedP99Ms).toFixed(1)} ms)`);

if (!args['no-save']) {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const text = `${JSON.stringify({ version: 1, startedAt: new Date().toISOString(), pinning: plan.note, connections: Number(args.connections), streams: Number(args.streams), seconds: SECONDS, rounds, medians }, null, 2)}\n`;
  fs.writeFileSync(path.join(dir, `overload-${stamp}.json`), text);
  fs.writeFileSync(path.join(dir, 'overload-latest.json'), text);
  console.log(`\nsaved bench/results/overload-${stamp}.json and overload-latest.json`);
}
fs.rmSync(workDir, { recursive: true, force: true });
