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
      governor.release(connection, h);
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
    g.release(c, h);
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
    expect(c.holders.size).toBe(0);
    expect(g.used).toBe(0);
  });
});
