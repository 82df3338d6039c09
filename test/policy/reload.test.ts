// Hot reload: plain file rewrites, Kubernetes ConfigMap symlink swaps, and bad reloads that must
// keep the last good policy.

import { mkdirSync, mkdtempSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PolicyError } from '../../src/errors.js';
import { authorize } from '../../src/pipeline/authorize.js';
import { PolicyStore } from '../../src/policy/store.js';
import { request } from '../support/request.js';
import { testRuntime } from '../support/runtime.js';

const policyFor = (tenant: string) => `
identity:
  - host: { domains: { shop.example.com: { tenant: ${tenant}, scopes: [storefront] } } }
routes:
  - { match: { pathPrefix: /v1 }, require: { allOf: [storefront] } }
`;

const stores: PolicyStore[] = [];
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
});

async function tenantOf(store: PolicyStore): Promise<string | undefined> {
  const d = await authorize(store.current()!, request({ host: 'shop.example.com', path: '/v1/x' }));
  return d.principal?.tenant;
}

async function eventually(check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('condition not met in time');
}

async function reloadsOf(runtime: ReturnType<typeof testRuntime>, result: string): Promise<number> {
  const metric = await runtime.metrics.policyReloads.get();
  return metric.values.find((v) => v.labels.result === result)?.value ?? 0;
}

describe('PolicyStore', () => {
  it('refuses to start on an invalid policy', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-reload-'));
    writeFileSync(path.join(dir, 'policy.yaml'), 'routes: [{ match: {} }]\n');
    const store = new PolicyStore(path.join(dir, 'policy.yaml'), testRuntime());
    await expect(store.load()).rejects.toBeInstanceOf(PolicyError);
    expect(store.current()).toBeUndefined();
  });

  it('reloads a rewritten file and keeps the last good policy when a reload is invalid', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-reload-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, policyFor('one'));
    const runtime = testRuntime();
    const store = new PolicyStore(file, runtime, { pollIntervalMs: 200, debounceMs: 20 });
    stores.push(store);
    await store.load();
    store.watch();
    expect(await tenantOf(store)).toBe('one');

    writeFileSync(file, policyFor('two'));
    await eventually(async () => (await tenantOf(store)) === 'two');

    const before = store.current();
    writeFileSync(file, 'routes: [ { match: { path: /x }, requires: nope } ]\n');
    await eventually(async () => (await reloadsOf(runtime, 'failure')) >= 1);
    expect(store.current()).toBe(before);
    expect(await tenantOf(store)).toBe('two');
    expect(await reloadsOf(runtime, 'success')).toBe(2);
  });

  it('follows a Kubernetes ConfigMap ..data symlink swap', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-configmap-'));
    const v1 = path.join(dir, '..2026_11_22_10_00_00.000000001');
    mkdirSync(v1);
    writeFileSync(path.join(v1, 'policy.yaml'), policyFor('v1'));
    symlinkSync(path.basename(v1), path.join(dir, '..data'));
    symlinkSync('..data/policy.yaml', path.join(dir, 'policy.yaml'));

    const store = new PolicyStore(path.join(dir, 'policy.yaml'), testRuntime(), { pollIntervalMs: 0, debounceMs: 20 });
    stores.push(store);
    await store.load();
    store.watch();
    expect(await tenantOf(store)).toBe('v1');

    // What the kubelet does: write a new timestamped dir, point a temp link at it, rename over ..data.
    const v2 = path.join(dir, '..2026_11_22_10_05_00.000000002');
    mkdirSync(v2);
    writeFileSync(path.join(v2, 'policy.yaml'), policyFor('v2'));
    symlinkSync(path.basename(v2), path.join(dir, '..data_tmp'));
    renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
    await eventually(async () => (await tenantOf(store)) === 'v2');
  });

  it('serialises concurrent reloads and skips unchanged content', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-reload-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, policyFor('a'));
    const runtime = testRuntime();
    const store = new PolicyStore(file, runtime);
    await store.load();
    const first = store.current();
    expect(await Promise.all([store.reload(), store.reload(), store.reload()])).toEqual([true, true, true]);
    expect(store.current()).toBe(first);
    expect(await reloadsOf(runtime, 'success')).toBe(1);
  });
});
