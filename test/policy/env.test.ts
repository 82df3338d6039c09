// `${VAR}` in policy values (issue 17 §4, issue 13 §6): numbers and durations from the
// environment work (seed 004: "Adjust thresholds via .env variables"), and no message about an
// interpolated field ever echoes the value.

import { describe, expect, it } from 'vitest';
import { PolicyError, formatPolicyIssue } from '../../src/errors.js';
import { authorize } from '../../src/pipeline/authorize.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const SEED_004_FROM_ENV = `
routes:
  - { name: login, match: { path: /auth/login }, public: true }
rateLimits:
  policies:
    - name: per-ip-endpoint
      key: [ip, route]
      window: \${AUTH_WINDOW}
      limit: \${AUTH_LIMIT}
      lockout: { after: "\${LOCKOUT_AFTER}", for: "\${LOCKOUT_FOR}" }
`;

function problems(yaml: string, env: Record<string, string>): string[] {
  try {
    compileYaml(yaml, testRuntime({ env }));
  } catch (err) {
    if (err instanceof PolicyError) return err.issues.map(formatPolicyIssue);
    throw err;
  }
  return [];
}

describe('numbers and durations from the environment', () => {
  it('feeds limits, windows and lockout counts, plain or quoted, and the pipeline enforces them', async () => {
    const runtime = testRuntime({ env: { AUTH_WINDOW: '60', AUTH_LIMIT: '3', LOCKOUT_AFTER: '2', LOCKOUT_FOR: '15m' } });
    const policy = compileYaml(SEED_004_FROM_ENV, runtime);
    const config = policy.document.rateLimits!.policies[0]!;
    expect(config).toMatchObject({ window: 60_000, limit: 3, lockout: { after: 2, for: 900_000 } });

    const login = () => authorize(policy, request({ path: '/auth/login', method: 'POST', sourceAddress: '198.51.100.9' }));
    const outcomes: string[] = [];
    for (let i = 0; i < 4; i++) {
      const d = await login();
      outcomes.push(d.allowed ? 'allow' : d.reason);
    }
    expect(outcomes).toEqual(['allow', 'allow', 'allow', 'rate_limited']);
  });

  it('names the variable and the field when a value is not a number, never the value', () => {
    const env = { AUTH_WINDOW: '60s', AUTH_LIMIT: 'twenty-per-minute', LOCKOUT_AFTER: 'ten', LOCKOUT_FOR: '15m' };
    expect(problems(SEED_004_FROM_ENV, env)).toEqual([
      'policy.yaml:9:14: rateLimits.policies[0].limit: environment variable AUTH_LIMIT must be a number here',
      'policy.yaml:10:25: rateLimits.policies[0].lockout.after: environment variable LOCKOUT_AFTER must be a number here',
    ]);
  });

  it('never echoes an interpolated secret, whichever field refuses it', () => {
    const secret = 'whsec_9f8e7d6c5b4a39281706f5e4d3c2b1a0';
    const yaml = `
routes:
  - match: { path: /hooks/payments }
    identity:
      - sharedSecret: { header: x-hook-secret, secret: "\${HOOK_SECRET}" }
rateLimits:
  policies:
    - { name: per-ip, key: [ip], window: "\${HOOK_SECRET}", limit: "\${HOOK_SECRET}" }
    - { name: "\${HOOK_SECRET}", key: [ip], rate: "\${HOOK_SECRET}/min" }
`;
    const found = problems(yaml, { HOOK_SECRET: secret });
    expect(found.length).toBeGreaterThanOrEqual(3);
    for (const line of found) {
      expect(line).not.toContain(secret);
      expect(line).toContain('HOOK_SECRET');
    }
  });

  it('leaves a numeric-looking value a string where the field wants a string', () => {
    const policy = compileYaml(
      `
identity:
  - host: { domains: { shop.example.com: { tenant: "\${TENANT}" } } }
routes:
  - { match: { pathPrefix: /v1/ } }
`,
      testRuntime({ env: { TENANT: '1234' } }),
    );
    expect(policy.document.identity[0]!.host!.domains['shop.example.com']!.tenant).toBe('1234');
  });
});
