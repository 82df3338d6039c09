// A/B of two builds by CPU per check: both servers run at once, pinned to core 1; h2load (core 0)
// sends the same fixed number of checks to each in alternating rounds, and each server's CPU
// (user + system, from /proc) is read around its round. The median CPU µs per check of each build
// is the figure. Run it with the same build on both sides first (--a dist/cli.js): that A/A ratio
// is the machine's noise floor at the moment, and a change smaller than it is not measured.
//
//   npm run build && node bench/ab-cpu.mjs --a /tmp/before/dist/cli.js [--b dist/cli.js] --only a,f [--rounds 8] [--checks 60000]
//
// --a: the build before a change (git worktree add --detach /tmp/before <rev>, npm ci or a
// node_modules symlink, npx tsc -p tsconfig.build.json). Load goes to 127.0.0.1 only, bounded by
// --checks per round.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cpuPlan, freePort, processCpuSeconds, runToCompletion, startProcess } from './lib/processes.mjs';
import { CHECK_PATH, ROOT, encodeCheckRequest, grpcFrame, waitUntilServing } from './lib/proto.mjs';
import { SCENARIOS } from './lib/scenarios.mjs';
import { scenarioContext } from './lib/fixtures.mjs';

const { values: args } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string', default: path.join(ROOT, 'dist', 'cli.js') },
    only: { type: 'string', default: 'a,f' },
    rounds: { type: 'string', default: '8' },
    checks: { type: 'string', default: '60000' },
  },
});
if (!args.a) {
  console.error('usage: node bench/ab-cpu.mjs --a <cli.js of the build before> [--b <cli.js>] [--only a,f] [--rounds 8] [--checks 60000]');
  process.exit(2);
}
const rounds = Math.min(40, Math.max(2, Number(args.rounds)));
const checks = Math.min(500_000, Math.max(1000, Number(args.checks)));
const plan = cpuPlan();
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-ab-'));
const ctx = scenarioContext(workDir, path.resolve(args.b));

const median = (values) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)];

try {
  console.log(`A ${args.a}\nB ${args.b}\n${plan.note}; ${rounds} rounds of ${checks} checks per build, h2load 8x16`);
  for (const id of args.only.split(',')) {
    const scenario = SCENARIOS.find((s) => s.id === id);
    if (!scenario || scenario.generator !== 'h2load') throw new Error(`no h2load scenario ${id} (the ones with a fixed request)`);
    const prepared = await scenario.prepare(ctx);
    const frameFile = path.join(workDir, `frame-${id}.bin`);
    fs.writeFileSync(frameFile, grpcFrame(encodeCheckRequest(prepared.requests[0])));
    const servers = [];
    for (const [name, cli] of [['A', args.a], ['B', args.b]]) {
      const port = await freePort();
      const server = startProcess({
        cpu: plan.serverCpu,
        command: process.execPath,
        args: [path.resolve(cli), 'serve', '--config', path.join(ROOT, 'bench', 'policies', scenario.policy), '--grpc-port', String(port), '--http-port', String(await freePort()), '--bind', '127.0.0.1', '--drain-delay', '0s'],
        env: { ...process.env, ...prepared.env },
        logFile: path.join(workDir, `server-${id}-${name}.log`),
        cwd: ROOT,
      });
      await waitUntilServing(port, prepared.requests[0], server);
      servers.push({ name, port, server, cpu: [], rate: [] });
    }
    const load = (port, n) =>
      runToCompletion({ cpu: plan.loadCpu, command: 'h2load', args: ['-c', '8', '-m', '16', '-t', '1', '-n', String(n), '-d', frameFile, '-H', 'content-type: application/grpc', '-H', 'te: trailers', `http://127.0.0.1:${port}${CHECK_PATH}`], timeoutMs: 120_000 });
    for (const s of servers) await load(s.port, Math.min(checks, 30_000)); // warm-up (JIT)
    for (let r = 0; r < rounds; r++) {
      for (const s of r % 2 === 0 ? servers : [...servers].reverse()) {
        const before = processCpuSeconds(s.server.pid);
        const run = await load(s.port, checks);
        const after = processCpuSeconds(s.server.pid);
        const ok = Number(/(\d+) succeeded/.exec(run.stdout)?.[1] ?? 0);
        if (!before || !after || ok === 0) throw new Error(`${s.name}: round failed (${run.stdout.split('\n').find((l) => l.startsWith('requests:')) ?? run.stderr.slice(0, 200)})`);
        s.cpu.push(((after.user + after.system - before.user - before.system) / ok) * 1e6);
        s.rate.push(Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(run.stdout)?.[1] ?? NaN));
      }
    }
    const [A, B] = servers;
    const cpuA = median(A.cpu);
    const cpuB = median(B.cpu);
    console.log(`\n(${id}) ${scenario.title}`);
    console.log(`  CPU µs/check  A ${cpuA.toFixed(1)}  B ${cpuB.toFixed(1)}  B/A ${(cpuB / cpuA).toFixed(3)}   (rounds: A ${A.cpu.map((x) => x.toFixed(1)).join(' ')} | B ${B.cpu.map((x) => x.toFixed(1)).join(' ')})`);
    console.log(`  checks/s      A ${median(A.rate).toFixed(0)}  B ${median(B.rate).toFixed(0)}  B/A ${(median(B.rate) / median(A.rate)).toFixed(3)}`);
    for (const s of servers) await s.server.stop(5000);
  }
} finally {
  await ctx.close();
  fs.rmSync(workDir, { recursive: true, force: true });
}
