// Where a check's garbage comes from: the server runs with V8's sampling heap profiler (including
// objects already collected, bench/lib/alloc-hook.mjs) while h2load drives one scenario at 8x16,
// then the sampled bytes are divided by the checks answered and summarised by function (a
// built-in such as Map or a Set's delete is put on the JavaScript function that called it).
//
//   npm run build && node bench/alloc-profile.mjs --only a,f [--duration 5] [--cli FILE] [--top 30]
//
// The figures are sampled (one sample per 4 KiB allocated): good to ±5% per line at 5 s, and the
// profiler slows the server, so rates here are not throughput figures.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cpuPlan, freePort, runToCompletion, startProcess } from './lib/processes.mjs';
import { CHECK_PATH, ROOT, encodeCheckRequest, grpcFrame, waitUntilServing } from './lib/proto.mjs';
import { SCENARIOS } from './lib/scenarios.mjs';
import { scenarioContext } from './lib/fixtures.mjs';
import { shortUrl } from './lib/profiles.mjs';

const { values: args } = parseArgs({
  options: {
    only: { type: 'string', default: 'a,f' },
    duration: { type: 'string', default: '5' },
    cli: { type: 'string' },
    top: { type: 'string', default: '30' },
  },
});
const duration = Math.min(30, Math.max(1, Number(args.duration)));
const plan = cpuPlan();
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-alloc-'));
const CLI = args.cli ? path.resolve(args.cli) : path.join(ROOT, 'dist', 'cli.js');
const ctx = scenarioContext(workDir, CLI);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

try {
  for (const id of args.only.split(',')) {
    const scenario = SCENARIOS.find((s) => s.id === id);
    if (!scenario || scenario.generator !== 'h2load') throw new Error(`no h2load scenario ${id}`);
    const prepared = await scenario.prepare(ctx);
    const port = await freePort();
    const out = path.join(workDir, `heap-${id}.json`);
    const logFile = path.join(workDir, `server-${id}.log`);
    const server = startProcess({
      cpu: plan.serverCpu,
      command: process.execPath,
      args: ['--import', path.join(ROOT, 'bench', 'lib', 'alloc-hook.mjs'), CLI, 'serve', '--config', path.join(ROOT, 'bench', 'policies', scenario.policy), '--grpc-port', String(port), '--http-port', String(await freePort()), '--bind', '127.0.0.1', '--drain-delay', '0s'],
      env: { ...process.env, ...prepared.env, ALLOC_OUT: out, ALLOC_DELAY_MS: '2500' },
      logFile,
      cwd: ROOT,
    });
    const started = Date.now();
    await waitUntilServing(port, prepared.requests[0], server);
    const frameFile = path.join(workDir, `frame-${id}.bin`);
    fs.writeFileSync(frameFile, grpcFrame(encodeCheckRequest(prepared.requests[0])));
    const load = (seconds) =>
      runToCompletion({ cpu: plan.loadCpu, command: 'h2load', args: ['-c', '8', '-m', '16', '-t', '1', '-D', String(seconds), '-d', frameFile, '-H', 'content-type: application/grpc', '-H', 'te: trailers', `http://127.0.0.1:${port}${CHECK_PATH}`], timeoutMs: (seconds + 30) * 1000 });
    await load(2); // warm-up (JIT)
    while (!fs.readFileSync(logFile, 'utf8').includes('alloc-hook: sampling')) {
      if (Date.now() - started > 30_000) throw new Error('the sampling profiler did not start');
      await sleep(100);
    }
    const run = await load(duration);
    const answered = Number(/requests: \d+ total, \d+ started, (\d+) done/.exec(run.stdout)?.[1] ?? 0);
    process.kill(server.pid, 'SIGUSR2');
    while (!fs.existsSync(out) || !fs.readFileSync(logFile, 'utf8').includes('alloc-hook: written')) {
      if (Date.now() - started > 90_000) throw new Error('no heap profile written');
      await sleep(100);
    }
    await server.stop(5000);
    summarise(scenario, JSON.parse(fs.readFileSync(out, 'utf8')), answered);
  }
} finally {
  await ctx.close();
  fs.rmSync(workDir, { recursive: true, force: true });
}

function summarise(scenario, profile, checks) {
  const bytes = new Map();
  let total = 0;
  const name = (frame) => `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`;
  const walk = (node, callers) => {
    const frame = node.callFrame;
    let key = name(frame);
    if (frame.url === '') {
      const caller = callers.findLast((f) => f.url !== '');
      key = `${frame.functionName || '(native)'} <- ${caller ? name(caller) : '?'}`;
    }
    total += node.selfSize;
    if (node.selfSize > 0) bytes.set(key, (bytes.get(key) ?? 0) + node.selfSize);
    callers.push(frame);
    for (const child of node.children) walk(child, callers);
    callers.pop();
  };
  walk(profile.head, []);
  const ours = [...bytes].filter(([key]) => key.includes('dist/')).reduce((sum, [, b]) => sum + b, 0);
  console.log(`\n(${scenario.id}) ${scenario.title}: ${checks} checks sampled; ${(total / checks).toFixed(0)} bytes allocated per check, ${(ours / checks).toFixed(0)} of them by Portcullis's own functions`);
  for (const [key, b] of [...bytes].sort((x, y) => y[1] - x[1]).slice(0, Number(args.top))) console.log(`  ${(b / checks).toFixed(0).padStart(6)} B/check  ${key}`);
}

