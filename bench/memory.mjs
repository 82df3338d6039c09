// Memory check of issue 7: peak RSS of Portcullis holding 100k distinct verified tokens and 100k
// distinct API keys in its caches, then RSS under a spray of one million distinct invalid tokens
// and one million distinct invalid keys (the caches are bounded, so memory must stay flat).
//
//   npm run build && node bench/memory.mjs [--store postgres|file] [--tokens 100000] [--keys 100000]
//                                          [--spray 1000000] [--server-node-options '...'] [--no-save]
//
// --store postgres (default): keys in PostgreSQL (BENCH_DATABASE_URL, default
// postgres://postgres@127.0.0.1:5432/test), in a schema made for the run and dropped after it.
// --store file: keys in the file store, which holds every record in memory as well.
// --server-node-options: NODE_OPTIONS for the server. Default: the V8 settings the Helm chart's
// default values give a pod (maxHeapMb, maxSemiSpaceMb), so the figure is the one a deployment
// sees; --server-node-options= (empty) leaves sizing to Node (on a large host, a heap that may
// grow to gigabytes of uncollected garbage).
// --spray 0 skips the sprays.
//
// Saves bench/results/memory-<timestamp>.json and memory-latest.json. Load goes to 127.0.0.1 only;
// every phase is bounded by its request count and a time limit.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DATABASE_URL, dropSchema, fillPostgres, mintKeys } from './lib/key-records.mjs';
import { unexpectedOutcomes } from './lib/measure.mjs';
import { chartNodeOptions, cpuPlan, freePort, runToCompletion, startProcess } from './lib/processes.mjs';
import { ROOT, checkRequest, describeResponse, encodeCheckRequest, grpcFrame, sanityCheck } from './lib/proto.mjs';
import { SCOPE, TENANT, signTokenPool, startIssuer } from './lib/fixtures.mjs';
import { readVmHwmKb, readVmRssKb } from './lib/stats.mjs';

const { values: args } = parseArgs({
  options: {
    tokens: { type: 'string', default: '100000' },
    keys: { type: 'string', default: '100000' },
    spray: { type: 'string', default: '1000000' },
    store: { type: 'string', default: 'postgres' },
    'server-node-options': { type: 'string' },
    'no-save': { type: 'boolean', default: false },
  },
});
const TOKENS = Number(args.tokens);
const KEYS = Number(args.keys);
const SPRAY = Number(args.spray);
const STORE = args.store;
const SERVER_NODE_OPTIONS = args['server-node-options'] ?? chartNodeOptions();
const CLI = path.join(ROOT, 'dist', 'cli.js');
/** Issue 7 target for 100k cached tokens and keys. */
const PEAK_RSS_TARGET_MB = 150;
/** "Flat": over the second half of a spray (caches full by then) RSS may not grow by more than this. */
const FLAT_TOLERANCE_MB = 16;
const ITEM_PATH = '/v1/items/42';

const mb = (kb) => Math.round((kb / 1024) * 10) / 10;
const request = (headers) => checkRequest({ path: ITEM_PATH, headers, requestId: 'bench-memory-0123456789' });

async function writeKeyFile(file, records) {
  const { serializeKeyFile } = await import(path.join(ROOT, 'dist', 'keys', 'file-format.js'));
  fs.writeFileSync(file, serializeKeyFile(records));
  return { BENCH_KEYS_FILE: file };
}

async function fillPostgresEnv(schema, records) {
  await fillPostgres(schema, records);
  return { BENCH_DATABASE_URL: DATABASE_URL, BENCH_PG_SCHEMA: schema };
}

function writeFrames(file, requests) {
  fs.writeFileSync(file, Buffer.concat(requests.map((r) => grpcFrame(encodeCheckRequest(r)))));
  return file;
}

/** Cache hit counters and the V8 heap in use (live objects plus garbage not yet collected). */
async function counters(httpPort) {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
  const read = (name, result) => Number(new RegExp(`^${name}\\{result="${result}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
  const gauge = (name) => {
    const m = new RegExp(`^\\w*${name}(?:\\{[^}]*\\})? ([\\d.e+]+)`, 'm').exec(text);
    return m ? mb(Number(m[1]) / 1024) : undefined;
  };
  const notFound = [...text.matchAll(/^portcullis_keystore_lookups_total\{[^}]*result="not_found"[^}]*\} (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
  return {
    jwtHit: read('portcullis_jwt_cache_total', 'hit'),
    keyHit: read('portcullis_apikey_cache_total', 'hit'),
    keysNotFound: notFound,
    heapUsedMb: gauge('nodejs_heap_size_used_bytes'),
    heapTotalMb: gauge('nodejs_heap_size_total_bytes'),
    // ArrayBuffers (the cache tables, allocated whole; RSS counts only the pages written) and other
    // memory V8 was told about.
    externalMb: gauge('nodejs_external_memory_bytes'),
  };
}

async function main() {
  if (!fs.existsSync(CLI)) {
    console.error('dist/cli.js is missing: run `npm run build` first');
    return 2;
  }
  const plan = cpuPlan();
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-memory-'));
  const report = { version: 1, startedAt: new Date().toISOString(), pinning: plan.note, store: STORE, serverNodeOptions: SERVER_NODE_OPTIONS, tokens: TOKENS, keys: KEYS, spray: SPRAY, phases: [], verdicts: {} };
  if (STORE !== 'file' && STORE !== 'postgres') {
    console.error('--store is postgres or file');
    return 2;
  }
  const issuer = await startIssuer();
  let server;
  let schema;
  try {
    let started = Date.now();
    const tokens = await signTokenPool(issuer, TOKENS);
    console.log(`signed ${TOKENS} RS256 tokens in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    started = Date.now();
    const { keys, records } = await mintKeys(KEYS, { tenant: TENANT, scope: SCOPE });
    const storeEnv = STORE === 'file' ? await writeKeyFile(path.join(workDir, 'keys.yaml'), records) : await fillPostgresEnv((schema = `bench_memory_${process.pid}`), records);
    console.log(`stored ${KEYS} API keys (${STORE} store) in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    const port = await freePort();
    const httpPort = await freePort();
    server = startProcess({
      cpu: plan.serverCpu,
      command: process.execPath,
      args: [CLI, 'serve', '--config', path.join(ROOT, 'bench', 'policies', `memory-${STORE}.yaml`), '--grpc-port', String(port), '--http-port', String(httpPort), '--bind', '127.0.0.1'],
      env: { ...process.env, BENCH_ISSUER: issuer.issuer, BENCH_JWKS_URI: issuer.jwksUri, ...storeEnv, NODE_OPTIONS: SERVER_NODE_OPTIONS },
      logFile: path.join(workDir, 'server.log'),
      cwd: ROOT,
    });
    await waitUntilServing(port, server, request({ authorization: `Bearer ${tokens[0]}` }));
    report.rssAfterStartMb = mb(readVmRssKb(server.pid));
    console.log(`server up: RSS ${report.rssAfterStartMb} MB (policy loaded, ${STORE} key store, NODE_OPTIONS "${SERVER_NODE_OPTIONS}")`);

    const tokenFrames = writeFrames(path.join(workDir, 'tokens.bin'), tokens.map((t) => request({ authorization: `Bearer ${t}` })));
    const keyFrames = writeFrames(path.join(workDir, 'keys.bin'), keys.map((k) => request({ 'x-api-key': k })));
    const phase = async (name, options) => {
      const { rssSamples, ...result } = await drive({ port, plan, serverPid: server.pid, ...options });
      if (!server.running) {
        report.phases.push({ name, ...result, problem: `server exited: ${server.logReason()}` });
        throw new ServerDied(`${name}: server exited: ${server.logReason()}`);
      }
      const { heapUsedMb, heapTotalMb, externalMb } = await counters(httpPort).catch(() => ({}));
      const entry = { name, ...result, rssMb: mb(readVmRssKb(server.pid)), peakRssMb: mb(readVmHwmKb(server.pid)), heapUsedMb, heapTotalMb, externalMb };
      report.phases.push(entry);
      console.log(`${name.padEnd(52)} ${String(result.requests).padStart(8)} checks ${String(Math.round(result.checksPerSec)).padStart(6)}/s  RSS ${entry.rssMb} MB  peak ${entry.peakRssMb} MB  heap ${heapUsedMb ?? '-'}/${heapTotalMb ?? '-'} MB  external ${externalMb ?? '-'} MB${result.problem ? `  PROBLEM: ${result.problem}` : ''}`);
      return { entry, rssSamples };
    };

    // Uncached keys are looked up in the store: PostgreSQL gets 16 lookups in flight (the policy
    // sizes its pool and deadline for that), the rest the usual 8x16.
    const keyShape = STORE === 'postgres' ? [2, 8] : [8, 16];
    const before = await counters(httpPort);
    await phase(`${TOKENS} distinct tokens (verify)`, { frames: tokenFrames, count: TOKENS, expect: { kind: 'ok' } });
    await phase(`${KEYS} distinct keys (look up)`, { frames: keyFrames, count: KEYS, expect: { kind: 'ok' }, shape: keyShape });
    await phase(`same tokens again (cached)`, { frames: tokenFrames, count: TOKENS, expect: { kind: 'ok' } });
    await phase(`same keys again (cached)`, { frames: keyFrames, count: KEYS, expect: { kind: 'ok' } });
    const after = await counters(httpPort);
    // The second passes must be cache hits, or the first passes did not fill the caches.
    report.cacheHitsOnSecondPass = { tokens: after.jwtHit - before.jwtHit, keys: after.keyHit - before.keyHit };
    report.peakRssCachedMb = mb(readVmHwmKb(server.pid));
    const cachedOk = report.cacheHitsOnSecondPass.tokens >= TOKENS * 0.99 && report.cacheHitsOnSecondPass.keys >= KEYS * 0.99;
    report.verdicts.cached = {
      peakRssMb: report.peakRssCachedMb,
      targetMb: PEAK_RSS_TARGET_MB,
      met: cachedOk && report.peakRssCachedMb <= PEAK_RSS_TARGET_MB,
      note: cachedOk ? 'second passes were served from the caches' : `second passes were not all cache hits: ${JSON.stringify(report.cacheHitsOnSecondPass)}`,
    };

    const every = Math.max(1, Math.floor(SPRAY / 20));
    const beforeSpray = await counters(httpPort);
    for (const [kind, marker, frames, label] of SPRAY > 0 ? [
      ['jwt', tokens[0], tokenFrames, 'invalid tokens (bad signature)'],
      ['api-key', keys[0], keyFrames, 'invalid keys (unknown, checksum ok)'],
    ] : []) {
      const shape = kind === 'api-key' ? keyShape : [8, 16];
      const { rssSamples } = await phase(`${SPRAY} distinct ${label}`, { frames, count: SPRAY, expect: { kind: 'deny', httpStatus: 401 }, spray: kind, marker, rssEvery: every, shape });
      report.verdicts[`spray-${kind}`] = flatness(rssSamples);
    }
    if (SPRAY > 0) {
      // The sprayed keys must reach the store (valid checksum, unknown key), or the spray never
      // touched the key cache.
      report.sprayKeysLookedUp = (await counters(httpPort)).keysNotFound - beforeSpray.keysNotFound;
      if (report.sprayKeysLookedUp < SPRAY * 0.9) report.phases.at(-1).problem ??= `only ${report.sprayKeysLookedUp} of the sprayed keys reached the key store`;
    }
    report.peakRssMb = mb(readVmHwmKb(server.pid));
  } catch (error) {
    if (!(error instanceof ServerDied)) throw error;
    report.serverDied = error.message;
    console.log(`\nSTOPPED: ${error.message}`);
  } finally {
    await server?.stop();
    await issuer.close();
    if (schema) await dropSchema(schema);
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  report.finishedAt = new Date().toISOString();

  console.log('');
  const c = report.verdicts.cached;
  if (c) console.log(`peak RSS with ${TOKENS} tokens + ${KEYS} keys cached: ${c.peakRssMb} MB (target <= ${c.targetMb} MB): ${c.met ? 'met' : 'MISSED'} — ${c.note}`);
  for (const kind of SPRAY > 0 ? ['jwt', 'api-key'] : []) {
    const v = report.verdicts[`spray-${kind}`];
    console.log(`spray of ${SPRAY} ${kind === 'jwt' ? 'tokens' : 'keys'}: RSS ${v.halfwayMb} MB at half-way, ${v.maxSecondHalfMb} MB max after (+${v.growthMb} MB; flat = at most +${FLAT_TOLERANCE_MB} MB): ${v.flat ? 'flat' : 'GROWING'}`);
  }
  if (report.sprayKeysLookedUp !== undefined) console.log(`sprayed keys that reached the key store (not_found lookups): ${report.sprayKeysLookedUp} of ${SPRAY}`);
  for (const p of report.phases) if (p.problem) console.log(`PROBLEM in "${p.name}": ${p.problem}`);
  if (!args['no-save']) {
    const dir = path.join(ROOT, 'bench', 'results');
    fs.mkdirSync(dir, { recursive: true });
    const stamp = report.startedAt.replace(/[:.]/g, '-');
    const text = `${JSON.stringify(report, null, 2)}\n`;
    fs.writeFileSync(path.join(dir, `memory-${stamp}.json`), text);
    fs.writeFileSync(path.join(dir, 'memory-latest.json'), text);
    console.log(`saved bench/results/memory-${stamp}.json and bench/results/memory-latest.json`);
  }
  const problems = report.phases.some((p) => p.problem) || report.phases.length === 0;
  return problems ? 1 : 0;
}

class ServerDied extends Error {}

/** RSS growth over the second half of a spray, when bounded caches are already full. */
function flatness(samples) {
  if (samples.length < 4) return { flat: false, growthMb: NaN, halfwayMb: NaN, maxSecondHalfMb: NaN, samples };
  const half = Math.floor(samples.length / 2);
  const halfwayMb = mb(samples[half - 1].rssKb);
  const maxSecondHalfMb = Math.max(...samples.slice(half).map((s) => mb(s.rssKb)));
  const growthMb = Math.round((maxSecondHalfMb - halfwayMb) * 10) / 10;
  return { flat: growthMb <= FLAT_TOLERANCE_MB, growthMb, halfwayMb, maxSecondHalfMb, samples: samples.map((s) => ({ requests: s.requests, rssMb: mb(s.rssKb) })) };
}

/** One bounded phase through bench/loadgen.mjs, every answer checked. */
async function drive({ port, plan, serverPid, frames, count, expect, spray, marker, rssEvery, shape = [8, 16] }) {
  const extra = spray ? ['--spray', spray, '--spray-marker', marker, '--rss-pid', String(serverPid), '--rss-every', String(rssEvery)] : [];
  const run = await runToCompletion({
    cpu: plan.loadCpu,
    command: process.execPath,
    args: [path.join(ROOT, 'bench', 'loadgen.mjs'), '--port', String(port), '--frames', frames, '--warmup', '0', '--duration', '900', '--max-requests', String(count), '--connections', String(shape[0]), '--streams', String(shape[1]), ...extra],
    timeoutMs: 960_000,
  });
  let result;
  try {
    result = JSON.parse(run.stdout.trim().split('\n').pop());
  } catch {
    return { requests: 0, checksPerSec: 0, problem: `loadgen exited ${run.code}: ${run.stderr.trim().split('\n').pop()}`, rssSamples: [] };
  }
  const problem = result.requests < count ? `only ${result.requests} of ${count} requests answered` : unexpectedOutcomes(result.outcomes, expect);
  return { requests: result.requests, checksPerSec: result.checksPerSec, problem, rssSamples: result.rssSamples };
}

async function waitUntilServing(port, server, probe) {
  const deadline = Date.now() + 60_000;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (!server.running) throw new Error(`server exited: ${server.logReason()}`);
    try {
      const seen = describeResponse(await sanityCheck(port, probe, 1000));
      if (seen.kind === 'ok') return;
      last = `answered ${seen.kind} ${seen.httpStatus ?? ''}`;
    } catch (error) {
      last = error.message;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`server did not allow the first token within 60 s: ${last}`);
}

process.exitCode = await main().catch((error) => {
  console.error(error);
  return 1;
});
