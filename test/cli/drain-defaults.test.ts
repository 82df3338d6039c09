// Issue 14 §5: the drain delay must outlast the time the documented proxies need to notice a
// draining replica. examples/envoy, the chart and the CLI default are checked against each other.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DEFAULT_DRAIN_DELAY } from '../../src/cli.js';
import { parseDuration } from '../../src/policy/units.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ms = (text: string) => {
  const value = parseDuration(text);
  if (value === undefined) throw new Error(`not a duration: ${text}`);
  return value;
};

describe('drain delay agreement', () => {
  const envoy = parse(readFileSync(path.join(ROOT, 'examples/envoy/envoy.yaml'), 'utf8'));
  const cluster = envoy.static_resources.clusters.find((c: { name: string }) => c.name === 'portcullis');
  const check = cluster.health_checks[0];
  // Worst case: NOT_SERVING starts right after a check passed; unhealthy_threshold checks later
  // (each up to `timeout` to answer) the host leaves rotation.
  const envoyNoticeMs = ms(check.interval) * check.unhealthy_threshold + ms(check.timeout);
  const values = parse(readFileSync(path.join(ROOT, 'charts/portcullis/values.yaml'), 'utf8'));

  it('the example Envoy health check notices a draining replica well within the drain delay', () => {
    expect(check.grpc_health_check).toBeDefined();
    expect(envoyNoticeMs).toBeLessThanOrEqual(ms(DEFAULT_DRAIN_DELAY) / 2);
  });

  it('the chart and the CLI default agree, and the grace period covers the drain', () => {
    expect(ms(values.shutdown.drainDelay)).toBe(ms(DEFAULT_DRAIN_DELAY));
    expect(values.terminationGracePeriodSeconds * 1000).toBeGreaterThanOrEqual(ms(values.shutdown.drainDelay) + ms(values.shutdown.drainTimeout));
  });
});
