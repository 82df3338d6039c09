// One measurement: drive a server with h2load or the bench's own generator (bench/loadgen.mjs),
// check that every answer was the expected CheckResponse, and return throughput, latency
// percentiles and CPU accounting (including CPU used by unrelated processes, so a noisy machine
// shows in the results instead of hiding in them).

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CHECK_PATH, ROOT } from './proto.mjs';
import { machineUserCpuSeconds, processCpuSeconds, processTree, runToCompletion, waitForQuiet } from './processes.mjs';
import { percentile } from './stats.mjs';

export const H2LOAD_INSTALL_HINT = 'h2load not found: install it with `apt-get update && apt-get install -y nghttp2-client` (Debian/Ubuntu)';

export function h2loadVersion() {
  const result = spawnSync('h2load', ['--version'], { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : undefined;
}

/** Load shapes: how Envoy multiplexes (8 connections × 16 streams), and one request at a time. */
export const SHAPES = [
  { id: '8x16', connections: 8, streams: 16, label: '8 conn x 16 streams' },
  { id: '1x1', connections: 1, streams: 1, label: '1 at a time' },
];

/**
 * @param {object} options
 * @param {'h2load'|'raw'} options.generator
 * @param {number} options.port          gRPC port on 127.0.0.1
 * @param {string} options.frameFile     gRPC frames (one for h2load; any number for raw)
 * @param {object} options.shape         one of SHAPES
 * @param {number} options.seconds       measured duration
 * @param {number} options.warmupSeconds
 * @param {object} options.plan          cpuPlan()
 * @param {number} options.serverPid     (its descendants, e.g. cluster workers, are counted too)
 * @param {object} options.expect        { kind: 'ok' } or { kind: 'deny', httpStatus }
 * @param {number} options.expectedResponseBytes  gRPC frame size of the sanity response (h2load check)
 * @param {string} options.workDir
 * @param {{ next: number }} [options.cursor]  raw: where the next run starts in the frames (advanced)
 */
export async function measure(options) {
  const quiet = await waitForQuiet({ maxWaitMs: options.quietWaitMs ?? 10_000 });
  // h2load warms up in a run of its own, before the CPU accounting starts; loadgen.mjs warms up
  // inside the measured process.
  const warmupProblems = options.generator === 'h2load' ? await warmUpH2load(options) : [];
  const before = cpuSnapshot(options.serverPid);
  const result = options.generator === 'h2load' ? await measureH2load(options) : await measureRaw(options);
  result.problems.unshift(...warmupProblems);
  const after = cpuSnapshot(options.serverPid);
  const wall = (after.at - before.at) / 1000;
  const serverUser = after.server && before.server ? after.server.user - before.server.user : 0;
  const serverAll = after.server && before.server ? after.server.user + after.server.system - before.server.user - before.server.system : 0;
  const generatorUser = result.generatorCpu?.user ?? 0;
  const others = after.machineUser - before.machineUser - serverUser - generatorUser - (after.self - before.self);
  const generatorAll = result.generatorCpu ? result.generatorCpu.user + result.generatorCpu.system : NaN;
  return {
    ...result,
    generatorCpu: undefined,
    serverCpuCores: round(serverAll / wall, 2),
    // CPU the server spent per answered check (user + system, µs): unlike checks/s, it hardly
    // moves when other processes take a share of the server's core.
    cpuUsPerCheck: result.requests > 0 ? round((serverAll / result.requests) * 1e6, 1) : NaN,
    generatorCpuCores: round(generatorAll / wall, 2),
    otherUserCpuCores: round(Math.max(0, others) / wall, 2),
    waitedForQuietMs: quiet.waitedMs,
  };
}

/** CPU so far of the machine, of the server (with its cluster workers) and of this process. */
function cpuSnapshot(serverPid) {
  const self = process.cpuUsage();
  let server;
  for (const pid of processTree(serverPid)) {
    const cpu = processCpuSeconds(pid);
    if (cpu) server = { user: (server?.user ?? 0) + cpu.user, system: (server?.system ?? 0) + cpu.system };
  }
  return { at: Date.now(), machineUser: machineUserCpuSeconds(), server, self: self.user / 1e6 };
}

function h2loadArgs({ port, frameFile, shape, seconds }, extra = []) {
  return [
    '-c', String(shape.connections), '-m', String(shape.streams), '-t', '1',
    '-D', String(seconds),
    '-d', frameFile,
    '-H', 'content-type: application/grpc',
    '-H', 'te: trailers',
    ...extra,
    `http://127.0.0.1:${port}${CHECK_PATH}`,
  ];
}

async function warmUpH2load(options) {
  const { plan, warmupSeconds } = options;
  if (!(warmupSeconds > 0)) return [];
  const warm = await runToCompletion({ cpu: plan.loadCpu, command: 'h2load', args: h2loadArgs({ ...options, seconds: warmupSeconds }), timeoutMs: (warmupSeconds + 20) * 1000 });
  return warm.code === 0 ? [] : [`warm-up: h2load exited ${warm.code}: ${warm.stderr.trim().split('\n').pop()}`];
}

async function measureH2load(options) {
  const { plan, seconds, workDir, shape, expectedResponseBytes } = options;
  const problems = [];
  const logFile = path.join(workDir, `h2load-${shape.id}-${Date.now()}.log`);
  const run = await runToCompletion({
    cpu: plan.loadCpu,
    command: 'h2load',
    args: h2loadArgs(options, [`--log-file=${logFile}`]),
    timeoutMs: (seconds + 30) * 1000,
  });
  const out = run.stdout;
  if (run.code !== 0) problems.push(`h2load exited ${run.code}: ${(run.stderr || out).trim().split('\n').pop()}`);
  const finished = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(out);
  const requests = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const traffic = /traffic: .*?\((\d+)\) data/.exec(out);
  if (!finished || !requests) {
    problems.push(`could not read h2load output: ${out.trim().split('\n').slice(-3).join(' | ')}`);
    return { requests: 0, checksPerSec: 0, p50Ms: NaN, p99Ms: NaN, problems, generatorCpu: run.cpuSeconds };
  }
  const [, total, , done, succeeded, failed, errored, timedOut] = requests.map(Number);
  if (failed || errored || timedOut || succeeded !== done) problems.push(`h2load: ${failed} failed, ${errored} errored, ${timedOut} timeout of ${total}`);
  const { sorted, non200 } = readLatencyLog(logFile);
  if (non200 > 0) problems.push(`${non200} responses were not HTTP 200`);
  // gRPC errors travel in trailers with HTTP 200: a response without a message shows up as
  // missing DATA bytes. Every answer to the same request should be the same size.
  if (traffic && expectedResponseBytes && done > 0) {
    const perResponse = Number(traffic[1]) / done;
    if (perResponse < expectedResponseBytes * 0.99) {
      problems.push(`responses average ${perResponse.toFixed(1)} bytes of gRPC data, expected ${expectedResponseBytes}: some were not CheckResponses (gRPC errors?)`);
    }
  }
  fs.rmSync(logFile, { force: true });
  return {
    requests: done,
    checksPerSec: round(Number(finished[2]), 0),
    p50Ms: round(percentile(sorted, 0.5) / 1000, 3),
    p99Ms: round(percentile(sorted, 0.99) / 1000, 3),
    problems,
    generatorCpu: run.cpuSeconds,
  };
}

/** h2load --log-file: "start(µs since epoch) \t HTTP status \t duration(µs)" per request. */
function readLatencyLog(file) {
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return { sorted: new Float64Array(0), non200: 0 };
  }
  const lines = text.split('\n');
  const durations = new Float64Array(lines.length);
  let count = 0;
  let non200 = 0;
  for (const line of lines) {
    if (line === '') continue;
    const [, status, micros] = line.split('\t');
    if (status !== '200') non200++;
    durations[count++] = Number(micros);
  }
  return { sorted: durations.subarray(0, count).sort(), non200 };
}

async function measureRaw(options) {
  const { plan, port, frameFile, shape, seconds, warmupSeconds, expect } = options;
  const problems = [];
  const run = await runToCompletion({
    cpu: plan.loadCpu,
    command: process.execPath,
    args: [
      path.join(ROOT, 'bench', 'loadgen.mjs'),
      '--port', String(port), '--frames', frameFile,
      '--connections', String(shape.connections), '--streams', String(shape.streams),
      '--duration', String(seconds), '--warmup', String(warmupSeconds),
      '--start', String(options.cursor?.next ?? 0),
    ],
    timeoutMs: (seconds + warmupSeconds + 30) * 1000,
  });
  let report;
  try {
    report = JSON.parse(run.stdout.trim().split('\n').pop());
  } catch {
    problems.push(`loadgen exited ${run.code}: ${run.stderr.trim().split('\n').slice(-2).join(' | ')}`);
    return { requests: 0, checksPerSec: 0, p50Ms: NaN, p99Ms: NaN, problems, generatorCpu: run.cpuSeconds };
  }
  if (options.cursor) options.cursor.next += report.sent;
  const unexpected = unexpectedOutcomes(report.outcomes, expect);
  if (unexpected) problems.push(unexpected);
  if (report.timedOut) problems.push('loadgen hit its hard time limit');
  return {
    requests: report.requests,
    checksPerSec: round(report.checksPerSec, 0),
    p50Ms: round(report.p50Ms, 3),
    p99Ms: round(report.p99Ms, 3),
    distinctBodies: report.distinctBodies,
    problems,
    generatorCpu: run.cpuSeconds,
  };
}

/** A description of the answers that were not the expected kind, or undefined when all were. */
export function unexpectedOutcomes(outcomes, expect) {
  const wanted = expect.kind === 'ok' ? outcomes.ok : (outcomes.deny[String(expect.httpStatus)] ?? 0);
  const total = outcomes.ok + Object.values(outcomes.deny).reduce((a, b) => a + b, 0) + Object.values(outcomes.grpcError).reduce((a, b) => a + b, 0) + outcomes.httpError + outcomes.malformed + outcomes.streamError;
  if (wanted === total) return undefined;
  const parts = [];
  if (expect.kind !== 'ok' && outcomes.ok) parts.push(`${outcomes.ok} ok`);
  for (const [status, count] of Object.entries(outcomes.deny)) if (expect.kind === 'ok' || String(expect.httpStatus) !== status) parts.push(`${count} deny ${status}`);
  for (const [code, count] of Object.entries(outcomes.grpcError)) parts.push(`${count} gRPC status ${code}`);
  for (const key of ['httpError', 'malformed', 'streamError']) if (outcomes[key]) parts.push(`${outcomes[key]} ${key}`);
  return `${total - wanted} of ${total} answers were not ${expect.kind === 'ok' ? 'ok' : `deny ${expect.httpStatus}`}: ${parts.join(', ')}`;
}

function round(value, digits) {
  if (!Number.isFinite(value)) return value;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
