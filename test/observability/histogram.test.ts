// portcullis_check_duration_seconds (issue 22): the per-check histogram binds its series once;
// what /metrics shows must be exactly what prom-client's Histogram shows for the same observations.

import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FastHistogram } from '../../src/observability/histogram.js';
import { Metrics } from '../../src/observability/metrics.js';

const BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
const VALUES = [0, 0.00005, 0.0001, 0.0001000001, 0.0003, 0.0009, 0.002, 0.7, 0.01, 0.01, 0.2, 3];

/** Exposition lines, label order normalised (Prometheus does not care about it). */
function lines(text: string): string[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => line.replace(/\{([^}]*)\}/, (_m, inner: string) => `{${inner.split(',').sort().join(',')}}`))
    .sort();
}

describe('FastHistogram', () => {
  it('exports what prom-client exports for the same observations', async () => {
    const theirs = new Registry();
    const ours = new Registry();
    const reference = new Histogram({ name: 'h_seconds', help: 'help text', labelNames: ['decision'], buckets: BUCKETS, registers: [theirs] });
    const fast = new FastHistogram('h_seconds', 'help text', ['decision'], BUCKETS, ours);
    for (const [i, v] of VALUES.entries()) {
      const decision = i % 3 === 0 ? 'deny' : 'allow';
      reference.labels(decision).observe(v);
      fast.labels(decision).observe(v);
    }
    expect(lines(await ours.metrics())).toEqual(lines(await theirs.metrics()));
    expect(await ours.getMetricsAsJSON()).toHaveLength(1);
    reference.reset();
    fast.reset();
    reference.labels('allow').observe(0.001);
    fast.labels('allow').observe(0.001);
    expect(lines(await ours.metrics()).filter((l) => l.includes('allow'))).toEqual(lines(await theirs.metrics()).filter((l) => l.includes('allow')));
  });

  it('is what Metrics uses for portcullis_check_duration_seconds', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    metrics.checkDuration.labels('allow').observe(0.0002);
    const text = await metrics.registry.metrics();
    expect(text).toContain('# TYPE portcullis_check_duration_seconds histogram');
    expect(text).toMatch(/^portcullis_check_duration_seconds_bucket\{le="0.00025",decision="allow"\} 1$/m);
    expect(text).toMatch(/^portcullis_check_duration_seconds_count\{decision="allow"\} 1$/m);
    expect(metrics.checkDuration).toBeInstanceOf(FastHistogram);
  });
});

describe('batched counter children (counted on every check)', () => {
  it('show every count when read, keep one child per series, and a released series stays removed', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    const counter = metrics.counter('t_total', 'help', ['result', 'route']);
    const hit = metrics.batchedChild(counter, { result: 'hit', route: 'a' });
    expect(metrics.batchedChild(counter, { route: 'a', result: 'hit' })).toBe(hit);
    const miss = metrics.batchedChild(counter, { result: 'miss', route: 'a' });
    for (let i = 0; i < 5; i++) hit.inc();
    miss.inc(2);
    let text = await metrics.registry.metrics();
    expect(text).toMatch(/^t_total\{result="hit",route="a"\} 5$/m);
    expect(text).toMatch(/^t_total\{result="miss",route="a"\} 2$/m);
    hit.inc();
    expect((await counter.get()).values.find((v) => v.labels.result === 'hit')?.value).toBe(6);
    miss.inc();
    metrics.releaseBatched(counter, miss);
    expect((await counter.get()).values.find((v) => v.labels.result === 'miss')?.value).toBe(3);
    counter.remove({ result: 'miss', route: 'a' });
    miss.inc();
    text = await metrics.registry.metrics();
    expect(text).not.toContain('result="miss"');
    expect(text).toMatch(/^t_total\{result="hit",route="a"\} 6$/m);
  });
});
