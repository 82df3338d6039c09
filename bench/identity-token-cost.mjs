#!/usr/bin/env node
// In-process cost of the identity token (issue 21; README "Identity token for upstreams"): one
// CheckRequest with a cached HS256 JWT, decoded, authorized and encoded as the gRPC transport
// does, with the identity token off and on (ES256, the token reused from the cache as in steady
// state), and with a `peer` source first in the chain that the request does not use. Alternates the
// policies round by round, counts CPU time of this process (not wall time: the machine is shared)
// and reports the median; the ratio column is checks/s relative to "off" (target >= 0.9).
//
//   npm run build && node bench/identity-token-cost.mjs [--rounds 15] [--iterations 100000]

import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import { ROOT, checkRequest, encodeCheckRequest } from './lib/proto.mjs';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '15' }, iterations: { type: 'string', default: '100000' } } });
const load = (p) => import(path.join(ROOT, 'dist', p));
const { parsePolicyWithLocator } = await load('policy/load.js');
const { compilePolicy } = await load('policy/compile.js');
const { authorize } = await load('pipeline/authorize.js');
const { decodeCheckRequest } = await load('transport/grpc/decode.js');
const { encodeCheckResponseFrame } = await load('transport/grpc/encode.js');
const { Metrics } = await load('observability/metrics.js');
const { ResourcePool } = await load('runtime.js');
const { silentLogger } = await load('observability/logger.js');
const { systemClock } = await load('clock.js');

const SECRET = 'bench-secret-0123456789abcdef0123456789abcdef';
const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-idcost-'));
const keyFile = path.join(dir, 'key.pem');
writeFileSync(keyFile, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });

const BASE = (identity) => `
server: { decisionLog: none }
identity:
${identity}  - jwt: { issuers: [bench], cacheSize: 10000 }
issuers:
  bench: { issuer: https://idp.bench/, secret: "${SECRET}", claims: { tenant: tenant_id, scopes: [scope] } }
routes:
  - { match: { path: /health }, public: true }
  - { match: { pathPrefix: /v1/items }, require: { allOf: ["items:read"] } }
default: deny
`;
const TOKEN_SECTION = `identityToken: { issuer: https://portcullis.bench, audience: bench, keys: ["${keyFile}"], keyReloadInterval: 0 }\n`;
const PEER = `  - peer: { principals: { "spiffe://cluster.local/ns/{ns}/sa/{sa}": { tenant: "{ns}" } } }\n`;
const SCENARIOS = {
  'identity token off': BASE(''),
  'identity token on (ES256, reused)': BASE('') + TOKEN_SECTION,
  'peer source first, request without principal': BASE(PEER),
};

const now = Math.floor(Date.now() / 1000);
const jwt = await new SignJWT({ tenant_id: 'acme', scope: 'items:read' })
  .setProtectedHeader({ alg: 'HS256' })
  .setIssuer('https://idp.bench/')
  .setSubject('user-1')
  .setIssuedAt(now)
  .setExpirationTime(now + 3600)
  .sign(new TextEncoder().encode(SECRET));
const bytes = Buffer.from(encodeCheckRequest(checkRequest({ path: '/v1/items/42', headers: { authorization: `Bearer ${jwt}` }, requestId: 'bench-0123456789abcdef' })));

const runtime = { clock: systemClock, logger: silentLogger(), metrics: new Metrics({ defaultMetrics: false }), resources: new ResourcePool(), env: {} };
const entries = [];
for (const [name, yaml] of Object.entries(SCENARIOS)) {
  const { document, locate } = parsePolicyWithLocator(yaml, path.join(dir, 'bench.yaml'), {});
  runtime.resources.beginCompile();
  const policy = compilePolicy(document, runtime, path.join(dir, 'bench.yaml'), locate);
  // First check: verifies the JWT and signs the identity token (async); later ones are cached.
  const first = await authorize(policy, decodeCheckRequest(bytes));
  if (!first.allowed) throw new Error(`${name}: expected allow, got ${first.reason} ${first.detail ?? ''}`);
  entries.push({ name, policy, samples: [], size: encodeCheckResponseFrame(first).length });
}

const iterations = Number(values.iterations);
for (let round = 0; round < Number(values.rounds); round++) {
  for (const entry of round % 2 === 0 ? entries : [...entries].reverse()) {
    const t0 = process.cpuUsage();
    let allowed = 0;
    for (let i = 0; i < iterations; i++) {
      const d = authorize(entry.policy, decodeCheckRequest(bytes));
      if (typeof d.then === 'function') throw new Error(`${entry.name}: a check went asynchronous in steady state`);
      if (d.allowed) allowed++;
      encodeCheckResponseFrame(d);
    }
    const used = process.cpuUsage(t0);
    if (allowed !== iterations) throw new Error(`${entry.name}: not every check allowed`);
    if (round > 0) entry.samples.push(((used.user + used.system) * 1000) / iterations);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = median(entries[0].samples);
console.log(`node ${process.version}, ${values.rounds} rounds x ${iterations} checks, median CPU ns per decode + authorize + encode`);
for (const { name, samples, size } of entries) {
  const m = median(samples);
  console.log(`${name.padEnd(48)} ${m.toFixed(0).padStart(6)} ns  ${(base / m).toFixed(2)}x of off  response ${size} bytes`);
}
