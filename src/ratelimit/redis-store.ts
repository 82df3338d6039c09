// The Redis backend: one EVALSHA per check (ioredis sends EVAL on a connection's first use and
// after NOSCRIPT), a per-check deadline, and a circuit breaker. The client lives in the runtime's
// resource pool, so counters' connection and breaker state survive policy reloads.

import { Redis, Cluster, type RedisOptions } from 'ioredis';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { BREAKER_STATE_VALUE, CircuitBreaker } from './circuit-breaker.js';
import type { RedisBackendConfig } from './config.js';
import { clusterSlot } from './cluster-slot.js';
import { CHECK_SCRIPT } from './redis-script.js';
import type { LimitCheck, LimitOutcome, LimitStatus, LimitStore } from './types.js';

/** Why a check could not be answered by the backend. */
export type BackendFailureKind = 'timeout' | 'error' | 'circuit_open';

export class BackendUnavailableError extends Error {
  constructor(
    readonly kind: BackendFailureKind,
    message: string,
    readonly retryAfterMs: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BackendUnavailableError';
  }
}

type ScriptClient = (Redis | Cluster) & {
  portcullisCheck(numKeys: number, ...args: (string | number)[]): Promise<number[]>;
};

export interface RedisStoreOptions {
  readonly config: RedisBackendConfig;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export class RedisStore implements LimitStore {
  readonly kind = 'redis' as const;
  readonly breaker: CircuitBreaker;
  /** Resolves once the client is connected, or after a bounded wait when it is not. */
  readonly ready: Promise<void>;
  private readonly client: ScriptClient;
  private readonly timeoutMs: number;
  private readonly serverTime: boolean;
  private readonly isCluster: boolean;
  private readonly clock: Clock;
  private readonly latency;
  private readonly errors;
  private lastErrorLog = 0;
  private suppressedErrors = 0;

  constructor(private readonly options: RedisStoreOptions) {
    const { config, clock, metrics } = options;
    this.clock = clock;
    this.timeoutMs = config.timeout;
    this.serverTime = config.time === 'server';
    this.latency = metrics.histogram('portcullis_ratelimit_backend_seconds', 'Round trip of one rate-limit check to Redis.', [], [
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    ]);
    this.errors = metrics.counter('portcullis_ratelimit_backend_errors_total', 'Rate-limit checks the backend could not answer, by kind (timeout, error, circuit_open).', ['kind']);
    const gauge = metrics.gauge('portcullis_ratelimit_circuit_state', 'Rate-limit backend circuit breaker: 0 closed, 1 open, 2 half-open.', []);
    gauge.set(0);
    this.breaker = new CircuitBreaker(clock, config.circuitBreaker.failures, config.circuitBreaker.cooldown, (state) => {
      gauge.set(BREAKER_STATE_VALUE[state]);
      const log = state === 'open' ? options.logger.warn.bind(options.logger) : options.logger.info.bind(options.logger);
      log({ breaker: state }, `rate-limit backend circuit breaker ${state}`);
    });
    this.client = createClient(config);
    this.isCluster = config.cluster !== undefined;
    this.client.defineCommand('portcullisCheck', { lua: CHECK_SCRIPT });
    // ioredis reconnects on its own; errors are reported per check, not as unhandled events.
    this.client.on('error', () => {});
    this.ready = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2000);
      timer.unref();
      this.client.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  check(checks: readonly LimitCheck[]): Promise<readonly LimitOutcome[]> {
    if (!this.breaker.tryAcquire()) {
      this.errors.inc({ kind: 'circuit_open' });
      throw new BackendUnavailableError('circuit_open', 'rate-limit backend circuit breaker is open', this.breaker.retryAfterMs());
    }
    const started = performance.now();
    return new Promise<readonly LimitOutcome[]>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        this.fail('timeout', new Error(`no answer within ${this.timeoutMs}ms`), reject);
      }, this.timeoutMs);
      this.run(checks).then(
        (outcomes) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this.latency.observe((performance.now() - started) / 1000);
          this.breaker.success();
          resolve(outcomes);
        },
        (err: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this.fail('error', err, reject);
        },
      );
    });
  }

  /**
   * One script for all limits; on a Cluster one script per hash slot, sent together (the same
   * single round trip, but each slot's limits are atomic only among themselves).
   */
  private async run(checks: readonly LimitCheck[]): Promise<readonly LimitOutcome[]> {
    if (!this.isCluster || checks.length === 1) return this.runScript(checks);
    const groups = new Map<number, number[]>();
    checks.forEach((check, i) => {
      const slot = clusterSlot(check.key);
      const group = groups.get(slot);
      if (group) group.push(i);
      else groups.set(slot, [i]);
    });
    if (groups.size === 1) return this.runScript(checks);
    const outcomes: LimitOutcome[] = new Array(checks.length);
    await Promise.all(
      [...groups.values()].map(async (indexes) => {
        const partial = await this.runScript(indexes.map((i) => checks[i]!));
        indexes.forEach((checkIndex, n) => (outcomes[checkIndex] = partial[n]!));
      }),
    );
    return outcomes;
  }

  private async runScript(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    const keys: string[] = new Array(checks.length * 4);
    const args: (string | number)[] = new Array(2 + checks.length * 8);
    args[0] = this.serverTime ? '' : this.clock.now();
    args[1] = checks.length;
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i]!;
      const k = i * 4;
      keys[k] = check.key + ':s';
      keys[k + 1] = check.key + ':q';
      keys[k + 2] = check.key + ':v';
      keys[k + 3] = check.key + ':l';
      const a = 2 + i * 8;
      const shape = check.shape;
      args[a] = shape.algorithm === 'bucket' ? 'b' : 'w';
      args[a + 1] = check.enforce ? '1' : '0';
      args[a + 2] = check.cost;
      args[a + 3] = shape.algorithm === 'bucket' ? shape.intervalMs : shape.limit;
      args[a + 4] = shape.algorithm === 'bucket' ? shape.toleranceMs : shape.windowMs;
      args[a + 5] = check.lockout?.after ?? 0;
      args[a + 6] = check.lockout?.withinMs ?? 0;
      args[a + 7] = check.lockout?.forMs ?? 0;
    }
    return parseReply(await this.client.portcullisCheck(keys.length, ...keys, ...args), checks.length);
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }

  private fail(kind: BackendFailureKind, cause: unknown, reject: (err: Error) => void): void {
    this.errors.inc({ kind });
    this.breaker.failure();
    const message = cause instanceof Error ? cause.message : String(cause);
    // One line per 10 s at most: a dead Redis must not flood the log.
    const now = this.clock.now();
    if (now - this.lastErrorLog >= 10_000) {
      this.options.logger.warn({ kind, err: message, suppressed: this.suppressedErrors }, 'rate-limit backend check failed');
      this.lastErrorLog = now;
      this.suppressedErrors = 0;
    } else {
      this.suppressedErrors++;
    }
    reject(new BackendUnavailableError(kind, `rate-limit backend ${kind}: ${message}`, this.breaker.retryAfterMs(), { cause }));
  }
}

function parseReply(reply: unknown, count: number): LimitOutcome[] {
  if (!Array.isArray(reply) || reply.length !== count * 4) {
    throw new BackendUnavailableError('error', 'unexpected reply from the rate-limit script', 0);
  }
  const outcomes: LimitOutcome[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const r = i * 4;
    outcomes[i] = {
      status: Number(reply[r]) as LimitStatus,
      remaining: Number(reply[r + 1]),
      resetMs: Number(reply[r + 2]),
      retryMs: Number(reply[r + 3]),
    };
  }
  return outcomes;
}

function createClient(config: RedisBackendConfig): ScriptClient {
  // Fail fast rather than queue: a check waits for Redis at most `timeout`, never for a reconnect.
  const common: RedisOptions = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: config.timeout * 4,
    connectTimeout: 2000,
    enableAutoPipelining: false,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
  };
  if (config.url !== undefined) {
    return new Redis(config.url, common) as ScriptClient;
  }
  if (config.sentinel !== undefined) {
    const s = config.sentinel;
    return new Redis({
      ...common,
      name: s.name,
      sentinels: s.sentinels.map(parseHostPort),
      password: s.password,
      sentinelPassword: s.sentinelPassword,
      db: s.db,
    }) as ScriptClient;
  }
  const cluster = config.cluster!;
  const urls = cluster.nodes.map((node) => new URL(node));
  const tls = urls.some((u) => u.protocol === 'rediss:') ? {} : undefined;
  const { retryStrategy: _unused, enableOfflineQueue: _queue, ...nodeOptions } = common;
  return new Cluster(
    urls.map((u) => ({ host: u.hostname, port: Number(u.port || 6379) })),
    {
      enableOfflineQueue: false,
      enableAutoPipelining: false,
      clusterRetryStrategy: (times) => Math.min(100 * times, 2000),
      slotsRefreshTimeout: 2000,
      redisOptions: {
        ...nodeOptions,
        password: cluster.password ?? (decodeURIComponent(urls[0]!.password) || undefined),
        username: cluster.username ?? (decodeURIComponent(urls[0]!.username) || undefined),
        tls,
      },
    },
  ) as ScriptClient;
}

function parseHostPort(value: string): { host: string; port: number } {
  const at = value.lastIndexOf(':');
  return { host: value.slice(0, at), port: Number(value.slice(at + 1)) };
}
