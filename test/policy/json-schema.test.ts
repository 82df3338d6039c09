// The editor schema (schema/policy.schema.json) is generated from the zod schema, is up to date,
// accepts every example policy and rejects the policy-error fixtures that are schema errors. The
// JSON Schema is read back by an independent reader (zod's fromJSONSchema), never by the zod
// schema it came from.

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { policyJsonSchema } from '../../src/policy/json-schema.js';
import { policySchema } from '../../src/policy/schema.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const committed = JSON.parse(readFileSync(path.join(ROOT, 'schema/policy.schema.json'), 'utf8'));
const reader = z.fromJSONSchema(committed);

const examples = readdirSync(path.join(ROOT, 'examples')).filter((f) => f.endsWith('.yaml') && !f.endsWith('.test.yaml'));
const FIXTURES = path.join(ROOT, 'test/fixtures/policy-errors');

/** Fixtures whose problem is one a JSON Schema can state (a type, an enum, an unknown key, a pattern). */
function schemaErrorFixtures(): string[] {
  return readdirSync(FIXTURES).filter((f) => {
    let raw: unknown;
    try {
      raw = parse(readFileSync(path.join(FIXTURES, f), 'utf8'), { uniqueKeys: true });
    } catch {
      return false; // YAML errors are the editor's YAML support, not the schema's
    }
    if (raw === null || typeof raw !== 'object' || JSON.stringify(raw).includes('${')) return false;
    const result = policySchema.safeParse(raw);
    return !result.success && result.error.issues.some((issue) => issue.code !== 'custom');
  });
}

describe('schema/policy.schema.json', () => {
  it('is what the current zod schema generates (run npm run build after changing it)', () => {
    expect(committed).toEqual(policyJsonSchema());
  });

  it('is a draft 2020-12 schema that refuses unknown keys', () => {
    expect(committed.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(committed.additionalProperties).toBe(false);
  });

  for (const file of examples) {
    it(`accepts examples/${file}`, () => {
      const raw = parse(readFileSync(path.join(ROOT, 'examples', file), 'utf8'));
      const result = reader.safeParse(raw);
      expect(result.success, JSON.stringify(result.error?.issues)).toBe(true);
    });
  }

  it('accepts ${VAR} wherever a number goes', () => {
    expect(reader.safeParse({ rateLimits: { policies: [{ name: 'p', key: ['ip'], window: '60s', limit: '${LIMIT}' }] } }).success).toBe(true);
    expect(reader.safeParse({ rateLimits: { policies: [{ name: 'p', key: ['ip'], window: '60s', limit: 'twenty' }] } }).success).toBe(false);
  });

  const fixtures = schemaErrorFixtures();
  it('finds schema-error fixtures', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(6);
  });
  for (const fixture of fixtures) {
    it(`rejects ${fixture}`, () => {
      const raw = parse(readFileSync(path.join(FIXTURES, fixture), 'utf8'));
      expect(reader.safeParse(raw).success).toBe(false);
    });
  }
});
