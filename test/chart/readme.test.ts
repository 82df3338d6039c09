// The chart README is generated where it can be (its values table, from values.yaml and
// values.schema.json) and stays readable once packaged (no links into the repository).

import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';

const CHART = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../charts/portcullis');
const SCRIPT = path.join(CHART, 'gen-readme.mjs');
const README = readFileSync(path.join(CHART, 'README.md'), 'utf8');
const copies: string[] = [];
afterAll(() => {
  for (const dir of copies) rmSync(dir, { recursive: true, force: true });
});

function check(chartDir: string): { status: number | null; stderr: string } {
  const result = spawnSync(process.execPath, [SCRIPT, '--check', '--chart', chartDir], { encoding: 'utf8' });
  return { status: result.status, stderr: result.stderr };
}

/** Dotted paths of every leaf (scalar, list or empty map) of a values document. */
function leaves(value: unknown, prefix: string[] = []): string[] {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || Object.keys(value).length === 0) return [prefix.join('.')];
  return Object.entries(value).flatMap(([k, v]) => leaves(v, [...prefix, k]));
}

describe('chart README', () => {
  it('is what gen-readme.mjs generates from values.yaml and values.schema.json', () => {
    const result = check(CHART);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it('goes out of date when a value or its comment changes (so the check above means something)', () => {
    const copy = mkdtempSync(path.join(tmpdir(), 'portcullis-chart-'));
    copies.push(copy);
    cpSync(CHART, copy, { recursive: true });
    const values = path.join(copy, 'values.yaml');
    writeFileSync(values, readFileSync(values, 'utf8').replace('replicaCount: 2', 'replicaCount: 3'));
    const result = check(copy);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('is out of date');
  });

  it('lists every value of values.yaml with its default', () => {
    const values = YAML.parse(readFileSync(path.join(CHART, 'values.yaml'), 'utf8')) as Record<string, unknown>;
    for (const key of leaves(values)) expect(README, key).toContain(`| \`${key}\` |`);
    expect(README).toContain('| `replicaCount` | integer, ≥ 0 | `2` |');
  });

  it('has no relative links, which break once the chart is packaged or shown on a chart hub', () => {
    const targets = [...README.matchAll(/\]\(([^)]+)\)/g)].map((m) => m[1]!);
    const autolinks = [...README.matchAll(/<(https?:[^>]+)>/g)].map((m) => m[1]!);
    expect(targets.length + autolinks.length).toBeGreaterThan(0);
    for (const target of targets) expect(target, target).toMatch(/^(https:\/\/|#)/);
  });
});
