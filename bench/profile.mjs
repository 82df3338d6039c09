// CPU profile of Portcullis under load: the server runs with `node --cpu-prof` pinned to core 1,
// h2load drives one scenario at 8 connections x 16 streams from core 0, then the profile's self
// time is summarised by function and by where the code lives (Portcullis, node:http2, pino, GC...).
//
//   npm run build && node bench/profile.mjs --only ceiling,a,c,e,f [--duration 8] [--keep DIR] [--cli FILE]
//
// `ceiling` profiles the Node ceiling server; --cli profiles another build (before/after a change).
//
// Relative attribution stays meaningful on a loaded machine; absolute rates do not.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cpuPlan, freePort, processCpuSeconds, runToCompletion, startProcess } from './lib/processes.mjs';
import { ROOT, encodeCheckRequest, grpcFrame, waitUntilServing } from './lib/proto.mjs';
import { SCENARIOS, publicRouteRequest } from './lib/scenarios.mjs';
import { scenarioContext, startSessionTarget } from './lib/fixtures.mjs';
import { CHECK_PATH } from './lib/proto.mjs';
import { shortUrl } from './lib/profiles.mjs';

const { values: args } = parseArgs({
  options: {
    only: { type: 'string', default: 'a,c,e,f' },
    duration: { type: 'string', default: '8' },
    keep: { type: 'string' },
    top: { type: 'string', default: '25' },
    cli: { type: 'string' },
  },
});
const plan = cpuPlan();
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-profile-'));
const profileDir = args.keep ? path.resolve(args.keep) : path.join(workDir, 'profiles');
fs.mkdirSync(profileDir, { recursive: true });
const CLI = args.cli ? path.resolve(args.cli) : path.join(ROOT, 'dist', 'cli.js');

let sessionTarget;
const base = scenarioContext(workDir, CLI);
const ctx = {
  ...base,
  sessionTarget: async () => (sessionTarget ??= await startSessionTarget()),
  tokenPool: async () => {
    throw new Error('profile: scenario b is not supported (use bench/loadgen.mjs)');
  },
};

try {
  for (const id of args.only.split(',')) {
    // `ceiling` profiles the Node ceiling server itself (on the public-route request).
    const reference = id === 'ceiling';
    const scenario = reference ? { title: 'Node ceiling', prepare: async () => ({ env: {}, requests: [publicRouteRequest()] }) } : SCENARIOS.find((s) => s.id === id);
    if (!scenario) throw new Error(`no scenario ${id}`);
    const prepared = await scenario.prepare(ctx);
    const port = await freePort();
    const dir = path.join(profileDir, id);
    fs.mkdirSync(dir, { recursive: true });
    const server = startProcess({
      cpu: plan.serverCpu,
      command: process.execPath,
      args: reference ? ['--cpu-prof', `--cpu-prof-dir=${dir}`, path.join(ROOT, 'bench', 'ceiling-server.mjs'), '--port', String(port)] : ['--cpu-prof', `--cpu-prof-dir=${dir}`, CLI, 'serve', '--config', path.join(ROOT, 'bench', 'policies', scenario.policy), '--grpc-port', String(port), '--http-port', String(await freePort()), '--bind', '127.0.0.1', '--drain-delay', '0s'],
      env: { ...process.env, ...prepared.env },
      logFile: path.join(workDir, `server-${id}.log`),
      cwd: ROOT,
    });
    await waitUntilServing(port, prepared.requests[0], server);
    const frameFile = path.join(workDir, `frame-${id}.bin`);
    fs.writeFileSync(frameFile, grpcFrame(encodeCheckRequest(prepared.requests[0])));
    const cpuBefore = processCpuSeconds(server.pid);
    const run = await runToCompletion({ cpu: plan.loadCpu, command: 'h2load', args: ['-c', '8', '-m', '16', '-t', '1', '-D', args.duration, '-d', frameFile, '-H', 'content-type: application/grpc', '-H', 'te: trailers', `http://127.0.0.1:${port}${CHECK_PATH}`], timeoutMs: (Number(args.duration) + 30) * 1000 });
    const rate = /finished in [\d.]+s, ([\d.]+) req\/s/.exec(run.stdout)?.[1];
    const done = Number(/requests: \d+ total, \d+ started, (\d+) done/.exec(run.stdout)?.[1] ?? 0);
    const cpuAfter = processCpuSeconds(server.pid);
    const cpuUs = cpuBefore && cpuAfter && done > 0 ? ((cpuAfter.user + cpuAfter.system - cpuBefore.user - cpuBefore.system) / done) * 1e6 : NaN;
    await server.stop(10_000);
    const file = fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    console.log(`\n(${id}) ${scenario.title}: ${rate} checks/s under the profiler (h2load 8x16); server CPU ${cpuUs.toFixed(1)} µs per check (user + system, from /proc)`);
    if (file) summarise(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')), Number(rate));
    else console.log('  no profile written');
  }
} finally {
  await base.close();
  await sessionTarget?.close();
  if (!args.keep) fs.rmSync(workDir, { recursive: true, force: true });
}

/** Self time by function and by area, as a share of busy time and as µs per check. */
function summarise(profile, rate) {
  const self = new Map();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const dt = new Map();
  for (let i = 0; i < profile.samples.length; i++) dt.set(profile.samples[i], (dt.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
  let busy = 0;
  const areas = new Map();
  for (const [id, micros] of dt) {
    const node = byId.get(id);
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)' || functionName === '(program)') continue;
    busy += micros;
    const key = `${functionName || '(anonymous)'} ${shortUrl(url)}:${lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + micros);
    const area = areaOf(functionName, url);
    areas.set(area, (areas.get(area) ?? 0) + micros);
  }
  const seconds = (profile.endTime - profile.startTime) / 1e6;
  const checks = rate * Number(args.duration);
  const perCheck = (micros) => (checks > 0 ? (micros / checks).toFixed(2) : '?');
  console.log(`  busy ${(busy / 1e6).toFixed(1)} s of ${seconds.toFixed(1)} s profiled; ~${perCheck(busy)} µs CPU per check (JS-visible)`);
  for (const [area, micros] of [...areas].sort((a, b) => b[1] - a[1]).filter(([, m]) => m / busy >= 0.005)) console.log(`  ${area.padEnd(28)} ${((micros / busy) * 100).toFixed(1).padStart(5)}%  ${perCheck(micros)} µs/check`);
  console.log('  top functions (self):');
  for (const [key, micros] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(args.top))) console.log(`    ${((micros / busy) * 100).toFixed(1).padStart(5)}%  ${key}`);
}

function areaOf(functionName, url) {
  if (functionName === '(garbage collector)') return 'GC';
  if (!url) return functionName.startsWith('(') ? functionName : 'native';
  if (url.includes('/bench/')) return 'bench server';
  if (url.includes('/dist/') || url.includes('/src/')) return `portcullis ${url.slice(url.indexOf('/dist/') + 6).split('/').slice(0, -1).join('/') || '.'}`;
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.startsWith('node:internal/http2') || url.includes('internal/http2')) return 'node:http2';
  if (url.startsWith('node:')) return url.split('/').slice(0, 2).join('/');
  return url;
}
