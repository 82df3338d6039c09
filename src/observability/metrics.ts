import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { PORTCULLIS_VERSION } from '../version.js';
import { FastHistogram } from './histogram.js';

/** A counter child counted in a plain number until the counter is read (Metrics#batchedChild). */
export class BatchedCount {
  pending = 0;
  constructor(
    readonly key: string,
    readonly labels: Readonly<Record<string, string>>,
  ) {}

  inc(by = 1): void {
    this.pending += by;
  }
}

/**
 * The metrics registry of one Portcullis process. Modules ask for their metrics by name; asking
 * twice returns the same instrument, so a module may do it on every policy compile.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly instruments = new Map<string, Counter | Gauge | Histogram>();
  private readonly batched = new Map<Counter, Map<string, BatchedCount>>();

  /** `route` is set only when the policy says server.routeMetrics: true. */
  readonly checks: Counter<'decision' | 'reason' | 'credential' | 'route'>;
  /** Observed on every check: a FastHistogram (histogram.ts), same exposition as prom-client's. */
  readonly checkDuration: FastHistogram<'decision'>;
  readonly checksInFlight: Gauge;
  readonly policyReloads: Counter<'result'>;
  readonly policyGeneration: Gauge;
  readonly tenantChecks: Counter<'decision' | 'tenant'>;
  readonly ready: Gauge;
  /** Read at scrape time by portcullis_checks_in_flight; the pipeline wrapper registers it. */
  private inFlightSource: () => number = () => 0;
  /** Read at scrape time by portcullis_log_lines_dropped_total (the log destination's count). */
  private logDropSource: () => number = () => 0;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    // Standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes, …), no prefix: the
    // usual Node.js dashboards and alerts find them.
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    this.checks = this.counter('portcullis_checks_total', 'Authorization checks by decision, reason, credential kind (and route with server.routeMetrics).', ['decision', 'reason', 'credential', 'route']);
    this.checkDuration = new FastHistogram('portcullis_check_duration_seconds', 'Time to decide one check (route match to decision, including waits on JWKS, key store and Redis).', ['decision'], [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25], this.registry);
    this.policyReloads = this.counter('portcullis_policy_reloads_total', 'Policy loads by result (success, failure).', ['result']);
    this.policyGeneration = this.gauge('portcullis_policy_generation', 'Number of the policy currently in force (1 = loaded at start).', []);
    this.tenantChecks = this.counter('portcullis_tenant_checks_total', 'Checks by tenant (only when server.tenantMetrics is on: listed tenants, then the first 1000 others, the rest as "(other)").', ['decision', 'tenant']);
    const inFlight = () => this.inFlightSource();
    this.checksInFlight = this.instrument(
      'portcullis_checks_in_flight',
      () =>
        new Gauge({
          name: 'portcullis_checks_in_flight',
          help: 'Checks being decided now (waiting on JWKS, key store, Redis, …).',
          registers: [this.registry],
          collect() {
            this.set(inFlight());
          },
        }),
    ) as Gauge;
    const logDrops = () => this.logDropSource();
    let dropsSeen = 0;
    this.instrument(
      'portcullis_log_lines_dropped_total',
      () =>
        new Counter({
          name: 'portcullis_log_lines_dropped_total',
          help: 'Log lines (decision log included) dropped because stdout did not keep up and the bounded log buffer was full.',
          registers: [this.registry],
          collect() {
            const now = logDrops();
            if (now > dropsSeen) this.inc(now - dropsSeen);
            dropsSeen = now;
          },
        }),
    );
    this.ready = this.gauge('portcullis_ready', '1 when serving checks (policy loaded, dependencies ready, not draining).', []);
    const info = this.gauge('portcullis_build_info', 'Build information; the value is always 1.', ['version', 'node']);
    info.set({ version: PORTCULLIS_VERSION, node: process.version }, 1);
  }

  /** Where portcullis_checks_in_flight reads its value (one counter kept by the pipeline wrapper). */
  observeInFlight(source: () => number): void {
    this.inFlightSource = source;
  }

  /** Where portcullis_log_lines_dropped_total reads the count of dropped log lines. */
  observeLogDrops(source: () => number): void {
    this.logDropSource = source;
  }

  counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    const flush = (counter: Counter) => this.flushBatched(counter);
    return this.instrument(
      name,
      () =>
        new Counter({
          name,
          help,
          labelNames,
          registers: [this.registry],
          collect() {
            flush(this);
          },
        }),
    ) as Counter<L>;
  }

  /**
   * A child of `counter` (made by counter()) for code that counts on every check: inc() only adds
   * to a number, and the sum is handed to prom-client when the counter is read (/metrics, the
   * cluster aggregation). prom-client's own child validates and hashes its labels on every inc.
   */
  batchedChild<L extends string>(counter: Counter<L>, labels: Partial<Record<L, string>>): BatchedCount {
    // One child per series: asking again (a policy reload) returns it, so the set stays bounded.
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));
    let children = this.batched.get(counter as Counter);
    if (!children) this.batched.set(counter as Counter, (children = new Map()));
    let child = children.get(key);
    if (!child) children.set(key, (child = new BatchedCount(key, Object.freeze({ ...labels }) as Record<string, string>)));
    return child;
  }

  /** Stop following a batched child (its series is being removed): what it counted so far is kept. */
  releaseBatched(counter: Counter<string>, child: BatchedCount): void {
    this.flushBatched(counter as Counter);
    this.batched.get(counter as Counter)?.delete(child.key);
  }

  private flushBatched(counter: Counter): void {
    const children = this.batched.get(counter);
    if (!children) return;
    for (const child of children.values()) {
      if (child.pending === 0) continue;
      counter.inc(child.labels, child.pending);
      child.pending = 0;
    }
  }

  gauge<L extends string>(name: string, help: string, labelNames: readonly L[]): Gauge<L> {
    return this.instrument(name, () => new Gauge({ name, help, labelNames, registers: [this.registry] })) as Gauge<L>;
  }

  histogram<L extends string>(name: string, help: string, labelNames: readonly L[], buckets?: number[]): Histogram<L> {
    return this.instrument(name, () => new Histogram({ name, help, labelNames, buckets, registers: [this.registry] })) as Histogram<L>;
  }

  private instrument(name: string, create: () => Counter | Gauge | Histogram): Counter | Gauge | Histogram {
    let existing = this.instruments.get(name);
    if (!existing) {
      existing = create();
      this.instruments.set(name, existing);
    }
    return existing;
  }
}
