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
  // Every reading of the clock moves it 0.3 ms: a slice decides a few checks.
  const turns = new TakeTurns(governor, { decide, refuse: (s) => refused.push(name(s)), failed: (s) => failed.push(name(s)) }, () => (clock += 0.3));
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

  /** A queue of throttled checks costing `decideMs` each to decide, on the test's clock; `waits` holds each check's wait (ms). */
  function timedTurns(decideMs: number) {
    const governor = new ResourceGovernor(resolveLimits({ memoryBudgetBytes: 1024 * KIB, maxStreamsPerConnection: 128 }));
    const clock = { now: 0 };
    const decided: string[] = [];
    const queuedAt = new Map<string, number>();
    const waits: number[] = [];
    const turns = new TakeTurns(
      governor,
      {
        decide: (s) => {
          const name = (s as unknown as { name: string }).name;
          waits.push(clock.now - queuedAt.get(name)!);
          clock.now += decideMs;
          decided.push(name);
        },
        refuse: () => undefined,
        failed: () => undefined,
      },
      () => clock.now,
    );
    const flooder = new ConnectionState(0, 128);
    flooder.streamLimit = 1;
    const queue = (stream: ServerHttp2Stream & { name: string }) => {
      queuedAt.set(stream.name, clock.now);
      turns.check(flooder, stream, Buffer.alloc(10));
      return stream;
    };
    /** One turn of the loop, then `work(decidedThisTurn)` ms of other work before the next slice. */
    const takeTurn = async (work: (decidedThisTurn: number) => number) => {
      const before = decided.length;
      await turn();
      clock.now += work(decided.length - before);
      return decided.length - before;
    };
    return { turns, decided, waits, clock, queue, takeTurn };
  }

  it('a slice decides as many checks as fit in a turn with the HTTP/2 work each one brings to it', async () => {
    // Deciding takes 0.01 ms, but each decided check brings 0.09 ms of work to the rest of the
    // turn (its answer, its trailers, the client's next stream): 0.75 ms turns hold ~7 of them.
    // Slices of decision time alone (0.25 ms: 25 checks) made every turn ~2.5 ms, and that is what
    // a quiet client waits for, twice.
    const { turns, queue, takeTurn } = timedTurns(0.01);
    for (let i = 0; i < 80; i++) queue(fakeStream(`f${i}`));
    const perTurn: number[] = [];
    while (turns.waiting > 0) perTurn.push(await takeTurn((n) => 0.09 * n));
    // The first slices go by the initial estimates; once measured, at most ~8 checks per turn.
    expect(perTurn.length).toBeGreaterThanOrEqual(9);
    expect(Math.max(...perTurn.slice(4))).toBeLessThanOrEqual(8);
  });

  it('work the checks did not bring (other clients, GC) does not starve the queue: no check waits past the age limit for long', async () => {
    // 20 ms of other work every turn, whatever the slice decides: counted per decided check, it
    // would cut slices to one check a turn and leave the last of 128 waiting ~18 turns (360 ms,
    // past Envoy's timeout). With the oldest check's age as a backstop (25 ms), the queue is
    // answered within a few turns.
    const { turns, decided, waits, queue, takeTurn } = timedTurns(0.01);
    for (let i = 0; i < 128; i++) queue(fakeStream(`f${i}`));
    let turnsTaken = 0;
    while (turns.waiting > 0 && turnsTaken < 100) {
      await takeTurn(() => 20);
      turnsTaken++;
    }
    expect(decided.length).toBe(128);
    expect(Math.max(...waits)).toBeLessThanOrEqual(45); // two turns of 20 ms, then a 2 ms slice for the rest
  });

  it('work the checks did not bring counts at most 0.1 ms per check: slices keep ~6 checks a turn', async () => {
    // A closed loop of 16 clients (each answered check is sent again at once) and 2 ms of other
    // work every turn. Charged in full to the checks decided, it would cut slices to one check a
    // turn (2 ms per check), with a full slice only when the age limit fires.
    const { turns, decided, queue, takeTurn } = timedTurns(0.01);
    for (let i = 0; i < 16; i++) queue(fakeStream(`c${i}-0`));
    const perTurn: number[] = [];
    for (let t = 1; t <= 40; t++) {
      const before = decided.length;
      perTurn.push(await takeTurn(() => 2));
      for (const name of decided.slice(before)) queue(fakeStream(`${name.split('-')[0]}-${t}`));
    }
    expect(turns.waiting).toBe(16);
    const settled = perTurn.slice(10).sort((a, b) => a - b);
    expect(settled[Math.floor(settled.length / 2)]).toBeGreaterThanOrEqual(5);
  });

  it('the age limit reads the oldest check still waiting, not one whose client left', async () => {
    const { decided, queue, takeTurn, clock } = timedTurns(0.01);
    const gone = queue(fakeStream('gone'));
    (gone as { closed: boolean }).closed = true; // reset by its client long ago
    clock.now += 30;
    for (let i = 0; i < 100; i++) queue(fakeStream(`y${i}`));
    await takeTurn(() => 0);
    expect(decided.length).toBeGreaterThan(0);
    expect(decided.length).toBeLessThanOrEqual(12); // a budgeted slice (~10), not a full one (100)
  });

  it('a deep queue drains in a bounded number of turns, never more than 2 ms of deciding per slice', async () => {
    // Each decision takes 0.125 ms: 2 ms hold 16 of them, whatever the budget or the age says.
    const { turns, decided, queue, takeTurn } = timedTurns(0.125);
    for (let i = 0; i < 400; i++) queue(fakeStream(`d${i}`));
    const perTurn: number[] = [];
    while (turns.waiting > 0 && perTurn.length < 100) perTurn.push(await takeTurn((n) => 0.05 * n));
    expect(decided.length).toBe(400);
    expect(Math.max(...perTurn)).toBeLessThanOrEqual(16);
    expect(perTurn.length).toBeLessThanOrEqual(30);
  });

  it('slow decisions stop a slice as soon as it has run 2 ms', async () => {
    const { decided, queue, takeTurn, clock } = timedTurns(1.5);
    for (let i = 0; i < 10; i++) queue(fakeStream(`s${i}`));
    clock.now += 30; // past the age limit: a full slice, bounded by time alone
    expect(await takeTurn(() => 0)).toBe(2); // 3 ms: the slice stops after the decision that crossed 2 ms
  });

  it('checks whose client left while they waited do not use up a slice', async () => {
    const { turns, decided, queue, takeTurn } = timedTurns(0.01);
    for (let i = 0; i < 30; i++) {
      const stream = queue(fakeStream(`c${i}`));
      if (i % 3 !== 0) (stream as { closed: boolean }).closed = true; // reset by the client (Envoy's timeout)
    }
    // The first slice's budget (initial estimates) is 10 decided checks: the 10 live ones, all.
    await takeTurn(() => 0);
    expect(decided).toEqual(Array.from({ length: 10 }, (_, i) => `c${i * 3}`));
    expect(turns.waiting).toBeLessThanOrEqual(2); // c28, c29 (gone) may be left for the next slice
  });

  it('a connection given its streams back waits for nobody', () => {
    const { decided, turns, flooder } = setup();
    flooder.streamLimit = 128;
    turns.check(flooder, fakeStream('f'), Buffer.alloc(10));
    expect(decided).toEqual(['f']);
  });
});
