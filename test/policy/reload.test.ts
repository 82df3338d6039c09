// Hot reload: plain file rewrites, Kubernetes ConfigMap symlink swaps, and bad reloads that must
// keep the last good policy.

import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, renameSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { Writable } from 'node:stream';
import { pino } from 'pino';
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
    const store = new PolicyStore(file, runtime, { pollIntervalMs: 200, debounceMs: 20, settleMs: 50 });
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

    const store = new PolicyStore(path.join(dir, 'policy.yaml'), testRuntime(), { pollIntervalMs: 0, debounceMs: 20, settleMs: 50 });
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
    const store = new PolicyStore(file, runtime, { settleMs: 20 });
    await store.load();
    const first = store.current();
    expect(await Promise.all([store.reload(), store.reload(), store.reload()])).toEqual([true, true, true]);
    expect(store.current()).toBe(first);
    expect(await reloadsOf(runtime, 'success')).toBe(1);
  });
});

// ---- All or nothing (issue 14 §1) -------------------------------------------------------------

// The first part alone is a valid, MORE permissive policy (default: authenticated lets an
// items:read caller onto /v1/admin/users); the admin rule is in the second part.
const PART_ONE = (tenant: string) => `
identity:
  - host: { domains: { shop.example.com: { tenant: ${tenant}, scopes: ["items:read"] } } }
default: authenticated
routes:
  - { match: { pathPrefix: /v1/items/ }, require: { allOf: ["items:read"] } }
`;
const PART_TWO = `  - { match: { pathPrefix: /v1/admin/ }, require: { allOf: [admin] } }
`;
const fullPolicy = (tenant: string) => PART_ONE(tenant) + PART_TWO;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function adminAllowed(store: PolicyStore): Promise<boolean> {
  const d = await authorize(store.current()!, request({ host: 'shop.example.com', path: '/v1/admin/users' }));
  return d.allowed;
}

/** Rewrite the file in place (same inode: truncate, then write), in parts with pauses between them. */
async function writeInPlace(file: string, parts: readonly string[], pauseMs: number): Promise<void> {
  const fd = openSync(file, 'r+');
  try {
    ftruncateSync(fd, 0);
    let position = 0;
    for (let i = 0; i < parts.length; i++) {
      if (i > 0) await sleep(pauseMs);
      position += writeSync(fd, parts[i]!, position);
    }
  } finally {
    closeSync(fd);
  }
}

/** Sample the live policy every few ms while `during` runs; resolves to the number of admin allows seen. */
async function adminAllowsDuring(store: PolicyStore, during: Promise<unknown>): Promise<number> {
  let done = false;
  void during.finally(() => (done = true));
  let allows = 0;
  while (!done) {
    if (await adminAllowed(store)) allows++;
    await sleep(5);
  }
  return allows;
}

function capturingRuntime() {
  const lines: { msg: string; [k: string]: unknown }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, callback) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line));
      callback();
    },
  });
  const runtime = testRuntime({ logger: pino({ level: 'info' }, sink) });
  return { runtime, lines };
}

async function gauge(runtime: ReturnType<typeof testRuntime>, name: string): Promise<number | undefined> {
  const metric = (await runtime.metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  return (metric as { values?: { value: number }[] } | undefined)?.values?.[0]?.value;
}

describe('PolicyStore: a reload is all or nothing', () => {
  it('never serves a file rewritten in place in two parts 400 ms apart (the half that parses is more permissive)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-reload-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, fullPolicy('one'));
    const store = new PolicyStore(file, testRuntime(), { pollIntervalMs: 100, debounceMs: 20 });
    stores.push(store);
    await store.load();
    store.watch();
    expect(await adminAllowed(store)).toBe(false);

    const writing = writeInPlace(file, [PART_ONE('two'), PART_TWO], 400);
    const applied = writing.then(() => eventually(async () => (await tenantOf2(store)) === 'two', 10_000));
    const allows = await adminAllowsDuring(store, applied);
    await applied;
    expect(allows).toBe(0);
    expect(await adminAllowed(store)).toBe(false);
    expect(await tenantOf2(store)).toBe('two');
  }, 20_000);

  it('never serves any prefix of a slow in-place write (line by line, each pause shorter than the settle window)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-reload-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, fullPolicy('one'));
    const store = new PolicyStore(file, testRuntime(), { pollIntervalMs: 50, debounceMs: 10, settleMs: 300 });
    stores.push(store);
    await store.load();
    store.watch();

    // Line by line: many prefixes are valid policies, several of them more permissive.
    const parts = fullPolicy('two').split(/(?<=\n)/);
    const writing = writeInPlace(file, parts, 150);
    const applied = writing.then(() => eventually(async () => (await tenantOf2(store)) === 'two', 10_000));
    const allows = await adminAllowsDuring(store, applied);
    await applied;
    expect(allows).toBe(0);
  }, 30_000);

  it('refuses an empty or comment-only file on reload and keeps serving the last good policy', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-reload-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, fullPolicy('one'));
    const runtime = testRuntime();
    const store = new PolicyStore(file, runtime, { pollIntervalMs: 50, debounceMs: 10, settleMs: 30 });
    stores.push(store);
    await store.load();
    store.watch();
    const before = store.current();

    writeFileSync(file, '');
    await eventually(async () => (await reloadsOf(runtime, 'failure')) === 1);
    writeFileSync(file, '# policy goes here\n\n# nothing yet\n');
    await eventually(async () => (await reloadsOf(runtime, 'failure')) === 2);
    expect(store.current()).toBe(before);
    expect(await tenantOf2(store)).toBe('one');
    expect(await adminAllowed(store)).toBe(false);
  });

  it('reloads while another file in the directory changes every few ms (a log file), by event and by poll', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-reload-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, fullPolicy('one'));
    const store = new PolicyStore(file, testRuntime(), { pollIntervalMs: 300, debounceMs: 500, settleMs: 50 });
    stores.push(store);
    await store.load();
    store.watch();

    let churning = true;
    const churn = (async () => {
      for (let i = 0; churning; i++) {
        writeFileSync(path.join(dir, 'portcullis.log'), `line ${i}\n`);
        await sleep(10);
      }
    })();
    try {
      writeFileSync(file, fullPolicy('two'));
      await eventually(async () => (await tenantOf2(store)) === 'two', 5000);
    } finally {
      churning = false;
      await churn;
    }
  }, 15_000);

  it('the poll gets through while the directory churns, for a change no watch event reports', async () => {
    // policy.yaml is a symlink into another directory: writes to its target raise no event in the
    // watched directory, so only the poll can see them — and the churn must not starve it.
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-reload-'));
    const elsewhere = mkdtempSync(path.join(tmpdir(), 'pc-reload-target-'));
    writeFileSync(path.join(elsewhere, 'real.yaml'), fullPolicy('one'));
    symlinkSync(path.join(elsewhere, 'real.yaml'), path.join(dir, 'policy.yaml'));
    const store = new PolicyStore(path.join(dir, 'policy.yaml'), testRuntime(), { pollIntervalMs: 200, debounceMs: 1000, settleMs: 50 });
    stores.push(store);
    await store.load();
    store.watch();

    let churning = true;
    const churn = (async () => {
      for (let i = 0; churning; i++) {
        writeFileSync(path.join(dir, 'portcullis.log'), `line ${i}\n`);
        writeFileSync(path.join(dir, 'policy.yaml.swp'), `swap ${i}\n`);
        await sleep(10);
      }
    })();
    try {
      writeFileSync(path.join(elsewhere, 'real.yaml'), fullPolicy('two'));
      await eventually(async () => (await tenantOf2(store)) === 'two', 5000);
    } finally {
      churning = false;
      await churn;
    }
  }, 15_000);

  it('counts and logs a broken content once, not on every poll; a new broken content once more', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-reload-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, fullPolicy('one'));
    const { runtime, lines } = capturingRuntime();
    const store = new PolicyStore(file, runtime, { pollIntervalMs: 30, debounceMs: 10, settleMs: 20 });
    stores.push(store);
    await store.load();
    expect(await gauge(runtime, 'portcullis_policy_last_reload_success')).toBe(1);
    const loadedAt = await gauge(runtime, 'portcullis_policy_last_reload_timestamp_seconds');
    expect(loadedAt).toBeGreaterThan(0);
    store.watch();

    writeFileSync(file, 'routes: [ { match: { path: /x }, requires: nope } ]\n');
    await eventually(async () => (await reloadsOf(runtime, 'failure')) === 1);
    // Many polls later: still one failure, one log line.
    for (let i = 0; i < 10; i++) await store.reload();
    await sleep(300);
    expect(await reloadsOf(runtime, 'failure')).toBe(1);
    expect(lines.filter((l) => l.msg === 'policy reload failed; keeping the last good policy')).toHaveLength(1);
    expect(await gauge(runtime, 'portcullis_policy_last_reload_success')).toBe(0);
    expect(await gauge(runtime, 'portcullis_policy_last_reload_timestamp_seconds')).toBe(loadedAt);

    writeFileSync(file, 'routes: [ { match: { path: /y }, requires: nope } ]\n');
    await eventually(async () => (await reloadsOf(runtime, 'failure')) === 2);
    for (let i = 0; i < 5; i++) await store.reload();
    expect(await reloadsOf(runtime, 'failure')).toBe(2);
    expect(lines.filter((l) => l.msg === 'policy reload failed; keeping the last good policy')).toHaveLength(2);

    runtime.clock.advance(5000);
    writeFileSync(file, fullPolicy('two'));
    await eventually(async () => (await tenantOf2(store)) === 'two');
    expect(await gauge(runtime, 'portcullis_policy_last_reload_success')).toBe(1);
    expect(await gauge(runtime, 'portcullis_policy_last_reload_timestamp_seconds')).toBeGreaterThan(loadedAt!);
  }, 15_000);
});

async function tenantOf2(store: PolicyStore): Promise<string | undefined> {
  const d = await authorize(store.current()!, request({ host: 'shop.example.com', path: '/v1/items/1' }));
  return d.principal?.tenant;
}
