// Checks of connections told to slow down wait their turn; everyone else's are decided at once.
//
// Under a flood, each connection that has been refused (503 `overloaded`) is throttled to its fair
// share of streams (SETTINGS_MAX_CONCURRENT_STREAMS), but with many such connections each still has
// a check in flight at every turn of the event loop, and a turn that decides all of them is what a
// well-behaved client waits for: 128 flooding connections made its p99 tens of ms. So the checks
// of throttled connections go into one queue, decided in short slices with a turn of the event
// loop (I/O: other clients' requests) between slices; a connection that was never refused is
// decided as soon as its request is read. A connection is no longer throttled once the
// sweep has given its streams back (server.ts), and then waits for nobody.
//
// Memory stays bounded: a waiting message is copied out of the connection's read buffer and its
// bytes stay charged to the process' request budget; one that does not fit without pushing out
// someone else's request, or that the budget later gives up, is answered 503 `overloaded` — a
// denial, never a gRPC error, which Envoy with failure_mode_allow would let through. The queue holds
// only admitted checks (at most the in-flight bound).

import type { ServerHttp2Stream } from 'node:http2';
import type { ConnectionState, Holder, ResourceGovernor } from './limits.js';
import { unanswerable } from './protocol.js';

/**
 * What a turn of the event loop may hold, ms. A well-behaved client waits about two turns (its
 * answer's trailers leave one turn after its data: node:http2 sends them from a setImmediate), so
 * the turn's length is everyone's latency. A slice's own time is the smaller part of it: each
 * check it decides brings HTTP/2 work into the rest of the turn (its answer's frames, its
 * trailers, the client's next stream), measured at 60–70 µs per check against ~10 µs to decide
 * it. So a slice decides as many checks as fit in this budget with their follow-on work, not as
 * many as fit in a fixed time. Measured under a 128 × 1000 h2load flood on 2 cores (server on
 * one): 0.25 ms slices of decisions alone let ~29 checks into each turn (~2 ms turns), and the
 * quiet client waited p50 4.3 / p90 7.5 / p99 30 ms; with this budget ~10 checks a turn and
 * p50 1.5 / p90 3.2 / p99 20 ms (bench/overload.mjs: the Node ceiling under the same flood,
 * same run, 0.4 / 7.9 / 14 ms).
 */
const TURN_BUDGET_MS = 0.75;
/** A slice never runs longer than this, whatever the queue. */
const MAX_SLICE_MS = 2;
/** A slice decides at least depth / DRAIN_TURNS of the queue, so a deep one is not left to the age limit. */
const DRAIN_TURNS = 16;
/**
 * The follow-on work counted per decided check is at most this (ms; measured 60–70 µs on a slow
 * machine; 0.1 leaves 6 checks a turn). The busy time between slices also holds work the slice
 * did not cause (other clients' checks, GC pauses); uncapped, a loop kept busy by them would cut
 * slices to one check a turn.
 */
const MAX_FOLLOW_MS = 0.1;
/**
 * Once the oldest waiting check has waited this long, slices decide for MAX_SLICE_MS whatever the
 * estimates say: the queue must be answered well within Envoy's timeout (200–250 ms typically),
 * even when the loop is busy with work that has nothing to do with it.
 */
const MAX_WAIT_MS = 25;

type Decide = (stream: ServerHttp2Stream, message: Buffer) => void;

export interface TurnHandlers {
  /** Decide the check and answer it. */
  decide: Decide;
  /** Answer it 503 `overloaded` (a denial). */
  refuse: (stream: ServerHttp2Stream) => void;
  /** `decide` threw: end that call, never the process. */
  failed: (stream: ServerHttp2Stream, err: unknown) => void;
}

const NO_MESSAGE = Buffer.alloc(0);

/** Refused by the budget while it waited, or its client gave up (Envoy's timeout): nothing to decide. */
const gone = (item: Waiting): boolean => item.evicted || unanswerable(item.stream);

class Waiting implements Holder {
  counted = 0;
  evicted = false;
  constructor(
    /** When it was queued (the clock of TakeTurns). */
    readonly queuedAt: number,
    readonly connection: ConnectionState,
    readonly stream: ServerHttp2Stream,
    public message: Buffer,
    private readonly refuse: (stream: ServerHttp2Stream) => void,
  ) {}
  /** The budget is full and this connection over its share: refused with the overloaded denial. */
  evict(): void {
    this.evicted = true;
    this.message = NO_MESSAGE; // its bytes are no longer charged: not held either, until a slice reaches it
    this.refuse(this.stream);
    // The governor releases the bytes (makeRoom) when evict does not.
  }
}

export class TakeTurns {
  private queue: Waiting[] = [];
  private head = 0;
  private scheduled = false;
  /** What deciding one waiting check takes (ms, moving average over slices). */
  private decideMs = 0.02;
  /** The busy time between one slice and the next, per check the first decided (ms, moving average). */
  private followMs = 0.05;
  /** The last slice: when it ended, and how many checks it decided (0: nothing to measure). */
  private sliceEnded = 0;
  private lastDecided = 0;

  constructor(
    private readonly governor: ResourceGovernor,
    private readonly handlers: TurnHandlers,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Checks waiting (tests, metrics). */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  /**
   * Decide `message` now, or queue it when its connection is throttled (and its bytes fit in the
   * budget). Queued checks are decided in arrival order.
   */
  check(connection: ConnectionState, stream: ServerHttp2Stream, message: Buffer): void {
    if (connection.streamLimit >= this.governor.limits.maxStreamsPerConnection) return this.run(stream, message);
    const item = new Waiting(this.now(), connection, stream, Buffer.from(message), this.handlers.refuse);
    if (!this.governor.chargeIfRoom(connection, item, message.length)) return this.handlers.refuse(stream);
    this.queue.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.slice);
    }
  }

  private run(stream: ServerHttp2Stream, message: Buffer): void {
    try {
      this.handlers.decide(stream, message);
    } catch (err) {
      this.handlers.failed(stream, err);
    }
  }

  private readonly slice = (): void => {
    this.scheduled = false;
    const queue = this.queue;
    const started = this.now();
    // While a slice is scheduled the loop does not wait in poll: all of the gap is work.
    if (this.lastDecided > 0) this.followMs += (Math.min((started - this.sliceEnded) / this.lastDecided, MAX_FOLLOW_MS) - this.followMs) / 4;
    // Checks whose client left, or that the budget refused, are dropped first: the age limit reads the oldest live one.
    while (this.head < queue.length && gone(queue[this.head]!)) {
      this.governor.release(queue[this.head]!);
      queue[this.head++] = undefined as unknown as Waiting;
    }
    const oldest = queue[this.head];
    if (oldest === undefined) {
      this.queue = [];
      this.head = 0;
      this.lastDecided = 0;
      return;
    }
    const budget =
      started - oldest.queuedAt >= MAX_WAIT_MS
        ? Infinity
        : Math.max(Math.ceil((queue.length - this.head) / DRAIN_TURNS), Math.floor(TURN_BUDGET_MS / (this.decideMs + this.followMs)), 1);
    const until = started + MAX_SLICE_MS;
    // Only checks decided count: one whose client left (or that the budget refused) costs nothing.
    let decided = 0;
    while (this.head < queue.length && decided < budget) {
      const item = queue[this.head]!;
      queue[this.head++] = undefined as unknown as Waiting;
      this.governor.release(item);
      // The client gave up (Envoy's timeout) while it waited: its stream's close did the accounting.
      if (gone(item)) continue;
      this.run(item.stream, item.message);
      decided++;
      if (this.now() >= until) break;
    }
    const ended = this.now();
    if (decided > 0) {
      const perCheck = (ended - started) / decided;
      if (perCheck > 0 && perCheck < MAX_SLICE_MS) this.decideMs += (perCheck - this.decideMs) / 4;
    }
    // Measured only when the next slice follows at once; after an empty queue it follows new arrivals.
    this.lastDecided = this.head >= queue.length ? 0 : decided;
    this.sliceEnded = ended;
    if (this.head >= queue.length) {
      this.queue = [];
      this.head = 0;
    } else {
      if (this.head > 1024 && this.head * 2 > queue.length) {
        this.queue = queue.slice(this.head);
        this.head = 0;
      }
      // setImmediate from within the check phase runs after the next poll: other clients' I/O first.
      this.scheduled = true;
      setImmediate(this.slice);
    }
  };
}
