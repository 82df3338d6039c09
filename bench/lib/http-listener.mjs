// The HTTP authorization listener row of `npm run bench`: the scenarios that send one fixed
// request (a, c, e, f), asked the way nginx auth_request asks (GET /nginx with X-Original-* and
// X-Forwarded-*), over HTTP/1.1 keep-alive connections (h2load --h1, no pipelining, as proxies
// do), against a plain node:http server answering 200 with a fixed body, driven with the very
// same requests just before (bench/null-http-server.mjs). Load goes to 127.0.0.1 only, bounded in time.

import fs from 'node:fs';
import path from 'node:path';
import { freePort, processCpuSeconds, runToCompletion, startProcess, waitForQuiet } from './processes.mjs';
import { ROOT } from './proto.mjs';
import { NotAvailable, SCENARIOS } from './scenarios.mjs';
import { percentile } from './stats.mjs';

const CLI = path.join(ROOT, 'dist', 'cli.js');
export const HTTP_SCENARIOS = ['a', 'c', 'e', 'f'];
/** Keep-alive connections, one request in flight on each (HTTP/1.1 proxies do not pipeline). */
export const HTTP_SHAPES = [
  { id: '64c', connections: 64, label: '64 keep-alive connections' },
  { id: '1x1', connections: 1, label: '1 at a time' },
];

/** The nginx-shape request headers for a scenario's CheckRequest. */
function nginxHeaders(checkRequest) {
  const http = checkRequest.attributes.request.http;
  const headers = [];
  for (const [name, value] of Object.entries(http.headers)) if (!name.startsWith(':')) headers.push(`${name}: ${value}`);
  headers.push(`x-original-method: ${http.method}`, `x-original-uri: ${http.path}${http.query ? `?${http.query}` : ''}`, `x-forwarded-host: ${http.host}`, 'x-forwarded-for: 10.1.2.3');
  return headers;
}

async function waitForStatus(port, headers, status, server, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (!server.running) throw new Error(`server exited: ${server.logReason()}`);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/nginx`, { headers: Object.fromEntries(headers.map((h) => [h.slice(0, h.indexOf(':')), h.slice(h.indexOf(':') + 2)])), signal: AbortSignal.timeout(1000) });
      await response.arrayBuffer();
      if (response.status === status) return;
      last = `answered ${response.status}, expected ${status}`;
    } catch (error) {
      last = error.message;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(last);
}

async function h2loadH1({ port, headers, shape, seconds, plan, workDir, expectStatus }) {
  const args = (duration, extra = []) => ['--h1', '-c', String(shape.connections), '-m', '1', '-t', '1', '-D', String(duration), ...headers.flatMap((h) => ['-H', h]), ...extra, `http://127.0.0.1:${port}/nginx`];
  const logFile = path.join(workDir, `h2load-h1-${shape.id}-${Date.now()}.log`);
  const run = await runToCompletion({ cpu: plan.loadCpu, command: 'h2load', args: args(seconds, [`--log-file=${logFile}`]), timeoutMs: (seconds + 30) * 1000 });
  const problems = [];
  const finished = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(run.stdout);
  if (run.code !== 0 || !finished) problems.push(`h2load --h1 exited ${run.code}: ${(run.stderr || run.stdout).trim().split('\n').pop()}`);
  let text = '';
  try {
    text = fs.readFileSync(logFile, 'utf8');
  } catch {
    // no log: reported below as no requests
  }
  fs.rmSync(logFile, { force: true });
  const durations = [];
  let unexpected = 0;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const [, status, micros] = line.split('\t');
    if (Number(status) !== expectStatus) unexpected++;
    durations.push(Number(micros));
  }
  if (unexpected > 0) problems.push(`${unexpected} answers were not HTTP ${expectStatus}`);
  if (durations.length === 0) problems.push('no requests completed');
  const sorted = Float64Array.from(durations).sort();
  return {
    requests: durations.length,
    checksPerSec: finished ? Math.round(Number(finished[2])) : 0,
    p50Ms: Math.round((percentile(sorted, 0.5) / 1000) * 1000) / 1000,
    p99Ms: Math.round((percentile(sorted, 0.99) / 1000) * 1000) / 1000,
    problems,
  };
}

async function measureServer({ name, command, args, env, port, headers, expectStatus, plan, workDir, seconds, warmupSeconds }) {
  const server = startProcess({ cpu: plan.serverCpu, command, args, env, logFile: path.join(workDir, `http-${name}.log`), cwd: ROOT });
  try {
    await waitForStatus(port, headers, expectStatus, server);
    const out = {};
    for (const shape of HTTP_SHAPES) {
      await waitForQuiet();
      if (warmupSeconds > 0) await h2loadH1({ port, headers, shape, seconds: warmupSeconds, plan, workDir, expectStatus });
      const before = processCpuSeconds(server.pid);
      const started = Date.now();
      const result = await h2loadH1({ port, headers, shape, seconds, plan, workDir, expectStatus });
      const after = processCpuSeconds(server.pid);
      result.serverCpuCores = before && after ? Math.round(((after.user + after.system - before.user - before.system) / ((Date.now() - started) / 1000)) * 100) / 100 : undefined;
      out[shape.id] = result;
      console.log(`  ${name.padEnd(14)} ${shape.id.padEnd(4)} ${String(result.checksPerSec).padStart(7)} req/s  p50 ${result.p50Ms.toFixed(3)} ms  p99 ${result.p99Ms.toFixed(3)} ms  CPU: server ${Math.round((result.serverCpuCores ?? NaN) * 100)}%${result.problems.length ? `  PROBLEM: ${result.problems.join('; ')}` : ''}`);
    }
    return out;
  } finally {
    await server.stop();
  }
}

/** Measure every HTTP scenario; returns { status, rows: [{ id, title, null, portcullis, ratio }] }. */
export async function measureHttpListener({ plan, workDir, fixtures, seconds, warmupSeconds }) {
  if (!fs.existsSync(CLI)) return { status: 'not available', reason: 'dist/cli.js is missing: run `npm run build`' };
  console.log('\nHTTP authorization listener (nginx shape, h2load --h1 keep-alive) vs plain node:http 200');
  const rows = [];
  for (const id of HTTP_SCENARIOS) {
    const scenario = SCENARIOS.find((s) => s.id === id);
    const row = { id, title: scenario.title, policy: `bench/policies/${scenario.policy}` };
    let prepared;
    try {
      prepared = await scenario.prepare(fixtures);
    } catch (error) {
      if (error instanceof NotAvailable) {
        rows.push({ ...row, status: 'not available', reason: error.message });
        console.log(`  (${id}) not available: ${error.message}`);
        continue;
      }
      throw error;
    }
    const headers = nginxHeaders(prepared.requests[0]);
    const expectStatus = prepared.expect.kind === 'ok' ? 200 : prepared.expect.httpStatus;
    console.log(`(${id}) ${scenario.title}`);
    const nullPort = await freePort();
    row.null = await measureServer({ name: 'node:http 200', command: process.execPath, args: [path.join(ROOT, 'bench', 'null-http-server.mjs'), '--port', String(nullPort)], env: process.env, port: nullPort, headers, expectStatus: 200, plan, workDir, seconds, warmupSeconds });
    const port = await freePort();
    const args = [CLI, 'serve', '--config', path.join(ROOT, 'bench', 'policies', scenario.policy), '--grpc-port', String(await freePort()), '--http-port', String(await freePort()), '--authz-http-port', String(port), '--bind', '127.0.0.1'];
    try {
      row.portcullis = await measureServer({ name: `portcullis ${id}`, command: process.execPath, args, env: { ...process.env, ...prepared.env }, port, headers, expectStatus, plan, workDir, seconds, warmupSeconds });
    } catch (error) {
      rows.push({ ...row, status: 'failed', problems: [error.message] });
      console.log(`  FAILED: ${error.message}`);
      continue;
    }
    row.ratio = Object.fromEntries(HTTP_SHAPES.map((s) => [s.id, Math.round((row.portcullis[s.id].checksPerSec / row.null[s.id].checksPerSec) * 100) / 100]));
    // Server CPU per request: what the ratio is on a machine too busy to saturate the server core.
    const cpuUs = (r) => (r.serverCpuCores && r.checksPerSec ? (r.serverCpuCores / r.checksPerSec) * 1e6 : NaN);
    row.cpuUsPerRequest = Object.fromEntries(HTTP_SHAPES.map((s) => [s.id, { null: Math.round(cpuUs(row.null[s.id]) * 10) / 10, portcullis: Math.round(cpuUs(row.portcullis[s.id]) * 10) / 10 }]));
    row.cpuRatio = Object.fromEntries(HTTP_SHAPES.map((s) => [s.id, Math.round((cpuUs(row.null[s.id]) / cpuUs(row.portcullis[s.id])) * 100) / 100]));
    const problems = [...Object.values(row.null), ...Object.values(row.portcullis)].flatMap((r) => r.problems);
    row.status = problems.length > 0 ? 'failed' : 'measured';
    if (problems.length > 0) row.problems = problems;
    rows.push(row);
  }
  return { status: rows.some((r) => r.status === 'failed') ? 'failed' : 'measured', shapes: HTTP_SHAPES, rows };
}

/** The HTTP rows as a markdown table plus notes. */
export function formatHttpTable(http) {
  if (!http) return '';
  if (http.status === 'not available') return `HTTP authorization listener: not available: ${http.reason}`;
  const lines = ['| scenario (nginx shape) | load | node:http 200 req/s | Portcullis checks/s | x node:http | CPU µs/req node:http | CPU µs/check Portcullis | x node:http (CPU) | p50 ms | p99 ms |', '|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|'];
  for (const row of http.rows) {
    if (row.status === 'not available' || !row.portcullis) {
      lines.push(`| (${row.id}) ${row.title} | ${row.status}${row.reason ? `: ${row.reason}` : ''} | | | | | | | | |`);
      continue;
    }
    for (const shape of http.shapes) {
      const p = row.portcullis[shape.id];
      const cpu = row.cpuUsPerRequest[shape.id];
      lines.push(`| (${row.id}) ${row.title} | ${shape.label} | ${row.null[shape.id].checksPerSec} | ${p.checksPerSec} | ${row.ratio[shape.id].toFixed(2)} | ${cpu.null} | ${cpu.portcullis} | ${row.cpuRatio[shape.id].toFixed(2)} | ${p.p50Ms.toFixed(3)} | ${p.p99Ms.toFixed(3)} |`);
    }
  }
  const problems = http.rows.flatMap((r) => (r.problems ?? []).map((p) => `(${r.id}) PROBLEM: ${p}`));
  return `${lines.join('\n')}\n\nHTTP: h2load --h1, no pipelining; the same request headers to both servers; x node:http = Portcullis checks/s over a plain node:http server answering 200 with a fixed body, measured just before on the same core; x node:http (CPU) = the same ratio from server CPU time per request (meaningful when a busy machine keeps the server below a full core).${problems.length ? `\n${problems.join('\n')}` : ''}`;
}
