// What the gRPC port may cost, and who gives way when it is all in use. Two process-wide bounds:
//
// - memory: every request byte held while a message is being received, and every byte inflated
//   from a compressed one, counts against one budget (plus a fixed charge per inflation for zlib's
//   state). A connection may hold at most its own cap; when the budget is full, a connection holding
//   less than its fair share (budget / connections holding bytes) still gets in, and the
//   connections over their share give way (their largest request is refused) — so one client's
//   flood never starves another's small checks.
// - admission: checks in flight (from their stream's open to its close, i.e. read, decided and
//   written, and the answer taken by the client — or the stream reset at the answer deadline). Up to half of maxInFlight anyone is admitted; beyond that only connections below
//   their fair share of the other half (maxInFlight / 2 / connections with checks in flight); at
//   maxInFlight nobody, except that a connection with nothing in flight always gets one check
//   (so at most 2 × maxInFlight in all).
//   A refused check is answered at once with a prepared 503 `overloaded` denial.
//
// The numbers are plain counters updated on the hot path; the fair-share search runs only when the
// budget is exhausted.

/** Limits of one gRPC port, all bounded. */
export interface TransportLimits {
  /** Largest request message, before and after inflating. */
  readonly maxMessageBytes: number;
  /** Requests still being received after this long get DEADLINE_EXCEEDED. */
  readonly readTimeoutMs: number;
  /** A unary answer written but not taken by the client after this long is reset (swept: 1–1.5×). */
  readonly answerTimeoutMs: number;
  /** Request bytes (received and inflated) all connections may hold together. */
  readonly memoryBudgetBytes: number;
  /** Request bytes one connection may hold (at least one largest message). */
  readonly maxConnectionBytes: number;
  /** Checks in flight per process; beyond it checks are refused with 503 `overloaded`. */
  readonly maxInFlight: number;
  /** Open HTTP/2 connections; at the cap the longest-idle one is closed for a newcomer. */
  readonly maxConnections: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS announced to every client. */
  readonly maxStreamsPerConnection: number;
  /** A connection that has not sent the HTTP/2 preface and SETTINGS by then is closed. */
  readonly prefaceTimeoutMs: number;
  /** A connection with no open stream for this long is closed (GOAWAY). */
  readonly idleTimeoutMs: number;
}

export const MIB = 1024 * 1024;

/** The defaults, sized for the Helm chart's 256 Mi container with its V8 settings (README). */
export const DEFAULT_LIMITS: TransportLimits = Object.freeze({
  maxMessageBytes: 4 * MIB,
  readTimeoutMs: 10_000,
  answerTimeoutMs: 2_000,
  memoryBudgetBytes: 32 * MIB,
  maxConnectionBytes: 8 * MIB,
  maxInFlight: 1024,
  maxConnections: 1024,
  maxStreamsPerConnection: 128,
  prefaceTimeoutMs: 5_000,
  idleTimeoutMs: 300_000,
});

/** Fill in the limits not given; the per-connection cap never goes below one largest message. */
export function resolveLimits(partial: Partial<TransportLimits> = {}): TransportLimits {
  const merged = { ...DEFAULT_LIMITS, ...stripUndefined(partial) };
  const budget = merged.memoryBudgetBytes;
  const maxConnectionBytes = partial.maxConnectionBytes ?? Math.max(Math.min(budget, merged.maxMessageBytes + 64 * 1024), Math.floor(budget / 4));
  return Object.freeze({ ...merged, maxConnectionBytes: Math.min(maxConnectionBytes, budget) });
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Something holding request bytes (a request being received, an inflation) that can be refused. */
export interface Holder {
  /** Bytes charged to it, released when it settles. */
  counted: number;
  /** Refuse it (RESOURCE_EXHAUSTED) and release its bytes, synchronously. */
  evict(): void;
  /** The connection its bytes are charged to, and its neighbours among that connection's holders (the governor's list; see ConnectionState). */
  chargedTo?: ConnectionState | undefined;
  previousHolder?: Holder | undefined;
  nextHolder?: Holder | undefined;
}

/** What one HTTP/2 connection holds. */
export class ConnectionState {
  /** Request bytes held by its holders. */
  bytes = 0;
  /** Streams open (any method): a connection with none is idle. */
  streams = 0;
  /** Checks in flight (admitted). */
  checks = 0;
  /** Preface and SETTINGS received. */
  ready = false;
  /** Answers it did not take in time, in consecutive answer sweeps (protocol.ts): it is closed at 2. */
  stalledAnswers = 0;
  /** SETTINGS_MAX_CONCURRENT_STREAMS last announced to it (lowered while it is over its share). */
  streamLimit: number;
  /** Coarse time of the last stream opened or closed (or of the connection's start). */
  lastActive: number;
  /** Order of the last activity among all connections (which one is least recently used). */
  activity = 0;
  /**
   * Its holders with bytes charged, as a list through the holders themselves, and its neighbours
   * among the connections holding bytes: every request is added and removed once, and a Set that
   * fills and empties with every burst of requests rebuilt its table each time (a quarter of a
   * kilobyte of garbage per check).
   */
  firstHolder: Holder | undefined = undefined;
  previousHolding: ConnectionState | undefined = undefined;
  nextHolding: ConnectionState | undefined = undefined;

  constructor(now: number, streamLimit: number) {
    this.lastActive = now;
    this.streamLimit = streamLimit;
  }
}

export class ResourceGovernor {
  /** Request bytes held, process-wide. */
  used = 0;
  /** Checks in flight, process-wide. */
  inFlight = 0;
  /** Coarse time (ms), set by the server's connection sweep: what idle and preface timeouts compare. */
  tick = 0;
  /** Counts stream opens and closes: orders connections by their last activity. */
  activity = 0;
  /** Connections holding bytes (a list through ConnectionState), and how many. */
  private firstHolding: ConnectionState | undefined = undefined;
  private holdingCount = 0;
  private connectionsWithChecks = 0;

  constructor(public limits: TransportLimits) {}

  /**
   * Charge `bytes` to `holder` of `connection`. False when the connection is over its cap, or the
   * budget is full and this connection is at its fair share (then the caller refuses the request).
   */
  charge(connection: ConnectionState, holder: Holder, bytes: number): boolean {
    if (bytes <= 0) return true;
    // More bytes of a holder already charged go to the connection it is charged to.
    if (holder.counted > 0) connection = holder.chargedTo!;
    const limits = this.limits;
    if (connection.bytes + bytes > limits.maxConnectionBytes) return false;
    if (this.used + bytes > limits.memoryBudgetBytes && !this.makeRoom(connection, bytes)) return false;
    if (connection.bytes === 0) this.startHolding(connection);
    if (holder.counted === 0) {
      holder.chargedTo = connection;
      holder.previousHolder = undefined;
      holder.nextHolder = connection.firstHolder;
      if (connection.firstHolder !== undefined) connection.firstHolder.previousHolder = holder;
      connection.firstHolder = holder;
    }
    connection.bytes += bytes;
    holder.counted += bytes;
    this.used += bytes;
    return true;
  }

  /** Charge `bytes` only if they fit without refusing anyone else's request (false: nothing charged). */
  chargeIfRoom(connection: ConnectionState, holder: Holder, bytes: number): boolean {
    if (connection.bytes + bytes > this.limits.maxConnectionBytes || this.used + bytes > this.limits.memoryBudgetBytes) return false;
    return this.charge(connection, holder, bytes);
  }

  /** Release everything `holder` was charged, from the connection it was charged to. */
  release(holder: Holder): void {
    const bytes = holder.counted;
    if (bytes === 0) return;
    const connection = holder.chargedTo!;
    holder.counted = 0;
    holder.chargedTo = undefined;
    const { previousHolder, nextHolder } = holder;
    if (previousHolder !== undefined) previousHolder.nextHolder = nextHolder;
    else connection.firstHolder = nextHolder;
    if (nextHolder !== undefined) nextHolder.previousHolder = previousHolder;
    holder.previousHolder = holder.nextHolder = undefined;
    connection.bytes -= bytes;
    this.used -= bytes;
    if (connection.bytes === 0) this.stopHolding(connection);
  }

  private startHolding(connection: ConnectionState): void {
    connection.previousHolding = undefined;
    connection.nextHolding = this.firstHolding;
    if (this.firstHolding !== undefined) this.firstHolding.previousHolding = connection;
    this.firstHolding = connection;
    this.holdingCount++;
  }

  private stopHolding(connection: ConnectionState): void {
    const { previousHolding, nextHolding } = connection;
    if (previousHolding !== undefined) previousHolding.nextHolding = nextHolding;
    else this.firstHolding = nextHolding;
    if (nextHolding !== undefined) nextHolding.previousHolding = previousHolding;
    connection.previousHolding = connection.nextHolding = undefined;
    this.holdingCount--;
  }

  /** Connections holding request bytes right now (tests). */
  get holdingConnections(): number {
    return this.holdingCount;
  }

  /**
   * The budget is full: refuse requests of the connections furthest over their fair share until
   * `bytes` fit, unless the asking connection is itself at its share.
   */
  private makeRoom(connection: ConnectionState, bytes: number): boolean {
    const budget = this.limits.memoryBudgetBytes;
    const share = budget / (this.holdingCount + (connection.bytes === 0 ? 1 : 0));
    if (connection.bytes + bytes > share) return false;
    while (this.used + bytes > budget) {
      let victim: ConnectionState | undefined;
      // The lists run newest first: `>=` leaves ties to the oldest connection and request.
      for (let c = this.firstHolding; c !== undefined; c = c.nextHolding) {
        if (c !== connection && c.bytes > share && (victim === undefined || c.bytes >= victim.bytes)) victim = c;
      }
      if (victim === undefined) return false;
      let largest: Holder | undefined;
      for (let h = victim.firstHolder; h !== undefined; h = h.nextHolder) if (largest === undefined || h.counted >= largest.counted) largest = h;
      if (largest === undefined) return false;
      const before = this.used;
      largest.evict();
      if (this.used >= before) this.release(largest); // evict() must release; never loop
    }
    return true;
  }

  /** Admit a check on `connection`, or false: answer it 503 `overloaded` at once. */
  admit(connection: ConnectionState): boolean {
    const max = this.limits.maxInFlight;
    const half = max >>> 1;
    if (this.inFlight >= half) {
      if (connection.checks === 0) {
        // A connection with nothing in flight always gets one check (a quiet Envoy is never
        // starved by floods on other connections), up to twice maxInFlight in all.
        if (this.inFlight >= 2 * max) return false;
      } else {
        if (this.inFlight >= max) return false;
        // The second half is shared: each connection may fill its part of it, so connections
        // already holding their share cannot take the room a quieter one needs.
        const share = Math.max(1, half / (this.connectionsWithChecks + 1));
        if (connection.checks >= share) return false;
      }
    }
    if (connection.checks++ === 0) this.connectionsWithChecks++;
    this.inFlight++;
    return true;
  }

  /** The fair share of in-flight checks of one connection right now (what it is throttled to when over it). */
  checkShare(): number {
    return Math.max(1, Math.floor((this.limits.maxInFlight >>> 1) / Math.max(1, this.connectionsWithChecks)));
  }

  /** A stream of `connection` opened (a connection with open streams is not idle). */
  opened(connection: ConnectionState): void {
    connection.streams++;
    connection.lastActive = this.tick;
    connection.activity = ++this.activity;
  }

  /** A stream opened with `opened` closed; `check`: it was an admitted check. */
  closed(connection: ConnectionState, check: boolean): void {
    connection.streams--;
    connection.lastActive = this.tick;
    connection.activity = ++this.activity;
    if (check) {
      if (--connection.checks === 0) this.connectionsWithChecks--;
      this.inFlight--;
    }
  }
}
