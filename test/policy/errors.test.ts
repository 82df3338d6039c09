// One fixture per policy error, each asserting its exact message: file, line, column, path, text.

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { formatPolicyIssue, PolicyError } from '../../src/errors.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/policy-errors');

function problems(yaml: string): string[] {
  try {
    compileYaml(yaml, testRuntime());
  } catch (err) {
    if (err instanceof PolicyError) return err.issues.map(formatPolicyIssue);
    throw err;
  }
  return [];
}

describe('policy errors', () => {
  const fixtures = readdirSync(DIR).filter((f) => f.endsWith('.yaml'));

  it('has fixtures', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(20);
  });

  for (const fixture of fixtures) {
    it(fixture.replace(/\.yaml$/, ''), () => {
      const text = readFileSync(path.join(DIR, fixture), 'utf8');
      const expected = [...text.matchAll(/^# expect: (.*)$/gm)].map((m) => m[1]);
      expect(expected.length).toBeGreaterThan(0);
      expect(problems(text)).toEqual(expected);
    });
  }
});
