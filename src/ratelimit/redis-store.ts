// The Redis backend: checks asked in the same event-loop turn are coalesced into one EVALSHA of
// the batch script per Cluster slot (ioredis sends EVAL on a connection's first use and after
// NOSCRIPT), with one deadline and one circuit-breaker verdict per batch and node. Each Redis
// node (the standalone or Sentinel master, each Cluster master) has its own circuit breaker: one
// Cluster master down fails only the counters it holds, the others keep their exact answers. The
// client lives in the runtime's resource pool, so connections and breaker state survive reloads.

import { createRequire } from 'node:module';
import type { Cluster as ClusterClient, Redis as RedisClient, RedisOptions } from 'ioredis';
import type { Clock } from '../clock.js';
import { ioDeadline, type Deadline } from '../deadline.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { BREAKER_STATE_VALUE, CircuitBreaker, type BreakerState } from './circuit-breaker.js';
import type { RedisBackendConfig } from './config.js';
import { clusterSlot } from './cluster-slot.js';
import { CHECK_SCRIPT, OFFENCE_SCRIPT } from './redis-script.js';
import { LOCKED, UNAVAILABLE, type LimitCheck, type LimitOutcome, type LimitShape, type LimitStatus, type LimitStore, type OffenceCount } from './types.js';

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
/** Breakers kept at most (a Cluster has far fewer masters; beyond this, nodes share one). */
const MAX_NODES = 1024;

/** A queued or in-flight check. */
interface Pending {
  readonly checks: readonly LimitCheck[];
  /** The local clock when the check was asked (time: local). */
  readonly now: number;
  /** Cluster: each limit's slot, -1 for a limit whose node's breaker refused it at check time. */
  readonly slots: readonly number[] | undefined;
  readonly outcomes: LimitOutcome[];
  /** Script calls (one per Cluster slot its limits span) still to answer. */
  partsLeft: number;
  /** Limits whose node could not answer, and the last such failure. */
  failedLimits: number;
  failure: BackendUnavailableError | undefined;
  settled: boolean;
  readonly resolve: (outcomes: readonly LimitOutcome[]) => void;
  readonly reject: (err: Error) => void;
}

/** A check's limits that go into one script call: all of them (indexes undefined) or one slot's. */
interface Part {
  readonly request: Pending;
  readonly indexes: readonly number[] | undefined;
  done: boolean;
}

/** One Redis node: its circuit breaker. */
interface Node {
  readonly name: string;
  readonly breaker: CircuitBreaker;
}

/** One node's share of a flush: its script calls, deadline and single circuit-breaker verdict. */
interface Flight {
  readonly node: Node;
  readonly parts: readonly Part[];
  callsLeft: number;
  readonly started: number;
  deadline: Deadline | undefined;
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

const STANDALONE = '';

export class RedisStore implements LimitStore {
  readonly kind = 'redis' as const;
  /** Resolves once the client is connected, or after a bounded wait when it is not. */
  readonly ready: Promise<void>;
  private readonly client: ScriptClient;
  private readonly timeoutMs: number;
  private readonly serverTime: boolean;
  private readonly isCluster: boolean;
  private readonly clock: Clock;
  private readonly latency;
  private readonly errors;
  private readonly stateGauge;
  private readonly openNodesGauge;
  /** One breaker per node, by "host:port" (STANDALONE for a single server). */
  private readonly nodes = new Map<string, Node>();
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
    this.stateGauge = metrics.gauge('portcullis_ratelimit_circuit_state', 'Rate-limit backend circuit breaker, the worst of all Redis nodes: 0 closed, 1 open, 2 half-open.', []);
    this.stateGauge.set(0);
    this.openNodesGauge = metrics.gauge('portcullis_ratelimit_circuit_nodes_open', 'Redis nodes whose rate-limit circuit breaker is open or half-open (their counters follow the failure policy).', []);
    this.openNodesGauge.set(0);
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

  /** The circuit-breaker state of a node ("host:port"; "" for a standalone or Sentinel master). */
  breakerState(node = STANDALONE): BreakerState {
    return this.nodes.get(node)?.breaker.state ?? 'closed';
  }

  /**
   * Queues the check; every check queued in the same event-loop turn goes to Redis together (see
   * flush). Limits on a node whose circuit breaker is open are not sent: they come back
   * UNAVAILABLE, and when that is all of them the check throws at once, without queueing.
   */
  check(checks: readonly LimitCheck[]): Promise<readonly LimitOutcome[]> {
    let slots: number[] | undefined;
    let refused: BackendUnavailableError | undefined;
    let refusedLimits = 0;
    if (!this.isCluster) {
      const node = this.node(STANDALONE);
      if (!node.breaker.tryAcquire()) refused = this.circuitOpen(node);
      refusedLimits = refused ? checks.length : 0;
    } else {
      slots = checks.map((check) => clusterSlot(check.key));
      // Ask each node's breaker once per check (a half-open breaker lets one check through).
      const verdicts = new Map<Node, boolean>();
      for (let i = 0; i < slots.length; i++) {
        const node = this.node(this.nodeOf(slots[i]!));
        let open = verdicts.get(node);
        if (open === undefined) verdicts.set(node, (open = !node.breaker.tryAcquire()));
        if (open) {
          refused = this.circuitOpen(node);
          slots[i] = -1;
          refusedLimits++;
        }
      }
    }
    if (refused !== undefined && refusedLimits === checks.length) {
      this.errors.inc({ kind: 'circuit_open' });
      throw refused;
    }
    return new Promise<readonly LimitOutcome[]>((resolve, reject) => {
      const now = this.serverTime ? 0 : this.clock.now();
      const pending: Pending = { checks, now, slots, outcomes: new Array<LimitOutcome>(checks.length), partsLeft: 0, failedLimits: 0, failure: undefined, settled: false, resolve, reject };
      if (refused !== undefined) {
        this.errors.inc({ kind: 'circuit_open' });
        for (let i = 0; i < checks.length; i++) if (slots![i] === -1) markUnavailable(pending, i, refused);
      }
      this.queue.push(pending);
      // setImmediate, not a microtask: it runs after every I/O callback of this loop iteration (and
      // the promise chains they started), so all requests that arrived together share one batch.
      if (this.queue.length === 1) setImmediate(this.flush);
    });
  }

  private circuitOpen(node: Node): BackendUnavailableError {
    const where = node.name === STANDALONE ? '' : ` for ${node.name}`;
    return new BackendUnavailableError('circuit_open', `rate-limit backend circuit breaker is open${where}`, node.breaker.retryAfterMs());
  }

  /** The master serving a slot, as the Cluster client knows it ("?" before the slot map is loaded). */
  private nodeOf(slot: number): string {
    return (this.client as ClusterClient).slots[slot]?.[0] ?? '?';
  }

  private node(name: string): Node {
    let node = this.nodes.get(name);
    if (node === undefined) {
      if (this.nodes.size >= MAX_NODES) return this.node('other');
      const { failures, cooldown } = this.options.config.circuitBreaker;
      const created: Node = {
        name,
        breaker: new CircuitBreaker(this.clock, failures, cooldown, (state) => this.breakerChanged(created, state)),
      };
      this.nodes.set(name, (node = created));
    }
    return node;
  }

  private breakerChanged(node: Node, state: BreakerState): void {
    let worst: BreakerState = 'closed';
    let notClosed = 0;
    for (const { breaker } of this.nodes.values()) {
      if (breaker.state === 'closed') continue;
      notClosed++;
      if (breaker.state === 'open' || worst === 'closed') worst = breaker.state;
    }
    this.stateGauge.set(BREAKER_STATE_VALUE[worst]);
    this.openNodesGauge.set(notClosed);
    const logger = this.options.logger;
    const fields = node.name === STANDALONE ? { breaker: state } : { breaker: state, node: node.name };
    (state === 'open' ? logger.warn.bind(logger) : logger.info.bind(logger))(fields, `rate-limit backend circuit breaker ${state}`);
  }

  /**
   * The one place queued checks go to Redis. Everything queued since the last flush is grouped
   * by Cluster slot (a standalone server is one group; on a Cluster a check whose limits span
   * slots is split into one part per slot), each group cut into calls of at most
   * MAX_BATCH_REQUESTS parts / MAX_BATCH_LIMITS limits, each one EVALSHA of the batch script, all
   * sent at once. The calls to one node are one flight: one deadline (`timeout`, from the flush,
   * checked once more after the loop has read its sockets) and one verdict for that node's
   * breaker (success when every call answered in time, one failure otherwise). A check resolves
   * when all its parts are in; limits of parts that failed come back UNAVAILABLE, and a check
   * none of whose limits could be answered rejects.
   */
  private readonly flush = (): void => {
    const requests = this.queue;
    this.queue = [];
    for (const [node, calls] of this.plan(requests)) {
      const parts = calls.flat();
      const flight: Flight = { node, parts, callsLeft: calls.length, started: performance.now(), deadline: undefined, finished: false, failed: false };
      // Expires only if still unanswered after the loop has read its sockets (see ioDeadline).
      flight.deadline = ioDeadline(this.timeoutMs, () => {
        if (flight.finished) return;
        this.failParts(flight, 'timeout', new Error(`no answer within ${this.timeoutMs}ms`), flight.parts);
        this.finishFlight(flight);
      });
      for (const call of calls) {
        this.runScript(call).then(
          (reply) => {
            if (!flight.finished) this.deliver(flight, call, reply);
            this.callDone(flight);
          },
          (err: unknown) => {
            if (!flight.finished) this.failParts(flight, 'error', err, call);
            this.callDone(flight);
          },
        );
      }
    }
  };

  /** The script calls of one flush by node: parts grouped by slot, each group cut to the batch bounds. */
  private plan(requests: readonly Pending[]): Map<Node, Part[][]> {
    const byNode = new Map<Node, Part[][]>();
    if (!this.isCluster) {
      const group = requests.map((request): Part => ((request.partsLeft = 1), { request, indexes: undefined, done: false }));
      byNode.set(this.node(STANDALONE), cut(group));
      return byNode;
    }
    const bySlot = new Map<number, Part[]>();
    const add = (slot: number, part: Part) => {
      const group = bySlot.get(slot);
      if (group) group.push(part);
      else bySlot.set(slot, [part]);
    };
    for (const request of requests) {
      const slots = request.slots!;
      const distinct = [...new Set(slots)].filter((slot) => slot >= 0);
      request.partsLeft = distinct.length;
      if (distinct.length === 1 && request.failedLimits === 0) add(distinct[0]!, { request, indexes: undefined, done: false });
      else for (const slot of distinct) add(slot, { request, indexes: slots.flatMap((s, i) => (s === slot ? [i] : [])), done: false });
    }
    for (const [slot, group] of bySlot) {
      const node = this.node(this.nodeOf(slot));
      const calls = byNode.get(node);
      if (calls) calls.push(...cut(group));
      else byNode.set(node, cut(group));
    }
    return byNode;
  }

  /**
   * One EVALSHA of the batch script for these parts (all in one slot); resolves to the raw reply.
   * Each counter's keys and each limit's numbers are sent once per call (redis-script.ts).
   */
  private async runScript(parts: readonly Part[]): Promise<unknown> {
    const keys: string[] = [];
    const counters = new Map<string, number>();
    const specs = new SpecTable();
    const requests: (string | number)[] = [parts.length];
    for (const { request, indexes } of parts) {
      const count = indexes?.length ?? request.checks.length;
      requests.push(this.serverTime ? '' : request.now, count);
      for (let n = 0; n < count; n++) {
        const check = request.checks[indexes === undefined ? n : indexes[n]!]!;
        let counter = counters.get(check.key);
        if (counter === undefined) {
          counters.set(check.key, (counter = counters.size + 1));
          keys.push(check.key + ':s', check.key + ':q', check.key + ':v', check.key + ':l');
        }
        requests.push(counter, specs.of(check));
      }
    }
    return this.client.portcullisCheck(keys.length, ...keys, this.serverTime ? '' : 'L', specs.count, ...specs.args, ...requests);
  }

  /** Hands each part its outcomes; a request whose every part is in settles. */
  private deliver(flight: Flight, parts: readonly Part[], reply: unknown): void {
    let limits = 0;
    for (const part of parts) limits += part.indexes?.length ?? part.request.checks.length;
    if (!Array.isArray(reply) || reply.length !== limits * 4) {
      this.failParts(flight, 'error', new Error('unexpected reply from the rate-limit script'), parts);
      return;
    }
    let r = 0;
    for (const part of parts) {
      const { request, indexes } = part;
      const count = indexes?.length ?? request.checks.length;
      if (part.done) {
        r += count * 4;
        continue;
      }
      for (let n = 0; n < count; n++, r += 4) {
        const status = Number(reply[r]);
        request.outcomes[indexes === undefined ? n : indexes[n]!] = {
          // 4: locked by this request (the script's lock transition), reported once.
          status: (status === 4 ? LOCKED : status) as LimitStatus,
          remaining: Number(reply[r + 1]),
          resetMs: Number(reply[r + 2]),
          retryMs: Number(reply[r + 3]),
          ...(status === 4 ? { lockedNow: true } : {}),
        };
      }
      part.done = true;
      partDone(request);
    }
  }

  private callDone(flight: Flight): void {
    if (--flight.callsLeft === 0) this.finishFlight(flight);
  }

  /** Ends a flight once (all calls answered, or the deadline passed): its node's one breaker verdict. */
  private finishFlight(flight: Flight): void {
    if (flight.finished) return;
    flight.finished = true;
    flight.deadline?.cancel();
    if (flight.failed) return;
    this.latency.observe((performance.now() - flight.started) / 1000);
    flight.node.breaker.success();
  }

  /**
   * Marks these parts' limits UNAVAILABLE (parts not answered yet). The flight's first failure
   * counts once towards its node's breaker and is logged (one line per 10 s at most: a dead Redis
   * must not flood the log).
   */
  private failParts(flight: Flight, kind: BackendFailureKind, cause: unknown, parts: readonly Part[]): void {
    const message = cause instanceof Error ? cause.message : String(cause);
    const breaker = flight.node.breaker;
    if (!flight.failed) {
      flight.failed = true;
      breaker.failure();
      const now = this.clock.now();
      if (now - this.lastErrorLog >= 10_000) {
        const node = flight.node.name === STANDALONE ? undefined : flight.node.name;
        this.options.logger.warn({ kind, err: message, node, checks: flight.parts.length, suppressed: this.suppressedErrors }, 'rate-limit backend check failed');
        this.lastErrorLog = now;
        this.suppressedErrors = 0;
      } else {
        this.suppressedErrors++;
      }
    }
    const where = flight.node.name === STANDALONE ? '' : ` (${flight.node.name})`;
    const error = new BackendUnavailableError(kind, `rate-limit backend ${kind}${where}: ${message}`, breaker.retryAfterMs(), { cause });
    let failed = 0;
    for (const part of parts) {
      if (part.done) continue;
      part.done = true;
      failed++;
      const { request, indexes } = part;
      const count = indexes?.length ?? request.checks.length;
      for (let n = 0; n < count; n++) markUnavailable(request, indexes === undefined ? n : indexes[n]!, error);
      partDone(request);
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
    let timer: Deadline | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = ioDeadline(ms, () => reject(new BackendUnavailableError('timeout', `rate-limit backend timeout after ${ms}ms`, ms)));
    });
    return Promise.race([command, deadline])
      .catch((err: unknown) => {
        if (err instanceof BackendUnavailableError) throw err;
        throw new BackendUnavailableError('error', `rate-limit backend error: ${(err as Error).message}`, 1000, { cause: err });
      })
      .finally(() => timer?.cancel());
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }
}

/**
 * The distinct limit specs of one script call (algorithm and numbers, enforce, cost, lockout), as
 * the script's 8 arguments each. Checks of one policy share its shape and lockout objects, so a
 * spec is found by identity, among the few specs of that shape.
 */
class SpecTable {
  readonly args: (string | number)[] = [];
  count = 0;
  private readonly byShape = new Map<LimitShape, { readonly check: LimitCheck; readonly index: number }[]>();

  /** The 1-based index of `check`'s spec, added when new. */
  of(check: LimitCheck): number {
    let known = this.byShape.get(check.shape);
    if (known === undefined) this.byShape.set(check.shape, (known = []));
    for (const { check: other, index } of known) {
      if (other.enforce === check.enforce && other.cost === check.cost && other.lockout === check.lockout) return index;
    }
    const index = ++this.count;
    known.push({ check, index });
    const { shape, lockout } = check;
    const bucket = shape.algorithm === 'bucket';
    this.args.push(
      bucket ? 'b' : 'w',
      check.enforce ? '1' : '0',
      check.cost,
      bucket ? shape.intervalMs : shape.limit,
      bucket ? shape.toleranceMs : shape.windowMs,
      lockout?.after ?? 0,
      lockout?.withinMs ?? 0,
      lockout?.forMs ?? 0,
    );
    return index;
  }
}

/** A group of parts cut into script calls of at most MAX_BATCH_REQUESTS parts / MAX_BATCH_LIMITS limits. */
function cut(group: readonly Part[]): Part[][] {
  const calls: Part[][] = [];
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
  return calls;
}

function markUnavailable(request: Pending, index: number, error: BackendUnavailableError): void {
  request.outcomes[index] = { status: UNAVAILABLE, remaining: 0, resetMs: 0, retryMs: error.retryAfterMs, detail: error.message };
  request.failedLimits++;
  request.failure = error;
}

/** One part of a request is in (answered or failed): settle the request when it was the last. */
function partDone(request: Pending): void {
  if (--request.partsLeft > 0 || request.settled) return;
  request.settled = true;
  if (request.failedLimits === request.checks.length) request.reject(request.failure!);
  else request.resolve(request.outcomes);
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
    // Only a backstop so a lost command leaves ioredis's queue: the check's deadline is the flight
    // timer. Short, it would reject a reply that arrived during an event-loop stall before the
    // loop could read it.
    commandTimeout: Math.max(config.timeout * 4, 2000),
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
