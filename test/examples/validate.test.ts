// Every example policy passes `portcullis validate` (the quickstart and the five seed examples, and
// any policy added under examples/ later). Proxy configurations, key files and policy tests
// (*.test.yaml, run by test/cli/test-command.test.ts) are not policies.
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, EXAMPLES, TEST_ENV } from './helpers.js';

const NOT_POLICIES = new Set(['envoy', 'envoy-http', 'istio', 'keys', 'nginx', 'traefik', 'caddy']);

function policyFiles(dir: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) {
      if (!NOT_POLICIES.has(entry)) files.push(...policyFiles(full));
    } else if (/\.ya?ml$/.test(entry) && !/\.test\.ya?ml$/.test(entry)) {
      files.push(full);
    }
  }
  return files;
}

const files = policyFiles(EXAMPLES);

describe('examples/*.yaml pass portcullis validate', () => {
  it('finds the quickstart and one example per seed (plus the seed 000 dev variant)', () => {
    const names = files.map((f) => path.relative(EXAMPLES, f));
    for (const expected of [
      'portcullis.yaml',
      'seed-000-atrope.yaml',
      'seed-000-atrope-dev.yaml',
      'seed-001-ktrlplane.yaml',
      'seed-002-commerce.yaml',
      'seed-003-flotac.yaml',
      'seed-004-tronexus.yaml',
    ]) {
      expect(names).toContain(expected);
    }
  });

  it.each(files.map((f) => [path.relative(EXAMPLES, f), f]))('%s', async (_name, file) => {
    const result = await cli(['validate', '--config', file], { ...TEST_ENV });
    expect(result.err.replace(/^warning: .*mode is dev.*\n/m, '')).toBe('');
    expect(result.code).toBe(0);
    expect(result.out).toMatch(/: OK \(\d+ routes/);
  });

  it('the secrets really come from the environment: without them validate fails', async () => {
    const result = await cli(['validate', '--config', path.join(EXAMPLES, 'seed-003-flotac.yaml')], {});
    expect(result.code).toBe(1);
    expect(result.err).toContain('environment variable SUPABASE_JWT_SECRET is not set');
  });
});
