// server.explain: the decision log line carries the same explanation `portcullis check` prints;
// off by default (no explain field, nothing recorded).

import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Authorizer } from '../../src/pipeline/authorizer.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const POLICY = (explain: boolean) => `server: { explain: ${explain} }
identity:
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [storefront] } } }
routes:
  - { name: health, match: { path: /health }, public: true }
  - { name: admin, match: { pathPrefix: /admin }, require: { allOf: [admin] } }
`;

function logged(explain: boolean, host: string, path: string): Record<string, any> {
  const lines: string[] = [];
  const logger = createLogger({ level: 'info', destination: { write: (s: string) => lines.push(s) } });
  const policy = compileYaml(POLICY(explain), testRuntime());
  const authorizer = new Authorizer({ current: () => policy }, logger, new Metrics({ defaultMetrics: false }));
  authorizer.check(request({ host, path }));
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!);
}

describe('server.explain', () => {
  it('is off by default: no explanation in the decision line', () => {
    const line = logged(false, 'shop.example.com', '/admin/x');
    expect(line.reason).toBe('insufficient_scope');
    expect(line).not.toHaveProperty('explain');
  });

  it('adds the route choice, the identity source, the caller and the rule that denied', () => {
    const line = logged(true, 'shop.example.com', '/admin/x');
    expect(line.explain.route).toMatchObject({ chosen: 'admin', public: false });
    expect(line.explain.route.considered).toContainEqual(expect.objectContaining({ name: 'health', matched: false }));
    expect(line.explain.identity).toEqual([{ source: 'host', outcome: 'principal', detail: expect.stringContaining('proved host caller') }]);
    expect(line.explain.principal).toMatchObject({ method: 'host', tenant: 'acme', scopes: ['storefront'] });
    expect(line.explain.checks).toContainEqual({ check: 'insufficient_scope', ok: false, detail: 'missing admin' });
    expect(line.explain.deniedBy).toBe('permission');
  });
});
