// Review of issue 14 §1: a real example policy cut at EVERY line boundary. Each prefix is written
// in place, a reload is triggered at once (as a watch event or a poll would), and the file is
// completed well within the settle window. Many of these prefixes are valid policies, several more
// permissive than the whole (a prefix without the admin route sends /v1/admin/ to the default, or
// without `default: deny`, …). The running policy must never be replaced by a prefix: the only
// policy that may go live is the complete new file.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/policy/load.js';
import { PolicyStore } from '../../src/policy/store.js';
import { testRuntime } from '../support/runtime.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const EXAMPLE = readFileSync(path.join(ROOT, 'examples/portcullis.yaml'), 'utf8');
const KEYS = path.join(ROOT, 'examples/keys/quickstart.yaml');
/** The settle window; the writer completes the file after a quarter of it. */
const SETTLE_MS = 400;
const COMPLETE_AFTER_MS = 100;
/** Cuts tried at once: few enough that the store reads the prefix before the writer completes it. */
const BATCH = 4;

const OLD = EXAMPLE.replace('realm: example-api', 'realm: old-api');
const NEW = EXAMPLE.replace('realm: example-api', 'realm: new-api');

const stores: PolicyStore[] = [];
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What went live, one entry per swap after the first load. */
async function cutAt(lines: string[], k: number): Promise<{ prefixParses: boolean; swapped: string[] }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'pc-cut-'));
  mkdirSync(path.join(dir, 'keys'));
  copyFileSync(KEYS, path.join(dir, 'keys/quickstart.yaml'));
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, OLD);
  const store = new PolicyStore(file, testRuntime(), { pollIntervalMs: 0, settleMs: SETTLE_MS });
  stores.push(store);
  await store.load();
  const swapped: string[] = [];
  store.onSwap((p) => swapped.push(JSON.stringify(p.document)));

  const prefix = lines.slice(0, k).join('');
  let prefixParses = true;
  try {
    parsePolicy(prefix, file, {});
  } catch {
    prefixParses = false;
  }
  writeFileSync(file, prefix); // in place: same inode, truncated and rewritten
  const first = store.reload();
  await sleep(COMPLETE_AFTER_MS);
  const second = store.reload(); // an event in the middle of the write
  writeFileSync(file, NEW);
  await Promise.all([first, second]);
  await store.reload();
  return { prefixParses, swapped };
}

describe('reload: an example policy cut at every line is never served', () => {
  it('examples/portcullis.yaml: only the complete new file goes live, whatever line the writer paused at', async () => {
    const lines = NEW.split(/(?<=\n)/);
    const expected = JSON.stringify(parsePolicy(NEW, 'policy.yaml', {}));
    const results: Awaited<ReturnType<typeof cutAt>>[] = [];
    for (let k = 0; k < lines.length; k += BATCH) {
      const ks = Array.from({ length: Math.min(BATCH, lines.length - k) }, (_, i) => k + i);
      results.push(...(await Promise.all(ks.map((cut) => cutAt(lines, cut)))));
    }
    // The test means something: many prefixes are policies of their own.
    expect(results.filter((r) => r.prefixParses).length).toBeGreaterThan(5);
    results.forEach((r, k) => {
      expect({ cut: k, swapped: r.swapped }).toEqual({ cut: k, swapped: [expected] });
    });
  }, 60_000);
});
