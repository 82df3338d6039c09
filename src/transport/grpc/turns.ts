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
 * How long one slice of waiting checks runs before the event loop takes a turn. A well-behaved
 * client waits about two turns (its answer's trailers leave one turn after its data: node:http2
 * sends them from a setImmediate), and a turn holds the slice plus the I/O of every check the
 * previous slice answered, so the slice sets everyone's latency. Measured under a 128 × 1000 h2load
 * flood on 2 cores: 1 ms slices gave the quiet client p50 6.4–9.8 ms; 0.25 ms, 3.0–4.8 ms with the
 * same flood throughput; 0.15 ms, 2.1–2.4 ms but ~10% less throughput (more turns, each with its
 * own cost). A deep queue gets longer slices, up to MAX_SLICE_MS, so that it drains in about
 * DRAIN_TURNS turns: the checks waiting in it must still be answered within Envoy's timeout.
 */
const MIN_SLICE_MS = 0.25;
const MAX_SLICE_MS = 2;
const DRAIN_TURNS = 8;

type Decide = (stream: ServerHttp2Stream, message: Buffer) => void;

export interface TurnHandlers {
  /** Decide the check and answer it. */
  decide: Decide;
  /** Answer it 503 `overloaded` (a denial). */
  refuse: (stream: ServerHttp2Stream) => void;
  /** `decide` threw: end that call, never the process. */
  failed: (stream: ServerHttp2Stream, err: unknown) => void;
}

class Waiting implements Holder {
  counted = 0;
  evicted = false;
  constructor(
    readonly connection: ConnectionState,
    readonly stream: ServerHttp2Stream,
    readonly message: Buffer,
    private readonly refuse: (stream: ServerHttp2Stream) => void,
  ) {}
  /** The budget is full and this connection over its share: refused with the overloaded denial. */
  evict(): void {
    this.evicted = true;
    this.refuse(this.stream);
    // The governor releases the bytes (makeRoom) when evict does not.
  }
}

export class TakeTurns {
  private queue: Waiting[] = [];
  private head = 0;
  private scheduled = false;
  /** What deciding one waiting check has been taking (ms, moving average over slices). */
  private decideMs = 0.02;

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
    const item = new Waiting(connection, stream, Buffer.from(message), this.handlers.refuse);
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
    const sliceMs = Math.min(MAX_SLICE_MS, Math.max(MIN_SLICE_MS, ((queue.length - this.head) / DRAIN_TURNS) * this.decideMs));
    const until = started + sliceMs;
    let n = 0;
    while (this.head < queue.length) {
      const item = queue[this.head]!;
      queue[this.head++] = undefined as unknown as Waiting;
      this.governor.release(item);
      // The client gave up (Envoy's timeout) while it waited: its stream's close did the accounting.
      if (!item.evicted && !unanswerable(item.stream)) this.run(item.stream, item.message);
      if ((++n & 3) === 0 && this.now() >= until) break;
    }
    const perCheck = (this.now() - started) / n;
    if (perCheck > 0 && perCheck < MAX_SLICE_MS) this.decideMs += (perCheck - this.decideMs) / 4;
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
