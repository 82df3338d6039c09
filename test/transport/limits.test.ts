// The ResourceGovernor's rules on plain counters: every byte counts, a connection over its share
// gives way to one under it, admission keeps the second half of maxInFlight for quiet connections.
import { describe, expect, it } from 'vitest';
import { ConnectionState, type Holder, resolveLimits, ResourceGovernor } from '../../src/transport/grpc/limits.js';

const KIB = 1024;

function holder(governor: ResourceGovernor, connection: ConnectionState): Holder & { evicted: boolean } {
  const h = {
    counted: 0,
    evicted: false,
    evict() {
      h.evicted = true;
      governor.release(h);
    },
  };
  return h;
}

describe('ResourceGovernor', () => {
  it('counts every byte, small ones too, and releases them', () => {
    const g = new ResourceGovernor(resolveLimits({ memoryBudgetBytes: 64 * KIB, maxMessageBytes: 16 * KIB }));
    const c = new ConnectionState(0, 128);
    const h = holder(g, c);
    expect(g.charge(c, h, 100)).toBe(true);
    expect(g.used).toBe(100);
    g.release(h);
    expect(g.used).toBe(0);
    expect(c.bytes).toBe(0);
  });

  it('refuses a connection over its own cap', () => {
    const g = new ResourceGovernor(resolveLimits({ memoryBudgetBytes: 64 * KIB, maxMessageBytes: 8 * KIB, maxConnectionBytes: 16 * KIB }));
    const c = new ConnectionState(0, 128);
    expect(g.charge(c, holder(g, c), 16 * KIB)).toBe(true);
    expect(g.charge(c, holder(g, c), 1)).toBe(false);
  });

  it('when the budget is full, the connection over its share gives way to a quiet one', () => {
    const g = new ResourceGovernor(resolveLimits({ memoryBudgetBytes: 64 * KIB, maxMessageBytes: 64 * KIB, maxConnectionBytes: 64 * KIB }));
    const greedy = new ConnectionState(0, 128);
    const held = Array.from({ length: 8 }, () => holder(g, greedy));
    for (const h of held) expect(g.charge(greedy, h, 8 * KIB)).toBe(true);
    expect(g.used).toBe(64 * KIB);
    // The greedy one cannot grow further...
    expect(g.charge(greedy, holder(g, greedy), 1)).toBe(false);
    // ...while a quiet one gets in, and one of the greedy one's requests is refused for it.
    const quiet = new ConnectionState(0, 128);
    expect(g.charge(quiet, holder(g, quiet), 4 * KIB)).toBe(true);
    expect(held.filter((h) => h.evicted).length).toBe(1);
    expect(g.used).toBeLessThanOrEqual(64 * KIB);
  });

  it('admits anyone up to half of maxInFlight, then only connections under their share; one check per quiet connection; never beyond twice the cap', () => {
    const g = new ResourceGovernor(resolveLimits({ maxInFlight: 16 }));
    const flood = Array.from({ length: 4 }, () => new ConnectionState(0, 128));
    let admitted = 0;
    for (let round = 0; round < 10; round++) for (const c of flood) if (g.admit(c)) admitted++;
    expect(g.inFlight).toBe(admitted);
    expect(admitted).toBeLessThan(16);
    const quiet = new ConnectionState(0, 128);
    expect(g.admit(quiet)).toBe(true);
    g.opened(quiet);
    g.closed(quiet, true);
    expect(quiet.checks).toBe(0);
    // Many connections each holding one: the cap is reached, yet a quiet connection still gets one.
    for (let i = 0; i < 10; i++) g.admit(new ConnectionState(0, 128));
    expect(g.inFlight).toBeGreaterThanOrEqual(16);
    expect(g.admit(flood[0]!)).toBe(false);
    expect(g.admit(new ConnectionState(0, 128))).toBe(true);
    for (let i = 0; i < 100; i++) g.admit(new ConnectionState(0, 128));
    expect(g.inFlight).toBe(32);
  });
});

describe('ResourceGovernor bookkeeping', () => {
  it('an empty chunk holds nothing and leaves no trace', () => {
    const g = new ResourceGovernor(resolveLimits());
    const c = new ConnectionState(0, 128);
    const h = holder(g, c);
    expect(g.charge(c, h, 0)).toBe(true);
    expect(c.firstHolder).toBeUndefined();
    expect(g.holdingConnections).toBe(0);
    expect(g.used).toBe(0);
  });

  it('holders and connections leave the books in any order; eviction still finds the largest', () => {
    const g = new ResourceGovernor(resolveLimits({ memoryBudgetBytes: 1000, maxConnectionBytes: 1000 }));
    const c1 = new ConnectionState(0, 128);
    const c2 = new ConnectionState(0, 128);
    const evicted: number[] = [];
    const make = (n: number): Holder => {
      const h: Holder = { counted: 0, evict: () => (evicted.push(n), g.release(h)) };
      return h;
    };
    const [a, b, c, d, e] = [make(1), make(2), make(3), make(11), make(12)];
    expect(g.charge(c1, a, 100) && g.charge(c1, b, 300) && g.charge(c1, c, 200)).toBe(true);
    expect(g.charge(c2, d, 50) && g.charge(c2, e, 50)).toBe(true);
    expect(g.holdingConnections).toBe(2);
    g.release(b); // from the middle of c1's list
    g.release(d); // c2's last holder first, then its first
    g.release(e);
    expect(g.holdingConnections).toBe(1);
    expect([c1.bytes, c2.bytes, g.used]).toEqual([300, 0, 300]);
    expect(c2.firstHolder).toBeUndefined();
    // c1 holds 300 (a: 100, c: 200); a grows to 600, so c1 holds 800 of the 1000 budget. c2 asks
    // for 400: the budget is full and c1 is over its share (500), so c1 gives up its largest, a.
    expect(g.charge(c1, a, 500)).toBe(true);
    expect(g.charge(c2, d, 400)).toBe(true);
    expect(evicted).toEqual([1]);
    expect([c1.bytes, c2.bytes, g.used]).toEqual([200, 400, 600]);
    g.release(c);
    g.release(d);
    expect([g.used, g.holdingConnections, c1.firstHolder, c2.firstHolder]).toEqual([0, 0, undefined, undefined]);
  });

  it('between equals, the oldest connection and the oldest request give way', () => {
    const g = new ResourceGovernor(resolveLimits({ memoryBudgetBytes: 1200, maxConnectionBytes: 1200 }));
    const [older, newer, asking] = [new ConnectionState(0, 128), new ConnectionState(0, 128), new ConnectionState(0, 128)];
    const evicted: string[] = [];
    const make = (name: string): Holder => {
      const h: Holder = { counted: 0, evict: () => (evicted.push(name), g.release(h)) };
      return h;
    };
    const held = [make('older-1'), make('older-2'), make('newer-1'), make('newer-2')];
    expect(g.charge(older, held[0]!, 250) && g.charge(older, held[1]!, 250)).toBe(true);
    expect(g.charge(newer, held[2]!, 250) && g.charge(newer, held[3]!, 250)).toBe(true);
    // 1000 of 1200 held, 500 each; `asking` needs 300: share is 400, both are over it by the same.
    expect(g.charge(asking, make('asking'), 300)).toBe(true);
    expect(evicted).toEqual(['older-1']);
  });
});
