import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { ThrottledLog } from '../../src/observability/throttled-log.js';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: createLogger({ level: 'info', destination }) };
}

describe('ThrottledLog', () => {
  it('writes one line per interval whatever the rate, counts every occurrence, and reports the suppressed count', async () => {
    const { lines, logger } = capture();
    const clock = new ManualClock();
    const metrics = new Metrics({ defaultMetrics: false });
    const counter = metrics.counter('portcullis_test_events_total', 'test', []);
    const log = new ThrottledLog({ logger, clock, level: 'info', message: 'event happened', intervalMs: 1000, counter });
    expect(log.note({ detail: 'first' })).toBe(true);
    for (let i = 0; i < 10_000; i++) log.note({ detail: 'flood' });
    expect(log.pending).toBe(10_000);
    clock.advance(999);
    expect(log.note()).toBe(false);
    clock.advance(1);
    let built = 0;
    expect(log.note(() => (built++, { detail: 'later' }))).toBe(true);
    expect(log.note(() => (built++, { detail: 'not built' }))).toBe(false);
    expect(built).toBe(1);
    await new Promise((r) => setImmediate(r));
    expect(lines.map((l) => [l.msg, l.detail, l.suppressed, l.level])).toEqual([
      ['event happened', 'first', 0, 'info'],
      ['event happened', 'later', 10_001, 'info'],
    ]);
    expect((await counter.get()).values[0]!.value).toBe(10_004);
  });
});
