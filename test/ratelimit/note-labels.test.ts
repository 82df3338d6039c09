// portcullis_checks_total{reason} of allowed checks comes from a closed set, however the notes of
// the two rate-limit phases (before and after identification) combine.
import { afterAll, describe, expect, it } from 'vitest';
import { Authorizer } from '../../src/pipeline/authorizer.js';
import { ALLOW_LABELS } from '../../src/ratelimit/notes.js';
import type { Runtime } from '../../src/runtime.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { freePort } from './redis-server.js';

const runtimes: Runtime[] = [];
afterAll(async () => {
  for (const runtime of runtimes) await runtime.resources.closeAll();
});

async function reasonLabels(runtime: Runtime): Promise<string[]> {
  const metric = await runtime.metrics.registry.getSingleMetric('portcullis_checks_total')?.get();
  return (metric?.values ?? []).filter((v) => v.labels.decision === 'allow').map((v) => `${v.labels.reason}=${v.value}`);
}

function authorizerFor(yaml: string): { authorizer: Authorizer; runtime: Runtime } {
  const runtime = testRuntime();
  runtimes.push(runtime);
  const policy = compileYaml(yaml, runtime);
  return { authorizer: new Authorizer({ current: () => policy }, runtime.logger, runtime.metrics), runtime };
}

const acme = () => request({ host: 'acme.example.com', path: '/api/x' });

describe('allowed-check reason labels', () => {
  it('both limit phases failing open count once as ratelimit-fail-open (never a joined label)', async () => {
    const port = await freePort(); // nothing listens: every check fails at once
    const { authorizer, runtime } = authorizerFor(`
identity:
  - host: { domains: { acme.example.com: { tenant: acme, scopes: [read] } } }
routes: [{ name: api, match: { pathPrefix: /api/ } }]
rateLimits:
  backend: { redis: { url: "redis://127.0.0.1:${port}", circuitBreaker: { failures: 1000 } } }
  failure: open
  policies:
    - { name: per-ip, key: [ip], window: 1m, limit: 100 }
    - { name: per-tenant, key: [tenant], window: 1m, limit: 100 }
`);
    for (let i = 0; i < 3; i++) {
      const decision = await authorizer.check(acme());
      expect(decision).toMatchObject({ allowed: true, note: 'ratelimit-fail-open' });
    }
    expect(await reasonLabels(runtime)).toEqual(['ratelimit-fail-open=3']);
  });

  it('shadow refusals in both phases stay in the closed set', async () => {
    const { authorizer, runtime } = authorizerFor(`
identity:
  - host: { domains: { acme.example.com: { tenant: acme, scopes: [read] } } }
routes: [{ name: api, match: { pathPrefix: /api/ } }]
rateLimits:
  policies:
    - { name: ip-trial, key: [ip], window: 1m, limit: 1, shadow: true }
    - { name: tenant-trial, key: [tenant], window: 1m, limit: 1, shadow: true }
`);
    for (let i = 0; i < 3; i++) expect((await authorizer.check(acme())).allowed).toBe(true);
    const labels = await reasonLabels(runtime);
    expect(labels).toEqual(['ok=1', 'shadow=2']);
    for (const label of labels) expect(ALLOW_LABELS).toContain(label.split('=')[0]);
  });
});
