#!/usr/bin/env node
// In-process cost of policy expressions (README "Expressions (CEL)" → Cost): authorize() on one
// identified request, with no expression anywhere, with expressions on ANOTHER route only (must
// cost nothing), and with one expression of each kind on the route itself. Synchronous calls,
// a Host-identified caller (no crypto), no rate limit: what is left is routing, the checks and the
// decision — and the expression. Alternates the policies round by round and reports the median.
//
//   npm run build && node bench/expr-cost.mjs [--dist dist] [--rounds 15] [--iterations 200000]
//
// --dist lets the same script time another build (e.g. the code before expressions existed:
// scenarios that need expressions are skipped there).

import { parseArgs } from 'node:util';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const { values } = parseArgs({
  options: {
    dist: { type: 'string', default: 'dist' },
    rounds: { type: 'string', default: '15' },
    iterations: { type: 'string', default: '200000' },
  },
});
const dist = path.resolve(values.dist);
const load = (p) => import(pathToFileURL(path.join(dist, p)).href);
const { parsePolicyWithLocator } = await load('policy/load.js');
const { compilePolicy } = await load('policy/compile.js');
const { authorize } = await load('pipeline/authorize.js');
const { Metrics } = await load('observability/metrics.js');
const { ResourcePool } = await load('runtime.js');
const { silentLogger } = await load('observability/logger.js');
const { systemClock } = await load('clock.js');

const HEAD = `
identity:
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [orders:read] } } }
routes:
  - match: { path: "/v1/companies/{company_id}/orders" }
    require: { allOf: ["orders:read"] }
`;
const SCENARIOS = {
  'no expression in the policy': HEAD,
  'expressions on another route only': `${HEAD}  - match: { path: "/v1/other/{id}" }\n    rules: [{ unless: request.params.id == auth.tenant, deny: { reason: mismatch } }]\n`,
  'one-comparison rule (params == tenant)': `${HEAD}    rules: [{ unless: request.params.company_id == auth.tenant, deny: { reason: company_mismatch } }]\n`,
  'when: on a header': `${HEAD}    when: request.headers["x-client"] == "web"\n`,
  'match.query present': HEAD.replace('path: "/v1/companies/{company_id}/orders"', 'path: "/v1/companies/{company_id}/orders", query: { page: present }'),
  'match.schemes [https]': HEAD.replace('path: "/v1/companies/{company_id}/orders"', 'path: "/v1/companies/{company_id}/orders", schemes: [https]'),
};

const headers = new Map([['x-client', 'web'], ['user-agent', 'bench']]);
const request = {
  requestId: 'bench-1',
  method: 'GET',
  host: 'shop.example.com',
  path: '/v1/companies/acme/orders',
  query: 'page=2',
  scheme: 'https',
  protocol: 'HTTP/2',
  headers,
  sourceAddress: '203.0.113.7',
  contextExtensions: new Map(),
};

const runtime = { clock: systemClock, logger: silentLogger(), metrics: new Metrics({ defaultMetrics: false }), resources: new ResourcePool(), env: {} };
const policies = [];
for (const [name, yaml] of Object.entries(SCENARIOS)) {
  try {
    const { document, locate } = parsePolicyWithLocator(yaml, 'bench.yaml', {});
    runtime.resources.beginCompile?.();
    const policy = compilePolicy(document, runtime, 'bench.yaml', locate);
    const d = authorize(policy, request);
    if (!d.allowed) throw new Error(`${name}: expected allow, got ${d.reason} ${d.detail ?? ''}`);
    policies.push({ name, policy, samples: [] });
  } catch (err) {
    console.log(`${name}: not available in ${values.dist} (${err.message.split('\n')[0]})`);
  }
}

const iterations = Number(values.iterations);
for (let round = 0; round < Number(values.rounds); round++) {
  for (const entry of round % 2 === 0 ? policies : [...policies].reverse()) {
    // CPU time of this process, not wall time: on a shared machine the wall clock also counts the
    // time other processes had the core.
    const t0 = process.cpuUsage();
    let allowed = 0;
    for (let i = 0; i < iterations; i++) if (authorize(entry.policy, request).allowed) allowed++;
    const used = process.cpuUsage(t0);
    const ns = ((used.user + used.system) * 1000) / iterations;
    if (allowed !== iterations) throw new Error(`${entry.name}: not every check allowed`);
    if (round > 0) entry.samples.push(ns); // round 0 warms up
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = median(policies[0].samples);
console.log(`node ${process.version}, ${values.dist}, ${values.rounds} rounds x ${iterations} checks, median CPU ns per authorize()`);
for (const { name, samples } of policies) {
  const m = median(samples);
  console.log(`${name.padEnd(42)} ${m.toFixed(0).padStart(6)} ns   ${m === base ? '' : `${m - base >= 0 ? '+' : ''}${(m - base).toFixed(0)} ns`}`);
}
