// In-process footprint of Portcullis's caches: how many bytes of V8 heap (heapUsed + arrayBuffers)
// each cached JWT and each cached API key costs. A developer probe, quick (about a minute for the
// defaults): the server runs in this process (dist/server.js, no sockets used for the checks), N
// distinct HS256 tokens and N distinct API keys go through decode + check + encode twice each, and
// the heap is measured after a forced GC between the passes. Nothing is saved to bench/results.
//
//   npm run bench:footprint
//   npm run build && node --expose-gc bench/cache-footprint.mjs [--entries 100000] [--keys 0]
//                                                              [--snapshot FILE]
//
// --entries N: distinct tokens, and distinct keys (default 100000). The JWT cache holds N entries,
// the key cache 2N, so nothing is evicted.
// --keys 0: tokens only (no PostgreSQL needed). Default 1: keys too, looked up in PostgreSQL
// (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test), in a schema of its own
// (cache_footprint_<pid>) made with `portcullis migrate` and dropped after the run.
// --snapshot FILE: write a V8 heap snapshot to FILE at the end (caches full), for DevTools.
// Without --expose-gc the script starts itself again with it.
//
// Phases (each after two forced GCs): before server, started, frames built, tokens cached (first pass), tokens
// again (second pass: cache hits), keys cached, keys again. The caches' tables are allocated whole
// at policy load: their size per slot is the arrayBuffers delta from "before server" to "started".
// What an entry costs besides its slot is the heapUsed + arrayBuffers delta from "frames built" to
// "tokens again" over N; per cached key, from "tokens again" to "keys again". Every check of the second passes must be allowed (exit 1
// otherwise); denials of the first passes (a few 503 store_unavailable under load) are reported.

import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { DATABASE_URL, dropSchema, fillPostgres, mintKeys } from './lib/key-records.mjs';
import { ROOT, checkRequest, encodeCheckRequest } from './lib/proto.mjs';

if (typeof globalThis.gc !== 'function') {
  // Forced GC is the whole point of the measurement: start again with it rather than fail.
  const again = spawnSync(process.execPath, ['--expose-gc', ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (again.error) console.error(`could not restart with --expose-gc: ${again.error.message}`);
  process.exit(again.status ?? 1);
}

const { values: args } = parseArgs({
  options: {
    entries: { type: 'string', default: '100000' },
    keys: { type: 'string', default: '1' },
    snapshot: { type: 'string' },
  },
});
const N = Number(args.entries);
const USE_KEYS = args.keys !== '0';
const CLI = path.join(ROOT, 'dist', 'cli.js');
const SECRET = 'x'.repeat(48);
const ITEM_PATH = '/v1/items/42';
/** Checks in flight: tokens are checked synchronously; uncached keys wait for PostgreSQL (16, as in bench/memory.mjs). */
const TOKEN_CONCURRENCY = 64;
const KEY_CONCURRENCY = 16;

const dist = (file) => import(path.join(ROOT, 'dist', file));
const mb = (bytes) => (bytes / 1_048_576).toFixed(1);

/** N distinct HS256 tokens: same claims, one subject each. */
function token(n, now) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const header = b64({ alg: 'HS256', typ: 'JWT' });
  const payload = b64({ iss: 'https://issuer.test/', aud: 'https://api.example.com', sub: `user-${n}`, tenant_id: 'acme', scope: 'items:read', iat: now, exp: now + 7200 });
  const signature = crypto.createHmac('sha256', SECRET).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

/** HS256 issuer, JWT cache of N; with keys, the PostgreSQL store and a key cache of 2N. */
function writePolicy(file, schema) {
  const keyStore = [
    'keyStore:',
    '  type: postgres',
    `  postgres: { url: ${JSON.stringify(DATABASE_URL)}, schema: ${JSON.stringify(schema)}, poolSize: 16 }`,
    // As bench/policies/memory-postgres.yaml: a deadline for 16 lookups in flight, and a ttl long
    // enough that the second pass finds every key of the first one fresh.
    '  lookupTimeout: 250ms',
    `  cache: { maxEntries: ${2 * N}, ttl: 10m }`,
  ];
  const lines = [
    'server: { decisionLog: none, logLevel: warn }',
    'identity:',
    `  - jwt: { issuers: [t], cacheSize: ${N} }`,
    ...(USE_KEYS ? ['  - apiKey: { headers: [x-api-key] }'] : []),
    'issuers:',
    `  t: { issuer: "https://issuer.test/", secret: "${SECRET}", audiences: [https://api.example.com], claims: { tenant: tenant_id, scopes: [scope] } }`,
    ...(USE_KEYS ? keyStore : []),
    'routes:',
    '  - { match: { pathPrefix: /v1/items }, require: { allOf: ["items:read"] } }',
    'default: deny',
  ];
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
}

/** Memory after two forced GCs. */
function measure(phase) {
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  return { phase, rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers };
}

function printTable(rows) {
  console.log(`${'phase'.padEnd(16)}${'RSS MB'.padStart(10)}${'heapUsed MB'.padStart(14)}${'arrayBuffers MB'.padStart(18)}`);
  for (const r of rows) console.log(`${r.phase.padEnd(16)}${mb(r.rss).padStart(10)}${mb(r.heapUsed).padStart(14)}${mb(r.arrayBuffers).padStart(18)}`);
}

/** Bytes per entry between two measurements: heapUsed + arrayBuffers, and each part. */
function perEntry(after, before) {
  const heap = (after.heapUsed - before.heapUsed) / N;
  const buffers = (after.arrayBuffers - before.arrayBuffers) / N;
  return `${Math.round(heap + buffers)} (heap ${Math.round(heap)}, buffers ${Math.round(buffers)})`;
}

async function main() {
  if (!Number.isInteger(N) || N < 100) {
    console.error('--entries must be an integer of at least 100');
    return 2;
  }
  if (args.keys !== '0' && args.keys !== '1') {
    console.error('--keys is 1 (default: measure keys too) or 0 (tokens only)');
    return 2;
  }
  if (!fs.existsSync(CLI)) {
    console.error('dist/cli.js is missing: run `npm run build` first');
    return 2;
  }
  const { startServer } = await dist('server.js');
  const { decodeCheckRequest } = await dist('transport/grpc/decode.js');
  const { encodeCheckResponse } = await dist('transport/grpc/encode.js');
  const { silentLogger } = await dist('observability/logger.js');

  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-footprint-'));
  const schema = USE_KEYS ? `cache_footprint_${process.pid}` : undefined;
  let server;
  try {
    const started = Date.now();
    let keys = [];
    if (USE_KEYS) {
      const minted = await mintKeys(N, { tenant: 'acme', scope: 'items:read', name: 'footprint' });
      await fillPostgres(schema, minted.records);
      keys = minted.keys;
    }
    if (USE_KEYS) console.log(`stored ${N} API keys in PostgreSQL schema ${schema} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const policyFile = path.join(workDir, 'policy.yaml');
    writePolicy(policyFile, schema);
    const beforeServer = measure('before server');
    server = await startServer({ configFile: policyFile, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', logger: silentLogger(), watch: false, defaultMetrics: false });
    await server.ready;

    /** Every frame through decode + check + encode, `width` checks in flight; decisions counted by outcome. */
    async function pass(name, frames, width) {
      const outcomes = {};
      const count = (d) => {
        encodeCheckResponse(d);
        const outcome = d.allowed ? 'allowed' : d.reason;
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      };
      const t0 = Date.now();
      for (let i = 0; i < frames.length; i += width) {
        const inFlight = [];
        for (let j = i; j < Math.min(frames.length, i + width); j++) inFlight.push(Promise.resolve(server.authorizer.check(decodeCheckRequest(frames[j]))).then(count));
        await Promise.all(inFlight);
      }
      return { name, outcomes, seconds: (Date.now() - t0) / 1000 };
    }

    const request = (headers) => Buffer.from(encodeCheckRequest(checkRequest({ path: ITEM_PATH, headers, requestId: 'footprint-0123456789' })));
    const rows = [beforeServer, measure('started')];
    const now = Math.floor(Date.now() / 1000);
    // Module-level so the frames stay alive to the last measurement (they are part of every baseline).
    held.tokenFrames = Array.from({ length: N }, (_, i) => request({ authorization: `Bearer ${token(i, now)}` }));
    held.keyFrames = keys.map((k) => request({ 'x-api-key': k }));
    keys.length = 0;
    rows.push(measure('frames built'));

    const passes = [];
    const second = [];
    passes.push(await pass('tokens, first pass', held.tokenFrames, TOKEN_CONCURRENCY));
    rows.push(measure('tokens cached'));
    passes.push(await pass('tokens, second pass', held.tokenFrames, TOKEN_CONCURRENCY));
    second.push(passes.at(-1));
    rows.push(measure('tokens again'));
    if (USE_KEYS) {
      passes.push(await pass('keys, first pass', held.keyFrames, KEY_CONCURRENCY));
      rows.push(measure('keys cached'));
      passes.push(await pass('keys, second pass', held.keyFrames, KEY_CONCURRENCY));
      second.push(passes.at(-1));
      rows.push(measure('keys again'));
    }
    if (args.snapshot) console.log(`heap snapshot: ${v8.writeHeapSnapshot(path.resolve(args.snapshot))}`);

    console.log('');
    for (const p of passes) {
      const text = Object.entries(p.outcomes).sort(([a], [b]) => (a === 'allowed' ? -1 : b === 'allowed' ? 1 : a.localeCompare(b))).map(([k, v]) => `${k} ${v}`).join(', ');
      console.log(`${p.name.padEnd(20)} ${text} (${p.seconds.toFixed(1)} s)`);
    }
    console.log('');
    printTable(rows);
    console.log('');
    const at = (phase) => rows.find((r) => r.phase === phase);
    // The cache tables are allocated whole when the policy loads (ArrayBuffers; RSS counts a slot's
    // pages once it is written), so they show up between 'before server' and 'started'.
    const slots = N + (USE_KEYS ? 2 * N : 0);
    const tables = at('started').arrayBuffers - at('before server').arrayBuffers;
    console.log(`cache tables: ${mb(tables)} MB allocated at policy load for ${slots} slots (${N} tokens${USE_KEYS ? `, ${2 * N} keys` : ''}): ${Math.round(tables / slots)} bytes per slot`);
    console.log(`bytes per cached token, besides its slot: ${perEntry(at('tokens again'), at('frames built'))}`);
    if (USE_KEYS) console.log(`bytes per cached key, besides its slot: ${perEntry(at('keys again'), at('tokens again'))}`);

    const failed = second.filter((p) => (p.outcomes.allowed ?? 0) !== N);
    for (const p of failed) console.error(`FAILED: ${p.name}: ${p.outcomes.allowed ?? 0} of ${N} checks allowed (the first pass did not fill the cache, or the checks are denied); the figures above are not per cached entry`);
    return failed.length > 0 ? 1 : 0;
  } finally {
    await server?.shutdown();
    if (schema) await dropSchema(schema);
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

const held = { tokenFrames: [], keyFrames: [] };
process.exitCode = await main().catch((error) => {
  console.error(error);
  return 1;
});
// The pg pool and timers of the in-process server must not keep a finished probe alive.
process.exit();
