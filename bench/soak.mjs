// A bounded soak: Portcullis (dist/cli.js serve, the chart's V8 settings unless --server-node-options
// says otherwise) under steady closed-loop load for --minutes, RSS and V8 heap/external memory
// sampled every --every seconds; reports the slope (MB/min, least squares) of each over the second
// half of the run, when caches and pools have filled. Loopback only; stops by itself.
//
//   npm run build && node bench/soak.mjs [--minutes 6] [--every 15] [--connections 1] [--streams 4]
//        [--server-node-options '...'] [--env MALLOC_ARENA_MAX=2]
//        [--api-key-spray KEY --keys-file FILE]   (distinct unknown API keys: the key cache fills)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { checkRequest, encodeCheckRequest, grpcFrame, ROOT } from './lib/proto.mjs';
import { freePort } from './lib/processes.mjs';
import { readVmRssKb } from './lib/stats.mjs';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '6' },
    every: { type: 'string', default: '15' },
    connections: { type: 'string', default: '1' },
    streams: { type: 'string', default: '4' },
    'server-node-options': { type: 'string', default: '--max-old-space-size=160 --max-semi-space-size=2' },
    env: { type: 'string', multiple: true, default: [] },
    'api-key-spray': { type: 'string' },
    'keys-file': { type: 'string' },
  },
});
const minutes = Math.min(Number(values.minutes), 60);
const everyMs = Number(values.every) * 1000;

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-soak-'));
const policy = path.join(work, 'policy.yaml');
const spray = values['api-key-spray'];
fs.copyFileSync(path.join(ROOT, spray ? 'bench/policies/api-key.yaml' : 'bench/policies/minimal.yaml'), policy);
// A mix like real traffic: public allows and denials, every request id and path distinct.
const frames = [];
if (spray) frames.push(grpcFrame(encodeCheckRequest(checkRequest({ path: '/v1/items/1', requestId: 'soak-spray', headers: { 'x-api-key': spray } }))));
else for (let i = 0; i < 2000; i++) {
  const requestPath = i % 2 === 0 ? `/health?probe=${i}` : `/v1/items/${i}`;
  frames.push(grpcFrame(encodeCheckRequest(checkRequest({ path: requestPath, requestId: `soak-${i}-${(i * 2654435761) % 2 ** 32}` }))));
}
const frameFile = path.join(work, 'frames.bin');
fs.writeFileSync(frameFile, Buffer.concat(frames));

const grpcPort = await freePort();
const httpPort = await freePort();
const extraEnv = Object.fromEntries(values.env.map((kv) => kv.split('=', 2)));
const server = spawn(process.execPath, [path.join(ROOT, 'dist/cli.js'), 'serve', '--config', policy, '--bind', '127.0.0.1', '--grpc-port', String(grpcPort), '--http-port', String(httpPort)], {
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, NODE_OPTIONS: values['server-node-options'], BENCH_KEYS_FILE: values['keys-file'] ?? '', ...extraEnv },
});
for (let i = 0; ; i++) {
  const ok = await fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.ok, () => false);
  if (ok) break;
  if (i > 200) throw new Error('server did not start');
  await new Promise((r) => setTimeout(r, 50));
}

async function sample(t0) {
  const text = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text(), () => '');
  // Node's default metrics (prom-client) carry no portcullis_ prefix.
  const metric = (name) => Number(new RegExp(`^(?:portcullis_)?${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? NaN) / 1048576;
  return {
    minute: (Date.now() - t0) / 60000,
    rssMb: readVmRssKb(server.pid) / 1024,
    heapUsedMb: metric('nodejs_heap_size_used_bytes'),
    heapTotalMb: metric('nodejs_heap_size_total_bytes'),
    externalMb: metric('nodejs_external_memory_bytes'),
  };
}

const t0 = Date.now();
const loadgen = spawn(
  process.execPath,
  [path.join(ROOT, 'bench/loadgen.mjs'), '--port', String(grpcPort), '--frames', frameFile, '--connections', values.connections, '--streams', values.streams, '--duration', String(minutes * 60), '--warmup', '0', ...(spray ? ['--spray', 'api-key', '--spray-marker', spray] : [])],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
let loadOut = '';
loadgen.stdout.on('data', (d) => (loadOut += d));
const samples = [await sample(t0)];
const timer = setInterval(async () => {
  const s = await sample(t0);
  samples.push(s);
  console.error(JSON.stringify(Object.fromEntries(Object.entries(s).map(([k, v]) => [k, Math.round(v * 10) / 10]))));
}, everyMs);
await new Promise((resolve) => loadgen.once('exit', resolve));
clearInterval(timer);
samples.push(await sample(t0));
server.kill('SIGTERM');

function slope(points, key) {
  const xs = points.map((p) => p.minute);
  const ys = points.map((p) => p[key]);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return Math.round((num / den) * 100) / 100;
}
const secondHalf = samples.filter((s) => s.minute >= minutes / 2);
let load;
try {
  load = JSON.parse(loadOut);
} catch {
  load = loadOut.trim().slice(-300);
}
const result = {
  minutes,
  nodeOptions: values['server-node-options'],
  env: extraEnv,
  checksPerSec: load?.checksPerSec ?? load?.throughput,
  first: samples[0],
  last: samples[samples.length - 1],
  peakRssMb: Math.max(...samples.map((s) => s.rssMb)),
  secondHalfSlopeMbPerMin: { rss: slope(secondHalf, 'rssMb'), heapUsed: slope(secondHalf, 'heapUsedMb'), external: slope(secondHalf, 'externalMb') },
  samples,
};
const out = path.join(ROOT, 'bench/results', `soak-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
fs.writeFileSync(out, JSON.stringify(result, null, 2));
console.log(JSON.stringify({ ...result, samples: undefined, file: path.relative(ROOT, out) }, null, 2));
