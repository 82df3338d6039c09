// examples/README.md maps every seed sentence to its policy lines and tests: every walk step (Wn.m)
// it names is a step of test/examples/grpc-walks.test.ts, every quoted test title exists in the
// seed's test file, and every example file it names exists.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EXAMPLES, ROOT } from './helpers.js';

const readme = readFileSync(path.join(EXAMPLES, 'README.md'), 'utf8');
const table = readme.slice(readme.indexOf('## Seed sentences → policy → tests'));
const walks = readFileSync(path.join(ROOT, 'test/examples/grpc-walks.test.ts'), 'utf8');
const seedTests = readdirSync(path.join(ROOT, 'test/examples'))
  .filter((f) => /^seed-00\d-.*\.test\.ts$/.test(f))
  .map((f) => readFileSync(path.join(ROOT, 'test/examples', f), 'utf8'))
  .join('\n');

describe('examples/README.md sentence table', () => {
  it('has a section per seed', () => {
    for (const n of [0, 1, 2, 3, 4]) expect(table).toContain(`### Seed 00${n}`);
  });

  it('names only walk steps that exist', () => {
    const steps = new Set(table.match(/W\d\.\d/g));
    expect(steps.size).toBeGreaterThan(20);
    for (const step of steps) expect(walks, step).toMatch(new RegExp(`${step.replace('.', '\\.')}\\b`));
  });

  it('quotes only test titles that exist', () => {
    const rows = table.split('\n').filter((line) => line.startsWith('| ') && !line.startsWith('| sentence'));
    let quoted = 0;
    for (const row of rows) {
      const tests = row.split(' | ').at(-1)!;
      for (const m of tests.matchAll(/"((?:[^"]|"(?=[^;,|]))+?)"(?=[;,]|\s*\||\s*$)/g)) {
        quoted++;
        // "start … middle …": each piece is part of a title (quotes inside titles are escaped there).
        for (const piece of m[1]!.split('…').map((p) => p.trim()).filter(Boolean)) {
          const spellings = [piece, piece.replaceAll('"', '\\"'), piece.replaceAll("'", "\\'")];
          expect(spellings.some((s) => seedTests.includes(s)), piece).toBe(true);
        }
      }
    }
    expect(quoted).toBeGreaterThan(30);
  });

  it('names files that exist', () => {
    for (const m of table.matchAll(/`((?:test|examples)\/[^`*]+|seed-00\d-[a-z0-9-]+\.yaml)`/g)) {
      const file = m[1]!.startsWith('seed-') ? path.join(EXAMPLES, m[1]!) : path.join(ROOT, m[1]!);
      expect(existsSync(file), m[1]).toBe(true);
    }
  });
});
