// /metrics of a real server over HTTP: standard Node/process names, the credential label, the
// opt-in route label (bounded by the policy's route names, also across reloads) and the in-flight
// gauge while a check really waits on I/O (a JWKS fetch held open by the test).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.js';
import { MAX_TENANT_SERIES } from '../../src/pipeline/authorizer.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { CheckClient } from '../support/grpc-client.js';
import { sign, signingKey, startKeyServer } from '../jwt/helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-metrics-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HOST_POLICY = (server: string) => `
server: { ${server} }
identity:
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [storefront] } } }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: products, match: { path: /v1/products }, require: { allOf: [storefront] } }
  - { match: { pathPrefix: /v1/orders/ }, require: { allOf: [orders] } }
default: deny
`;

interface Running {
  server: RunningServer;
  client: CheckClient;
  file: string;
  scrape(): Promise<string>;
}

const running: Running[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) {
    r.client.close();
    await r.server.shutdown();
  }
});

let files = 0;
async function start(policy: string, defaultMetrics = false): Promise<Running> {
  const file = path.join(dir, `policy-${files++}.yaml`);
  writeFileSync(file, policy);
  const server = await startServer({ configFile: file, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', watch: false, logger: silentLogger(), defaultMetrics });
  const client = new CheckClient(server.grpcPort);
  const r: Running = {
    server,
    client,
    file,
    scrape: async () => {
      const res = await fetch(`http://127.0.0.1:${server.httpPort}/metrics`);
      expect(res.status).toBe(200);
      return res.text();
    },
  };
  running.push(r);
  return r;
}

/** Every sample line of `name` as its label set (order-independent), with its value. */
function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

describe('metric names and labels', () => {
  it('exports the Node/process metrics under their standard names, without a prefix', async () => {
    const r = await start(HOST_POLICY('decisionLog: none'), true);
    await r.server.ready;
    const text = await r.scrape();
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds']) {
      expect(text, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
    }
    expect(text).not.toContain('portcullis_process_');
  });

  it('labels checks by credential kind (not "method", which the log uses for the HTTP method)', async () => {
    const r = await start(HOST_POLICY('decisionLog: none'));
    await r.server.ready;
    await r.client.check({ path: '/v1/products', host: 'shop.example.com' });
    await r.client.check({ path: '/v1/products', host: 'unknown.example.com' });
    const checks = samples(await r.scrape(), 'portcullis_checks_total');
    expect(checks.map((s) => s.labels)).toEqual(
      expect.arrayContaining([
        { decision: 'allow', reason: 'ok', credential: 'host' },
        { decision: 'deny', reason: 'missing_credential', credential: 'none' },
      ]),
    );
    for (const s of checks) expect(Object.keys(s.labels).sort()).toEqual(['credential', 'decision', 'reason']);
  });

  it('bounds tenant series (server.tenantMetrics): listed tenants always, then the first 1,000 others, the rest as "(other)"', async () => {
    // Tenants from the query string: the caller chooses them (as with host patterns or self-service claims).
    const r = await start(`
server: { decisionLog: none, tenantMetrics: true }
tenants: { vip: {} }
identity:
  - sharedSecret: { header: x-hook, secret: "0123456789abcdef0123456789abcdef" }
    compute: { tenant: request.query.org }
routes:
  - { name: hooks, match: { pathPrefix: /hooks } }
`);
    await r.server.ready;
    const send = (org: string) => r.client.check({ path: `/hooks?org=${org}`, headers: { 'x-hook': '0123456789abcdef0123456789abcdef' } });
    for (let i = 0; i < MAX_TENANT_SERIES + 50; i++) await send(`t${i}`);
    await send('vip');
    await send('t0');
    const series = samples(await r.scrape(), 'portcullis_tenant_checks_total');
    const byTenant = new Map(series.map((s) => [s.labels.tenant!, s.value]));
    expect(byTenant.size).toBe(MAX_TENANT_SERIES + 2); // the first 1,000, vip, (other)
    expect(byTenant.get('vip')).toBe(1);
    expect(byTenant.get('t0')).toBe(2);
    expect(byTenant.get('(other)')).toBe(50);
    expect(byTenant.has(`t${MAX_TENANT_SERIES}`)).toBe(false);
  });

  it('adds a route label only with server.routeMetrics, valued by the policy route names', async () => {
    const r = await start(HOST_POLICY('decisionLog: none, routeMetrics: true'));
    await r.server.ready;
    const shop = { host: 'shop.example.com' };
    await r.client.check({ ...shop, path: '/v1/products' });
    await r.client.check({ ...shop, path: '/v1/orders/7' });
    await r.client.check({ ...shop, path: '/health' });
    await r.client.check({ ...shop, path: '/nowhere' });
    await r.client.check({ ...shop, path: 'no-leading-slash' });
    const routes = samples(await r.scrape(), 'portcullis_checks_total').map((s) => s.labels.route);
    expect(new Set(routes)).toEqual(new Set(['products', '/v1/orders/*', 'health', 'default', 'none']));
  });

  it('keeps the route label bounded across reloads: routes a new policy drops lose their series', async () => {
    const r = await start(HOST_POLICY('decisionLog: none, routeMetrics: true'));
    await r.server.ready;
    await r.client.check({ host: 'shop.example.com', path: '/v1/products' });
    expect(samples(await r.scrape(), 'portcullis_checks_total').some((s) => s.labels.route === 'products')).toBe(true);

    writeFileSync(r.file, HOST_POLICY('decisionLog: none, routeMetrics: true').replace('name: products', 'name: catalogue'));
    expect(await r.server.policies.reload()).toBe(true);
    await r.client.check({ host: 'shop.example.com', path: '/v1/products' });
    const routes = samples(await r.scrape(), 'portcullis_checks_total').map((s) => s.labels.route);
    expect(routes).toContain('catalogue');
    expect(routes).not.toContain('products');
  });
});

describe('portcullis_checks_in_flight', () => {
  it('counts a check while it waits on a JWKS fetch, and drops back when it is answered', async () => {
    const key = await signingKey('RS256', 'k1');
    const keys = await startKeyServer([key.publicJwk]);
    let release!: () => void;
    keys.gate = new Promise<void>((resolve) => (release = resolve));
    try {
      const r = await start(`
server: { decisionLog: none }
identity:
  - jwt: { issuers: [idp] }
issuers:
  idp: { issuer: "${keys.url}", jwksUri: "${keys.url}/jwks.json", audiences: [api], waitForKeys: false, claims: { tenant: org } }
routes:
  - { name: api, match: { pathPrefix: /v1/ } }
`);
      const gauge = async () => samples(await r.scrape(), 'portcullis_checks_in_flight')[0]?.value;
      expect(await gauge()).toBe(0);

      const now = Math.floor(Date.now() / 1000);
      const token = await sign(key, { iss: keys.url, aud: 'api', sub: 'u1', org: 'acme', iat: now, exp: now + 300 });
      const answer = r.client.check({ path: '/v1/things', headers: { authorization: `Bearer ${token}` } });
      // The check is parked on the held key fetch until the gate opens.
      while ((await gauge()) !== 1) await new Promise((resolve) => setImmediate(resolve));
      expect(await gauge()).toBe(1);

      release();
      expect((await answer).http_response).toBe('ok_response');
      expect(await gauge()).toBe(0);
    } finally {
      release();
      await keys.close();
    }
  });
});
