// The checks of throttled connections wait their turn (transport/grpc/turns.ts): decided in slices
// with a turn of the event loop between them; everyone else's are decided at once. Driven with
// stand-in streams (only the fields turns.ts reads) and a stepped clock; the overload test in
// memory-bounds.test.ts measures the effect on a real server under h2load.

import type { ServerHttp2Stream } from 'node:http2';
import { describe, expect, it } from 'vitest';
import { ConnectionState, ResourceGovernor, resolveLimits } from '../../src/transport/grpc/limits.js';
import { TakeTurns } from '../../src/transport/grpc/turns.js';

const KIB = 1024;

function fakeStream(name: string): ServerHttp2Stream & { name: string } {
  return { name, destroyed: false, closed: false, headersSent: false } as unknown as ServerHttp2Stream & { name: string };
}

function setup(budget = 64 * KIB) {
  const governor = new ResourceGovernor(resolveLimits({ memoryBudgetBytes: budget, maxMessageBytes: 8 * KIB, maxStreamsPerConnection: 128 }));
  const decided: string[] = [];
  const refused: string[] = [];
  const failed: string[] = [];
  let clock = 0;
  const name = (stream: ServerHttp2Stream) => (stream as unknown as { name: string }).name;
  const decide = (stream: ServerHttp2Stream) => {
    if (name(stream) === 'throws') throw new Error('boom');
    decided.push(name(stream));
  };
  // Every reading of the clock moves it 0.3 ms, and the loop is never idle: a slice decides a few checks.
  const turns = new TakeTurns(governor, { decide, refuse: (s) => refused.push(name(s)), failed: (s) => failed.push(name(s)) }, () => (clock += 0.3), () => 0);
  const quiet = new ConnectionState(0, 128);
  const flooder = new ConnectionState(0, 128);
  flooder.streamLimit = 1; // told to slow down after a refusal
  return { governor, decided, refused, failed, turns, quiet, flooder };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('taking turns under overload', () => {
  it('decides a connection that was never throttled at once', () => {
    const { decided, turns, quiet } = setup();
    turns.check(quiet, fakeStream('q1'), Buffer.alloc(100));
    expect(decided).toEqual(['q1']);
    expect(turns.waiting).toBe(0);
  });

  it('queues a throttled connection’s checks, and a quiet one’s request read meanwhile goes first', async () => {
    const { decided, turns, quiet, flooder, governor } = setup();
    for (let i = 0; i < 40; i++) turns.check(flooder, fakeStream(`f${i}`), Buffer.alloc(500));
    expect(decided).toEqual([]);
    expect(turns.waiting).toBe(40);
    // The waiting messages stay charged to the request budget.
    expect(governor.used).toBe(40 * 500);
    await turn(); // one slice ran (a fraction of a millisecond of work), the rest waits for the next turn
    const afterOneSlice = decided.length;
    expect(afterOneSlice).toBeGreaterThan(0);
    expect(afterOneSlice).toBeLessThan(40);
    // A quiet client's request read between slices is decided before the rest of the queue.
    turns.check(quiet, fakeStream('q'), Buffer.alloc(100));
    expect(decided[decided.length - 1]).toBe('q');
    while (turns.waiting > 0) await turn();
    expect(decided.filter((n) => n !== 'q')).toEqual(Array.from({ length: 40 }, (_, i) => `f${i}`));
    expect(governor.used).toBe(0);
  });

  it('skips a check whose client gave up while it waited', async () => {
    const { decided, turns, flooder } = setup();
    const gone = fakeStream('gone');
    turns.check(flooder, gone, Buffer.alloc(10));
    turns.check(flooder, fakeStream('kept'), Buffer.alloc(10));
    (gone as { closed: boolean }).closed = true;
    while (turns.waiting > 0) await turn();
    expect(decided).toEqual(['kept']);
  });

  it('answers overloaded (a denial, not a gRPC error) when the message does not fit in the budget', () => {
    const { decided, refused, turns, flooder, governor } = setup(16 * KIB);
    turns.check(flooder, fakeStream('big'), Buffer.alloc(17 * KIB));
    expect(decided).toEqual([]);
    expect(refused).toEqual(['big']);
    expect(governor.used).toBe(0);
  });

  it('never pushes out another connection’s request to make room for a waiting one', () => {
    const { refused, turns, flooder, quiet, governor } = setup(16 * KIB);
    const reading = { counted: 0, evict: () => refused.push('quiet request being read') };
    expect(governor.charge(quiet, reading, 12 * KIB)).toBe(true);
    turns.check(flooder, fakeStream('f'), Buffer.alloc(6 * KIB));
    expect(refused).toEqual(['f']);
    expect(reading.counted).toBe(12 * KIB);
  });

  it('a waiting check the budget gives up later is answered overloaded, and never decided', async () => {
    const { decided, refused, turns, flooder, quiet, governor } = setup(16 * KIB);
    turns.check(flooder, fakeStream('waits'), Buffer.alloc(9 * KIB));
    // A quiet connection's request needs the room: the flooder is over its share (8 KiB) and gives way.
    expect(governor.charge(quiet, { counted: 0, evict: () => undefined }, 8 * KIB)).toBe(true);
    expect(refused).toEqual(['waits']);
    while (turns.waiting > 0) await turn();
    expect(decided).toEqual([]);
  });

  it('a decision that throws ends that call, not the slice or the process', async () => {
    const { decided, failed, turns, flooder } = setup();
    turns.check(flooder, fakeStream('throws'), Buffer.alloc(10));
    turns.check(flooder, fakeStream('after'), Buffer.alloc(10));
    while (turns.waiting > 0) await turn();
    expect(failed).toEqual(['throws']);
    expect(decided).toEqual(['after']);
  });

  /** A queue of throttled checks costing `decideMs` each to decide; the clock and the loop's idle time are the test's. */
  function timedTurns(decideMs: number) {
    const governor = new ResourceGovernor(resolveLimits({ memoryBudgetBytes: 1024 * KIB, maxStreamsPerConnection: 128 }));
    const clock = { now: 0, idle: 0 };
    const decided: string[] = [];
    const turns = new TakeTurns(
      governor,
      { decide: (s) => ((clock.now += decideMs), decided.push((s as unknown as { name: string }).name)), refuse: () => undefined, failed: () => undefined },
      () => clock.now,
      () => clock.idle,
    );
    const flooder = new ConnectionState(0, 128);
    flooder.streamLimit = 1;
    return { turns, flooder, decided, clock };
  }

  it('a slice decides as many checks as fit in a turn with the HTTP/2 work each one brings to it', async () => {
    // Deciding takes 0.01 ms, but each decided check brings 0.2 ms of work to the rest of the turn
    // (its answer, its trailers, the client's next stream): 0.75 ms turns hold ~3 of them. Slices
    // of decision time alone (0.25 ms: 25 checks) made every turn ~5 ms, and that is what a quiet
    // client waits for, twice.
    const { turns, flooder, decided, clock } = timedTurns(0.01);
    for (let i = 0; i < 60; i++) turns.check(flooder, fakeStream(`f${i}`), Buffer.alloc(10));
    const perTurn: number[] = [];
    while (turns.waiting > 0) {
      const before = decided.length;
      await turn();
      perTurn.push(decided.length - before);
      clock.now += 0.2 * (decided.length - before); // the follow-on work, before the next slice
    }
    expect(decided.length).toBe(60);
    // The first slices go by the initial estimates; once measured, at most ~4 checks per turn.
    expect(perTurn.length).toBeGreaterThanOrEqual(10);
    expect(Math.max(...perTurn.slice(4))).toBeLessThanOrEqual(4);
  });

  it('time the event loop spent waiting in poll is not counted as work the checks brought', async () => {
    const { turns, flooder, decided, clock } = timedTurns(0.01);
    for (let i = 0; i < 30; i++) turns.check(flooder, fakeStream(`f${i}`), Buffer.alloc(10));
    let turnsTaken = 0;
    while (turns.waiting > 0) {
      await turn();
      turnsTaken++;
      clock.now += 5; // 5 ms between slices, all of it idle: nothing to shorten the slices for
      clock.idle += 5;
    }
    expect(decided.length).toBe(30);
    expect(turnsTaken).toBeLessThanOrEqual(3); // counted as work, 5 ms a turn would cut slices to ~3 checks
  });

  it('a deep queue still drains in a few turns, never all at once', async () => {
    // Each decision takes 0.05 ms and brings as much again: a 400-deep queue at 7 checks a turn
    // would take 57 turns (each also carrying other clients' I/O), and its last checks would come
    // closer to Envoy's timeout. At least depth / 16 per slice, at most 2 ms of deciding per slice.
    const { turns, flooder, decided, clock } = timedTurns(0.05);
    for (let i = 0; i < 400; i++) turns.check(flooder, fakeStream(`d${i}`), Buffer.alloc(10));
    let turnsTaken = 0;
    let largest = 0;
    while (turns.waiting > 0) {
      const before = decided.length;
      await turn();
      turnsTaken++;
      largest = Math.max(largest, decided.length - before);
      clock.now += 0.05 * (decided.length - before);
    }
    expect(decided.length).toBe(400);
    expect(turnsTaken).toBeLessThanOrEqual(40);
    expect(largest).toBeLessThanOrEqual(40); // 2 ms of 0.05 ms decisions
  });

  it('a connection given its streams back waits for nobody', () => {
    const { decided, turns, flooder } = setup();
    flooder.streamLimit = 128;
    turns.check(flooder, fakeStream('f'), Buffer.alloc(10));
    expect(decided).toEqual(['f']);
  });
});
