// Child processes of the bench: CPU pinning with taskset, free ports, starting and stopping
// servers, and CPU accounting from /proc.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

/**
 * Where things run. With two or more cores and taskset available, the server under test gets
 * core 1 and the load generator core 0; otherwise nothing is pinned (and the results say so).
 */
export function cpuPlan() {
  const cores = os.availableParallelism();
  const taskset = spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0;
  if (cores >= 2 && taskset) return { pinned: true, cores, serverCpu: '1', loadCpu: '0', note: 'server on core 1, load generator on core 0' };
  const why = cores < 2 ? `only ${cores} core` : 'taskset (util-linux) not found';
  return { pinned: false, cores, serverCpu: undefined, loadCpu: undefined, note: `not pinned: ${why}` };
}

/** spawn(), pinned to `cpu` when given. taskset execs the command, so child.pid is its pid. */
export function spawnPinned(cpu, command, args, options) {
  return cpu === undefined ? spawn(command, args, options) : spawn('taskset', ['-c', cpu, command, ...args], options);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** CPU seconds of a process so far: { user, system } (undefined once it is gone). */
export function processCpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(fields[11]) / CLOCK_TICKS, system: Number(fields[12]) / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

/** User-mode CPU seconds of the whole machine (all cores), from /proc/stat. */
export function machineUserCpuSeconds() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/);
  return (Number(line[1]) + Number(line[2])) / CLOCK_TICKS; // user + nice
}

/** A process and all its descendants (cluster workers), from /proc/<pid>/task/<tid>/children. */
export function processTree(pid) {
  const pids = [pid];
  for (let i = 0; i < pids.length; i++) {
    let tasks = [];
    try {
      tasks = fs.readdirSync(`/proc/${pids[i]}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      try {
        const children = fs.readFileSync(`/proc/${pids[i]}/task/${tid}/children`, 'utf8').trim();
        if (children) pids.push(...children.split(/\s+/).map(Number));
      } catch {
        // the task ended meanwhile
      }
    }
  }
  return pids;
}

/** Busy CPU seconds of the whole machine (everything but idle and iowait), from /proc/stat. */
export function machineBusyCpuSeconds() {
  const [, user, nice, system, , , irq, softirq, steal] = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
}

/**
 * Wait (at most maxWaitMs) until the machine is quiet: other work running during a measurement
 * shows up as a slower server. Returns the busy cores seen last and how long it waited.
 */
export async function waitForQuiet({ maxWaitMs = 10_000, thresholdCores = 0.15 } = {}) {
  const started = Date.now();
  for (;;) {
    const before = machineBusyCpuSeconds();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const busyCores = (machineBusyCpuSeconds() - before) / 0.5;
    if (busyCores <= thresholdCores || Date.now() - started >= maxWaitMs) return { busyCores, waitedMs: Date.now() - started };
  }
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/**
 * A long-running server child. Output goes to `logFile`; `exited` resolves with the exit code.
 * stop() sends SIGTERM, then SIGKILL after `graceMs`.
 */
export function startProcess({ cpu, command, args, env, logFile, cwd }) {
  const log = fs.openSync(logFile, 'w');
  const child = spawnPinned(cpu, command, args, { cwd, env, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  let exitCode;
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exitCode = code ?? signal;
      resolve(exitCode);
    });
    child.once('error', (error) => {
      exitCode = error.message;
      resolve(exitCode);
    });
  });
  return {
    pid: child.pid,
    exited,
    get running() {
      return exitCode === undefined;
    },
    /** The most telling line of the log: the first that mentions an error, else the last one. */
    logReason() {
      try {
        const lines = fs.readFileSync(logFile, 'utf8').trim().split('\n');
        return (lines.find((line) => /error|invalid|cannot|refused/i.test(line)) ?? lines.at(-1) ?? '').trim().slice(0, 300);
      } catch {
        return '';
      }
    },
    async stop(graceMs = 5000) {
      if (exitCode !== undefined) return exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Run a command to completion (bounded by timeoutMs), pinned when `cpu` is given. */
export function runToCompletion({ cpu, command, args, env, timeoutMs, cwd }) {
  return new Promise((resolve) => {
    const child = spawnPinned(cpu, command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout = [];
    const stderr = [];
    child.stdout.on('data', (chunk) => stdout.push(chunk));
    child.stderr.on('data', (chunk) => stderr.push(chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    // /proc/<pid>/stat is gone once the child exits: keep the last sample (at most 200 ms old).
    let cpuSeconds;
    const sampler = setInterval(() => {
      cpuSeconds = processCpuSeconds(child.pid) ?? cpuSeconds;
    }, 200);
    // 'close', not 'exit': it comes after the child's stdout has been read to the end.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearInterval(sampler);
      resolve({ code: code ?? signal, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString(), pid: child.pid, cpuSeconds });
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      clearInterval(sampler);
      resolve({ code: error.message, stdout: '', stderr: error.message, pid: undefined, cpuSeconds });
    });
  });
}

/** NODE_OPTIONS as charts/portcullis renders them with its default values (maxHeapMb, maxSemiSpaceMb). */
export function chartNodeOptions() {
  const valuesFile = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'charts', 'portcullis', 'values.yaml');
  const values = parseYaml(fs.readFileSync(valuesFile, 'utf8'));
  const flags = [];
  if (values.maxHeapMb) flags.push(`--max-old-space-size=${values.maxHeapMb}`);
  if (values.maxSemiSpaceMb) flags.push(`--max-semi-space-size=${values.maxSemiSpaceMb}`);
  return flags.join(' ');
}
