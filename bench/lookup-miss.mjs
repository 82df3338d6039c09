// `node bench/lookup-miss.mjs` (after `npm run build`): what a lookup cache MISS costs on top of
// the lookup target's own latency. A local get-session endpoint answers every cookie; the same
// N distinct session cookies are (1) fetched from the target directly, (2) checked through
// Portcullis' authorize() (each one a cache miss), (3) checked again (each one a cache hit).
// For comparison, the same route with a cached HS256 JWT (the JWT source's verified-token cache),
// in the same run. One at a time, 127.0.0.1 only, bounded (N = 2000 by default).
//
//   node bench/lookup-miss.mjs [--count 2000]

import http from 'node:http';
import { parseArgs } from 'node:util';
import { ManualClock } from '../dist/clock.js';
import { silentLogger } from '../dist/observability/logger.js';
import { Metrics } from '../dist/observability/metrics.js';
import { authorize } from '../dist/pipeline/authorize.js';
import { compilePolicy } from '../dist/policy/compile.js';
import { parsePolicyWithLocator } from '../dist/policy/load.js';
import { ResourcePool } from '../dist/runtime.js';
import { SignJWT } from 'jose';

const { values } = parseArgs({ options: { count: { type: 'string', default: '2000' } } });
const COUNT = Math.min(20_000, Math.max(100, Number(values.count)));

const server = http.createServer((req, res) => {
  const sid = /better-auth\.session_token=([^;]*)/.exec(req.headers.cookie ?? '')?.[1];
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ session: { id: sid, activeOrganizationId: 'acme' }, user: { id: `u-${sid}` } }));
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}`;

const yaml = `
lookups:
  sessions:
    http: { url: "${url}/api/auth/get-session", headers: { cookie: "better-auth.session_token={{credential}}" } }
    cache: { ttl: 30s, maxEntries: ${COUNT * 2} }
issuers:
  app: { secret: "bench-secret-0123456789abcdef0123456789", claims: { tenant: org, scopes: [scope] } }
identity:
  - jwt: { issuers: [app] }
  - session: { cookie: better-auth.session_token, lookup: sessions, map: { tenant: session.activeOrganizationId, subject: user.id }, scopes: [read] }
routes:
  - { match: { pathPrefix: /v1/ }, require: { allOf: [read] } }
`;
const runtime = { clock: new ManualClock(Date.now()), logger: silentLogger(), metrics: new Metrics({ defaultMetrics: false }), resources: new ResourcePool(), env: {} };
const { document, locate } = parsePolicyWithLocator(yaml, 'bench.yaml', {});
runtime.resources.beginCompile();
const policy = compilePolicy(document, runtime, 'bench.yaml', locate);

const request = (sid, token) => ({
  requestId: 'r',
  method: 'GET',
  host: 'api.example.com',
  path: '/v1/items',
  query: '',
  scheme: 'https',
  protocol: 'HTTP/2',
  headers: new Map(token ? [['authorization', `Bearer ${token}`]] : [['cookie', `better-auth.session_token=${sid}`]]),
  sourceAddress: '127.0.0.1',
  contextExtensions: new Map(),
});

function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99) };
}
const us = (ms) => `${(ms * 1000).toFixed(1)} µs`;

async function time(label, fn) {
  const samples = [];
  for (let i = 0; i < COUNT; i++) {
    const started = performance.now();
    await fn(i);
    samples.push(performance.now() - started);
  }
  const s = summary(samples);
  console.log(`${label.padEnd(44)} p50 ${us(s.p50).padStart(10)}  p90 ${us(s.p90).padStart(10)}  p99 ${us(s.p99).padStart(10)}`);
  return s;
}

// Warm up the connection pool and the JIT on other cookies.
for (let i = 0; i < 200; i++) {
  await fetch(`${url}/api/auth/get-session`, { headers: { cookie: `better-auth.session_token=warm-${i}` } }).then((r) => r.text());
  await authorize(policy, request(`warm-${i}`));
}

console.log(`lookup cache miss vs the target's own latency — ${COUNT} distinct session cookies, one at a time, Node ${process.version}`);
const target = await time('target alone (fetch + JSON)', (i) => fetch(`${url}/api/auth/get-session`, { headers: { cookie: `better-auth.session_token=direct-${i}` } }).then((r) => r.json()));
const miss = await time('Portcullis authorize(), cache miss', async (i) => {
  const d = await authorize(policy, request(`s-${i}`));
  if (!d.allowed) throw new Error(`unexpected denial ${d.reason}`);
});
const hit = await time('Portcullis authorize(), cache hit', async (i) => {
  const d = authorize(policy, request(`s-${i}`));
  if (!d.allowed) throw new Error('unexpected denial');
});
const now = Math.floor(Date.now() / 1000);
const jwt = await new SignJWT({ org: 'acme', scope: 'read', sub: 'u1' }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt(now).setExpirationTime(now + 3600).sign(new TextEncoder().encode('bench-secret-0123456789abcdef0123456789'));
await authorize(policy, request(undefined, jwt));
const jwtHit = await time('Portcullis authorize(), cached JWT (same route)', async () => {
  const d = authorize(policy, request(undefined, jwt));
  if (!d.allowed) throw new Error(`unexpected denial ${d.reason}`);
});
const hot = await time('Portcullis authorize(), one session, cache hit', async () => {
  const d = authorize(policy, request('s-1'));
  if (!d.allowed) throw new Error('unexpected denial');
});
console.log(`cached session vs cached JWT: p50 ${us(hot.p50)} vs ${us(jwtHit.p50)}`);
console.log(`overhead of a miss over the target: p50 ${us(miss.p50 - target.p50)}, p99 ${us(miss.p99 - target.p99)}; a hit: p50 ${us(hit.p50)}`);

await runtime.resources.closeAll();
server.closeAllConnections();
server.close();
