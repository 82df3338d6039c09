// In-process memory per cached entry: N distinct HS256 tokens + N distinct PG keys through check+encode.
import crypto from 'node:crypto';
import fs from 'node:fs';
import pg from 'pg';
import { execFileSync } from 'node:child_process';
const ROOT = '/work/main';
const N = Number(process.env.N ?? 100000);
const { startServer } = await import(`${ROOT}/dist/server.js`);
const { decodeCheckRequest } = await import(`${ROOT}/dist/transport/grpc/decode.js`);
const { encodeCheckResponse } = await import(`${ROOT}/dist/transport/grpc/encode.js`);
const { silentLogger } = await import(`${ROOT}/dist/observability/logger.js`);
const { checkRequest, encodeCheckRequest } = await import(`${ROOT}/bench/lib/proto.mjs`);
const { mintKey, displayPrefixOf } = await import(`${ROOT}/dist/keys/format.js`);
const { KeyHasher } = await import(`${ROOT}/dist/keys/hashing.js`);
const SECRET = 'x'.repeat(48);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const now = Math.floor(Date.now() / 1000);
function token(n) {
  const h = b64({ alg: 'HS256', typ: 'JWT' });
  const p = b64({ iss: 'https://issuer.test/', aud: 'https://api.example.com', sub: `user-${n}`, tenant_id: 'acme', scope: 'items:read', iat: now, exp: now + 7200 });
  const s = crypto.createHmac('sha256', SECRET).update(`${h}.${p}`).digest('base64url');
  return `${h}.${p}.${s}`;
}
const DB = 'postgres://postgres@127.0.0.1:5432/test';
const schema = `micro_mem`;
const useKeys = process.env.KEYS !== '0';
if (useKeys && process.env.FILL !== '0') {
  const c = new pg.Client({ connectionString: DB }); await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`); await c.end();
  execFileSync(process.execPath, [`${ROOT}/dist/cli.js`, 'migrate', '--store', DB, '--schema', schema]);
}
const hasher = new KeyHasher();
const keys = [];
if (useKeys) {
  const c = new pg.Client({ connectionString: DB }); await c.connect();
  const fill = process.env.FILL !== '0';
  const rows = [];
  for (let i = 0; i < N; i++) {
    // deterministic keys so FILL=0 reuses them
    const key = mintKey('portcullis_');
    keys.push(key);
    if (fill) rows.push({ id: crypto.randomUUID(), name: `b-${i}`, dp: displayPrefixOf(key, 'portcullis_'), ...hasher.forStorage(key) });
  }
  for (let i = 0; fill && i < rows.length; i += 5000) {
    const b = rows.slice(i, i + 5000);
    await c.query(`INSERT INTO ${schema}.api_keys (id, tenant, name, scopes, key_prefix, display_prefix, hash_algorithm, key_hash, created_at, expires_at)
      SELECT id, 'acme', name, ARRAY['items:read'], 'portcullis_', dp, alg, h, now(), now() + interval '1 day' FROM unnest($1::text[],$2::text[],$3::text[],$4::text[],$5::text[]) AS t(id,name,dp,alg,h)`,
      [b.map(r=>r.id), b.map(r=>r.name), b.map(r=>r.dp), b.map(r=>r.hashAlgorithm), b.map(r=>r.hash)]);
  }
  await c.end();
}
fs.writeFileSync('/tmp/micro/mem-policy.yaml', `
server: { decisionLog: none, logLevel: warn }
identity:
  - jwt: { issuers: [t], cacheSize: ${N} }
${useKeys ? '  - apiKey: { headers: [x-api-key] }' : ''}
issuers:
  t: { issuer: "https://issuer.test/", secret: "${SECRET}", audiences: [https://api.example.com], claims: { tenant: tenant_id, scopes: [scope] } }
${useKeys ? `keyStore:
  type: postgres
  postgres: { url: "${DB}", schema: "${schema}", poolSize: 16 }
  cache: { maxEntries: ${2 * N} }` : ''}
routes:
  - { match: { pathPrefix: /v1/items }, require: { allOf: ["items:read"] } }
default: deny
`);
const server = await startServer({ configFile: '/tmp/micro/mem-policy.yaml', grpcPort: 0, httpPort: 0, bind: '127.0.0.1', logger: silentLogger(), watch: false, defaultMetrics: false });
await server.ready;
const frame = (headers) => Buffer.from(encodeCheckRequest(checkRequest({ path: '/v1/items/42', headers, requestId: 'mem-0123456789' })));
const mb = (b) => (b / 1048576).toFixed(1);
function snap(label) {
  global.gc(); global.gc();
  const m = process.memoryUsage();
  console.log(`${label.padEnd(28)} rss ${mb(m.rss)} heapUsed ${mb(m.heapUsed)} external ${mb(m.external)} arrayBuffers ${mb(m.arrayBuffers)}`);
  return m;
}
const base = snap('started');
let ok = 0, bad = 0;
async function drive(frames) {
  for (let i = 0; i < frames.length; i += 64) {
    const batch = [];
    for (let j = i; j < Math.min(frames.length, i + 64); j++) {
      const d = server.authorizer.check(decodeCheckRequest(frames[j]));
      batch.push(Promise.resolve(d).then((d) => { encodeCheckResponse(d); d.allowed ? ok++ : bad++; }));
    }
    await Promise.all(batch);
  }
}
const tokFrames = []; for (let i = 0; i < N; i++) tokFrames.push(frame({ authorization: `Bearer ${token(i)}` }));
const keyFrames = keys.map((k) => frame({ 'x-api-key': k }));
const b2 = snap('frames built');
await drive(tokFrames);
const t = snap('tokens cached');
await drive(tokFrames);
const t2 = snap('tokens again');
await drive(keyFrames);
const k = snap('keys cached');
await drive(keyFrames);
const k2 = snap('keys again');
console.log(`ok ${ok} bad ${bad}`);
const per = (a, b) => `${Math.round((a.heapUsed + a.arrayBuffers - b.heapUsed - b.arrayBuffers) / N)} B/entry (heap ${Math.round((a.heapUsed - b.heapUsed) / N)}, buffers ${Math.round((a.arrayBuffers - b.arrayBuffers) / N)})`;
console.log('token:', per(t2, b2));
if (useKeys) console.log('key:', per(k2, t2));
if (process.env.SNAP) { const v8 = await import('node:v8'); console.log(v8.writeHeapSnapshot('/tmp/micro/heap.heapsnapshot')); }
await server.shutdown();
process.exit(0);
