// One fixture per policy error, each asserting its exact message: file, line, column, path, text.
// `# env: NAME=value` lines set environment variables for the fixture (for `${NAME}` fields).

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { formatPolicyIssue, PolicyError } from '../../src/errors.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/policy-errors');

function problems(yaml: string, env: Record<string, string> = {}): string[] {
  try {
    compileYaml(yaml, testRuntime({ env }));
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
      const env = Object.fromEntries([...text.matchAll(/^# env: ([A-Za-z_][A-Za-z0-9_]*)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
      const found = problems(text, env);
      expect(found).toEqual(expected);
      // Whatever the error, no message echoes a value that came from the environment.
      for (const value of Object.values(env)) for (const line of found) expect(line).not.toContain(value);
    });
  }
});
