// Shared fixtures for the API-key tests: temporary key files, an admin bound to a store, and a
// policy compiled from YAML with the test runtime.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Clock } from '../../src/clock.js';
import type { KeyAdmin } from '../../src/keys/admin.js';
import { KeyHasher } from '../../src/keys/hashing.js';
import type { KeyAdminStore } from '../../src/keys/store.js';
import type { Runtime } from '../../src/runtime.js';

export const DAY = 86_400_000;

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-keys-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function adminFor(store: KeyAdminStore, clock: Clock, pepper?: string): KeyAdmin {
  return { store, hasher: new KeyHasher(pepper), clock, maxExpiryMs: 365 * DAY };
}

/** Sum of a counter's values for the label set (0 when never incremented). */
export async function counterValue(runtime: Runtime, name: string, labels: Record<string, string>): Promise<number> {
  const metric = runtime.metrics.registry.getSingleMetric(name);
  if (!metric) return 0;
  const data = await metric.get();
  return data.values
    .filter((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value))
    .reduce((sum, v) => sum + v.value, 0);
}

/** Poll `condition` every 20 ms until it holds or `timeoutMs` passes; returns whether it held. */
export async function eventually(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
