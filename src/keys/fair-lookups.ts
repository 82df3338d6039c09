// Fair sharing of store lookups between clients. A spray of random well-formed keys (valid
// checksum, so only the store can say they are unknown) must not take the lookups every other
// client needs for its first-use keys:
//   - each client (the source IP, as the pipeline resolves it) may have at most `perClient`
//     lookups pending (queued or running); beyond that its new lookups are refused at once;
//   - at most `concurrency` lookups run against the store at a time (PostgreSQL: the pool size);
//     the rest wait in one queue per client and are started round-robin across clients, so a new
//     client's lookup starts after at most one lookup of each other waiting client, however many
//     a sprayer has queued;
//   - a queued lookup that waited longer than `maxQueueWaitMs` is dropped unstarted (nobody waits
//     for its answer any more);
//   - when the verifier's global cap is reached, a client below its share may take the newest
//     queued lookup of the client with the most pending ones (shed), instead of being refused.
// Everything is bounded by the verifier's cap: one map entry per client with pending lookups.

import net from 'node:net';
import { isPromise, type MaybePromise } from '../types.js';

/**
 * The client a share is counted for: an IPv4 address as it is, an IPv6 address by its /64 (one
 * host gets a whole /64 and could otherwise take a fresh share with every address of it). Text that
 * is not an IP address is used as it is.
 */
export function fairnessClient(ip: string): string {
  if (!ip.includes(':')) return ip;
  const zone = ip.indexOf('%');
  const address = zone >= 0 ? ip.slice(0, zone) : ip;
  if (net.isIPv6(address) === false) return ip;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

/** A queued lookup was dropped: it waited too long, or it was shed for a client below its share. */
export class LookupDroppedError extends Error {
  constructor(readonly why: 'expired' | 'shed') {
    super(why === 'expired' ? 'key lookup waited too long for the store' : 'key lookup shed for another client');
    this.name = 'LookupDroppedError';
  }
}

interface Job {
  readonly client: string;
  readonly start: () => MaybePromise<unknown>;
  readonly queuedAt: number;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

export class FairLookups {
  private readonly pending = new Map<string, number>();
  private readonly queues = new Map<string, Job[]>();
  /** Clients with queued jobs, in the order they get their next turn. */
  private readonly turn: string[] = [];
  private running = 0;

  constructor(
    readonly perClient: number,
    private readonly concurrency: number,
    private readonly maxQueueWaitMs: number,
  ) {}

  /** Whether `client` may start another lookup (it is below its share). */
  mayStart(client: string): boolean {
    return (this.pending.get(client) ?? 0) < this.perClient;
  }

  pendingOf(client: string): number {
    return this.pending.get(client) ?? 0;
  }

  /**
   * Make room for `client`: drop the newest queued lookup of the client with the most pending
   * lookups, when that client has at least two more than `client`. Returns whether one was dropped.
   */
  shedFor(client: string): boolean {
    const mine = this.pendingOf(client);
    let victim: string | undefined;
    let most = mine + 1;
    for (const [other, queue] of this.queues) {
      const count = this.pendingOf(other);
      if (queue.length > 0 && count > most) {
        most = count;
        victim = other;
      }
    }
    if (victim === undefined) return false;
    const queue = this.queues.get(victim)!;
    const job = queue.pop()!;
    if (queue.length === 0) this.forget(victim);
    this.add(victim, -1);
    job.reject(new LookupDroppedError('shed'));
    return true;
  }

  /** Run `start` now if a slot is free, else when this client's turn comes. A synchronous store answers synchronously. */
  run<T>(client: string, start: () => MaybePromise<T>): MaybePromise<T> {
    this.add(client, 1);
    if (this.running < this.concurrency) return this.execute(client, start);
    return new Promise<T>((resolve, reject) => {
      const job: Job = { client, start, queuedAt: performance.now(), resolve: resolve as (v: unknown) => void, reject };
      let queue = this.queues.get(client);
      if (queue === undefined) {
        queue = [];
        this.queues.set(client, queue);
        this.turn.push(client);
      }
      queue.push(job);
    });
  }

  private execute<T>(client: string, start: () => MaybePromise<T>): MaybePromise<T> {
    this.running++;
    let result: MaybePromise<T>;
    try {
      result = start();
    } catch (err) {
      this.finished(client);
      throw err;
    }
    if (!isPromise(result)) {
      this.finished(client);
      return result;
    }
    const finish = () => this.finished(client);
    result.then(finish, finish);
    return result;
  }

  private finished(client: string): void {
    this.running--;
    this.add(client, -1);
    this.dispatch();
  }

  private dispatch(): void {
    while (this.running < this.concurrency && this.turn.length > 0) {
      const client = this.turn.shift()!;
      const queue = this.queues.get(client)!;
      const job = queue.shift()!;
      if (queue.length > 0) this.turn.push(client);
      else this.queues.delete(client);
      if (performance.now() - job.queuedAt > this.maxQueueWaitMs) {
        this.add(client, -1);
        job.reject(new LookupDroppedError('expired'));
        continue;
      }
      try {
        const result = this.execute(client, job.start);
        if (isPromise(result)) result.then(job.resolve, job.reject);
        else job.resolve(result);
      } catch (err) {
        job.reject(err);
      }
    }
  }

  private forget(client: string): void {
    this.queues.delete(client);
    const at = this.turn.indexOf(client);
    if (at >= 0) this.turn.splice(at, 1);
  }

  private add(client: string, delta: number): void {
    const count = (this.pending.get(client) ?? 0) + delta;
    if (count <= 0) this.pending.delete(client);
    else this.pending.set(client, count);
  }
}
