// Review of issue 13 §1 (strictest mode): the readings of one path are bounded in work, not only in
// count. Before these bounds, a 3.5 KiB path with seven independent non-canonical features had 96–192
// readings of ~3.5 KiB each: every one went through every transform and every route table, about
// 15 ms of CPU per unauthenticated check (a few dozen such requests per second saturated a worker);
// the same features on a 40-character path, 192 readings, ~1.7 ms. A path with more than
// MAX_READINGS readings or MAX_READINGS_CHARS characters in them is refused instead.
import { describe, expect, it } from 'vitest';
import { MAX_READINGS, MAX_READINGS_CHARS, pathReadings } from '../../src/authz/path.js';
import { authorize } from '../../src/pipeline/authorize.js';
import { request } from '../support/request.js';
import { compileYaml } from '../support/runtime.js';

const SECRET = 'admin-secret-long-enough-1234';
const policy = compileYaml(`
paths: { nonCanonical: strictest }
identity:
  - sharedSecret: { header: x-admin-secret, secret: "${SECRET}", tenant: ops, scopes: [admin] }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: catalog, match: { pathPrefix: /v1/products }, public: true }
  - { name: everything, match: { pathPrefix: / }, require: { anyOf: [admin] } }
`);

/** Seven features each some upstream reads differently, so their readings multiply. */
const FEATURES = '/a%61/b%2Fc/d;x/e\\f/g/./h/i//j/k%2521';

describe('path readings are bounded in work (strictest)', () => {
  it('a long path with many independent readings is refused, not expanded', async () => {
    const path = `${FEATURES}/${'z'.repeat(3450)}`;
    expect(path.length).toBeLessThan(4096);
    expect(pathReadings(path)).toBeUndefined();
    expect(await authorize(policy, request({ path, headers: { 'x-admin-secret': SECRET } }))).toMatchObject({
      allowed: false,
      status: 400,
      reason: 'invalid_path',
    });
  });

  it('the seven features on a short path are refused too (too many readings)', async () => {
    const path = `${FEATURES}/z`;
    expect(pathReadings(path)).toBeUndefined();
    expect(await authorize(policy, request({ path, headers: { 'x-admin-secret': SECRET } }))).toMatchObject({ allowed: false, status: 400, reason: 'invalid_path' });
  });

  it('a path with a few such features is still judged by every reading', async () => {
    const path = '/d;x/g/./h/i//j/z';
    const readings = pathReadings(path)!;
    expect(readings.length).toBeGreaterThan(4);
    expect(await authorize(policy, request({ path }))).toMatchObject({ allowed: false, reason: 'missing_credential', route: 'everything' });
    expect(await authorize(policy, request({ path, headers: { 'x-admin-secret': SECRET } }))).toMatchObject({ allowed: true });
  });

  it('a long path with one reading-changing feature keeps working', async () => {
    const path = `/v1/products/./${'p'.repeat(3000)}`;
    expect(await authorize(policy, request({ path }))).toMatchObject({ allowed: true, route: 'catalog' });
  });

  it('every path up to the length limit stays within the budget or is refused', () => {
    for (let pad = 0; pad <= 4000; pad += 250) {
      for (let mask = 1; mask < 128; mask += 7) {
        const parts = FEATURES.split(/(?=\/)/).filter((_, i) => mask & (1 << i));
        const path = `${parts.join('')}/${'z'.repeat(pad)}`.slice(0, 4096);
        const readings = pathReadings(path);
        if (readings === undefined) continue;
        expect(readings.length).toBeLessThanOrEqual(MAX_READINGS);
        expect(readings.reduce((n, r) => n + r.length, 0)).toBeLessThanOrEqual(MAX_READINGS_CHARS);
      }
    }
  });
});
