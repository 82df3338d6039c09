// The Redis backend: checks asked in the same event-loop turn are coalesced into one EVALSHA of
// the batch script per Cluster slot (ioredis sends EVAL on a connection's first use and after
// NOSCRIPT), with one deadline and one circuit-breaker verdict per batch. The client lives in the
// runtime's resource pool, so counters' connection and breaker state survive policy reloads.

import { createRequire } from 'node:module';
import type { Cluster as ClusterClient, Redis as RedisClient, RedisOptions } from 'ioredis';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { BREAKER_STATE_VALUE, CircuitBreaker } from './circuit-breaker.js';
import type { RedisBackendConfig } from './config.js';
import { clusterSlot } from './cluster-slot.js';
import { CHECK_SCRIPT, OFFENCE_SCRIPT } from './redis-script.js';
import { LOCKED, type LimitCheck, type LimitOutcome, type LimitStatus, type LimitStore, type OffenceCount } from './types.js';

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

/** Bounds of one script call, so a batch never keeps Redis busy for long. */
export const MAX_BATCH_REQUESTS = 128;
export const MAX_BATCH_LIMITS = 256;

/** A queued or in-flight check. */
interface Pending {
  readonly checks: readonly LimitCheck[];
  /** The local clock when the check was asked (time: local). */
  readonly now: number;
  readonly outcomes: LimitOutcome[];
  /** Script calls (one per Cluster slot its limits span) still to answer. */
  partsLeft: number;
  settled: boolean;
  readonly resolve: (outcomes: readonly LimitOutcome[]) => void;
  readonly reject: (err: Error) => void;
}

/** A check's limits that go into one script call: all of them (indexes undefined) or one slot's. */
interface Part {
  readonly request: Pending;
  readonly indexes: readonly number[] | undefined;
}

/** One flush: its script calls, deadline and single circuit-breaker verdict. */
interface Flight {
  readonly requests: readonly Pending[];
  callsLeft: number;
  readonly started: number;
  timer: NodeJS.Timeout | undefined;
  finished: boolean;
  failed: boolean;
}

type ScriptClient = (RedisClient | ClusterClient) & {
  portcullisCheck(numKeys: number, ...args: (string | number)[]): Promise<number[]>;
  portcullisOffence(key: string, now: string, withinMs: number): Promise<[number, string, string]>;
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
  /** Checks waiting for the next flush. */
  private queue: Pending[] = [];

  constructor(private readonly options: RedisStoreOptions) {
    const { config, clock, metrics } = options;
    this.clock = clock;
    this.timeoutMs = config.timeout;
    this.serverTime = config.time === 'server';
    this.latency = metrics.histogram('portcullis_ratelimit_backend_seconds', 'Round trip of one batch of rate-limit checks to Redis (all its script calls).', [], [
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
    this.client.defineCommand('portcullisOffence', { lua: OFFENCE_SCRIPT, numberOfKeys: 1 });
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

  /**
   * Queues the check; every check queued in the same event-loop turn goes to Redis together (see
   * flush). Throws at once, without queueing, while the circuit breaker is open.
   */
  check(checks: readonly LimitCheck[]): Promise<readonly LimitOutcome[]> {
    if (!this.breaker.tryAcquire()) {
      this.errors.inc({ kind: 'circuit_open' });
      throw new BackendUnavailableError('circuit_open', 'rate-limit backend circuit breaker is open', this.breaker.retryAfterMs());
    }
    return new Promise<readonly LimitOutcome[]>((resolve, reject) => {
      const now = this.serverTime ? 0 : this.clock.now();
      this.queue.push({ checks, now, outcomes: new Array<LimitOutcome>(checks.length), partsLeft: 0, settled: false, resolve, reject });
      // setImmediate, not a microtask: it runs after every I/O callback of this loop iteration (and
      // the promise chains they started), so all requests that arrived together share one batch.
      if (this.queue.length === 1) setImmediate(this.flush);
    });
  }

  /**
   * The one place queued checks go to Redis. Everything queued since the last flush becomes one
   * flight: the checks are grouped by Cluster slot (a standalone server is one group; on a
   * Cluster a check whose limits span slots is split into one part per slot, as before batching)
   * and each group is cut into calls of at most MAX_BATCH_REQUESTS parts / MAX_BATCH_LIMITS limits,
   * each one EVALSHA of the batch script, all sent at once. A check resolves when all its parts
   * are answered; it fails when any of them fails or when the flight's deadline (`timeout`, from
   * the flush) passes first. The flight counts once towards the circuit breaker: success when
   * every call answered in time, one failure otherwise.
   */
  private readonly flush = (): void => {
    const requests = this.queue;
    this.queue = [];
    const calls = this.plan(requests);
    const flight: Flight = { requests, callsLeft: calls.length, started: performance.now(), timer: undefined, finished: false, failed: false };
    flight.timer = setTimeout(() => {
      flight.timer = undefined;
      this.failFlight(flight, 'timeout', new Error(`no answer within ${this.timeoutMs}ms`), requests);
      this.finishFlight(flight);
    }, this.timeoutMs);
    for (const parts of calls) {
      this.runScript(parts).then(
        (reply) => {
          if (!flight.finished) this.deliver(flight, parts, reply);
          this.callDone(flight);
        },
        (err: unknown) => {
          if (!flight.finished) this.failFlight(flight, 'error', err, parts.map((p) => p.request));
          this.callDone(flight);
        },
      );
    }
  };

  /** The script calls of one flush: parts grouped by slot, each group cut to the batch bounds. */
  private plan(requests: readonly Pending[]): Part[][] {
    let groups: Iterable<Part[]>;
    if (!this.isCluster) {
      groups = [requests.map((request) => ((request.partsLeft = 1), { request, indexes: undefined }))];
    } else {
      const bySlot = new Map<number, Part[]>();
      const add = (slot: number, part: Part) => {
        const group = bySlot.get(slot);
        if (group) group.push(part);
        else bySlot.set(slot, [part]);
      };
      for (const request of requests) {
        const slots = request.checks.map((check) => clusterSlot(check.key));
        const distinct = [...new Set(slots)];
        request.partsLeft = distinct.length;
        if (distinct.length === 1) add(distinct[0]!, { request, indexes: undefined });
        else for (const slot of distinct) add(slot, { request, indexes: slots.flatMap((s, i) => (s === slot ? [i] : [])) });
      }
      groups = bySlot.values();
    }
    const calls: Part[][] = [];
    for (const group of groups) {
      let call: Part[] = [];
      let limits = 0;
      for (const part of group) {
        const size = part.indexes?.length ?? part.request.checks.length;
        if (call.length > 0 && (call.length >= MAX_BATCH_REQUESTS || limits + size > MAX_BATCH_LIMITS)) {
          calls.push(call);
          call = [];
          limits = 0;
        }
        call.push(part);
        limits += size;
      }
      if (call.length > 0) calls.push(call);
    }
    return calls;
  }

  /** One EVALSHA of the batch script for these parts (all in one slot); resolves to the raw reply. */
  private async runScript(parts: readonly Part[]): Promise<unknown> {
    const keys: string[] = [];
    const args: (string | number)[] = [this.serverTime ? '' : 'L', parts.length];
    for (const { request, indexes } of parts) {
      const count = indexes?.length ?? request.checks.length;
      args.push(this.serverTime ? '' : request.now, count);
      for (let n = 0; n < count; n++) {
        const check = request.checks[indexes === undefined ? n : indexes[n]!]!;
        keys.push(check.key + ':s', check.key + ':q', check.key + ':v', check.key + ':l');
        const shape = check.shape;
        const bucket = shape.algorithm === 'bucket';
        args.push(
          bucket ? 'b' : 'w',
          check.enforce ? '1' : '0',
          check.cost,
          bucket ? shape.intervalMs : shape.limit,
          bucket ? shape.toleranceMs : shape.windowMs,
          check.lockout?.after ?? 0,
          check.lockout?.withinMs ?? 0,
          check.lockout?.forMs ?? 0,
        );
      }
    }
    return this.client.portcullisCheck(keys.length, ...keys, ...args);
  }

  /** Hands each part its outcomes; a request whose every part is in resolves. */
  private deliver(flight: Flight, parts: readonly Part[], reply: unknown): void {
    let limits = 0;
    for (const part of parts) limits += part.indexes?.length ?? part.request.checks.length;
    if (!Array.isArray(reply) || reply.length !== limits * 4) {
      this.failFlight(flight, 'error', new Error('unexpected reply from the rate-limit script'), parts.map((p) => p.request));
      return;
    }
    let r = 0;
    for (const { request, indexes } of parts) {
      const count = indexes?.length ?? request.checks.length;
      for (let n = 0; n < count; n++, r += 4) {
        const status = Number(reply[r]);
        request.outcomes[indexes === undefined ? n : indexes[n]!] = {
          // 3: locked by this request (the script's lock transition), reported once.
          status: (status === 3 ? LOCKED : status) as LimitStatus,
          remaining: Number(reply[r + 1]),
          resetMs: Number(reply[r + 2]),
          retryMs: Number(reply[r + 3]),
          ...(status === 3 ? { lockedNow: true } : {}),
        };
      }
      if (--request.partsLeft === 0 && !request.settled) {
        request.settled = true;
        request.resolve(request.outcomes);
      }
    }
  }

  private callDone(flight: Flight): void {
    if (--flight.callsLeft === 0) this.finishFlight(flight);
  }

  /** Ends a flight once (all calls answered, or the deadline passed): its one breaker verdict. */
  private finishFlight(flight: Flight): void {
    if (flight.finished) return;
    flight.finished = true;
    if (flight.timer !== undefined) clearTimeout(flight.timer);
    if (flight.failed) return;
    this.latency.observe((performance.now() - flight.started) / 1000);
    this.breaker.success();
  }

  /**
   * Fails these requests (those not settled yet). The flight's first failure counts once towards
   * the breaker and is logged (one line per 10 s at most: a dead Redis must not flood the log).
   */
  private failFlight(flight: Flight, kind: BackendFailureKind, cause: unknown, requests: readonly Pending[]): void {
    const message = cause instanceof Error ? cause.message : String(cause);
    if (!flight.failed) {
      flight.failed = true;
      this.breaker.failure();
      const now = this.clock.now();
      if (now - this.lastErrorLog >= 10_000) {
        this.options.logger.warn({ kind, err: message, checks: flight.requests.length, suppressed: this.suppressedErrors }, 'rate-limit backend check failed');
        this.lastErrorLog = now;
        this.suppressedErrors = 0;
      } else {
        this.suppressedErrors++;
      }
    }
    const error = new BackendUnavailableError(kind, `rate-limit backend ${kind}: ${message}`, this.breaker.retryAfterMs(), { cause });
    let failed = 0;
    for (const request of requests) {
      if (request.settled) continue;
      request.settled = true;
      failed++;
      request.reject(error);
    }
    if (failed > 0) this.errors.inc({ kind }, failed);
  }

  /** One Lua call (atomic across instances); rare (once per lockout), so no batching or breaker. */
  async recordOffence(key: string, withinMs: number): Promise<OffenceCount> {
    const reply = await this.bounded(this.client.portcullisOffence(key + ':o', this.serverTime ? '' : String(this.clock.now()), withinMs));
    return { count: Number(reply[0]), firstMs: Number(reply[1]), lastMs: Number(reply[2]) };
  }

  async clearOffences(key: string): Promise<void> {
    await this.bounded(this.client.del(key + ':o'));
  }

  /** A command with the store's deadline (at least 1s: off the request path, not worth failing fast). */
  private bounded<T>(command: Promise<T>): Promise<T> {
    const ms = Math.max(1000, this.timeoutMs);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new BackendUnavailableError('timeout', `rate-limit backend timeout after ${ms}ms`, ms)), ms);
    });
    return Promise.race([command, deadline])
      .catch((err: unknown) => {
        if (err instanceof BackendUnavailableError) throw err;
        throw new BackendUnavailableError('error', `rate-limit backend error: ${(err as Error).message}`, 1000, { cause: err });
      })
      .finally(() => clearTimeout(timer));
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }
}

/**
 * ioredis is loaded when a policy first uses Redis, not at start: it costs ~8 MB of memory that a
 * deployment with the memory backend (the quickstart, most single-replica setups) never uses.
 */
let ioredis: typeof import('ioredis') | undefined;
function loadIoredis(): typeof import('ioredis') {
  return (ioredis ??= createRequire(import.meta.url)('ioredis') as typeof import('ioredis'));
}

function createClient(config: RedisBackendConfig): ScriptClient {
  const { Redis, Cluster } = loadIoredis();
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
