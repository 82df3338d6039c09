// The typed-array table behind the JWT and API-key caches: the index must agree with a plain Map
// through any sequence of inserts and removals (crowded probe runs included), eviction must stay
// within capacity and spare entries in use, and texts must come back exactly or not be stored.

import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DigestTable } from '../../src/cache/digest-table.js';

const digest = (n: number) => createHash('sha256').update(`entry-${n}`).digest('binary');

/**
 * Digests whose first word (the probe start) takes only six values, three at each end of the
 * index: long shared probe runs, some wrapping around from the last cell to the first.
 */
function crowded(n: number): string {
  const first = Buffer.alloc(4);
  first.writeInt32LE((n % 6) - 3, 0);
  return first.toString('latin1') + digest(n).slice(4);
}

/** Deterministic pseudo-random numbers (xorshift32), so a failure can be replayed. */
function random(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

describe('DigestTable', () => {
  for (const [name, make] of [['uniform digests', digest], ['crowded probe runs', crowded]] as const) {
    it(`agrees with a Map through random inserts and removals (${name})`, () => {
      const table = new DigestTable<number>(300, { numbers: 1, texts: 0, textBytes: 0 });
      const model = new Map<number, number>();
      const next = random(0x5eed);
      for (let step = 0; step < 20_000; step++) {
        const n = Math.floor(next() * 400);
        if (next() < 0.55 && (model.has(n) || model.size < 300)) {
          const slot = table.claim(make(n));
          table.setNumber(slot, 0, step);
          model.set(n, step);
        } else {
          const slot = table.find(make(n));
          expect(slot >= 0).toBe(model.has(n));
          if (slot >= 0) {
            table.remove(slot);
            model.delete(n);
          }
        }
        if (step % 1000 === 999) {
          for (let m = 0; m < 400; m++) {
            const slot = table.find(make(m));
            expect(slot >= 0 ? table.number(slot, 0) : undefined).toBe(model.get(m));
          }
        }
      }
      expect(table.size).toBe(model.size);
    });
  }

  it('stays within capacity, evicting entries not used since the clock hand last passed', () => {
    const table = new DigestTable<number>(4, { numbers: 0, texts: 0, textBytes: 0 });
    for (let n = 0; n < 4; n++) table.claim(digest(n));
    table.find(digest(0));
    table.find(digest(2));
    table.claim(digest(4)); // evicts 1: 0 was used since it was stored
    table.claim(digest(5)); // evicts 3
    expect([0, 1, 2, 3, 4, 5].map((n) => table.find(digest(n)) >= 0)).toEqual([true, false, true, false, true, true]);
    expect(table.size).toBe(4);
    // A spray of new digests never grows it, and the newest entry is always findable.
    for (let n = 6; n < 1000; n++) {
      table.claim(digest(n));
      expect(table.find(digest(n))).toBeGreaterThanOrEqual(0);
    }
    expect(table.size).toBe(4);
  });

  it('stores texts exactly, or refuses them', () => {
    const table = new DigestTable<number>(2, { numbers: 0, texts: 4, textBytes: 32 });
    const slot = table.claim(digest(1));
    expect(table.setTexts(slot, ['acme', undefined, '', 'zoë ✓'])).toBe(true);
    expect([0, 1, 2, 3].map((i) => table.text(slot, i))).toEqual(['acme', undefined, '', 'zoë ✓']);
    expect(table.textIs(slot, 3, Buffer.from('zoë ✓'))).toBe(true);
    expect(table.textIs(slot, 3, Buffer.from('zoe ✓'))).toBe(false);
    expect(table.textIs(slot, 0, Buffer.from('acm'))).toBe(false);
    // Too long for the slot (33 bytes in all), and a lone surrogate that UTF-8 cannot carry.
    expect(table.setTexts(slot, ['a'.repeat(20), 'b'.repeat(13)])).toBe(false);
    expect(table.setTexts(slot, ['\ud800x'])).toBe(false);
    expect(table.text(slot, 0)).toBeUndefined();
    // The neighbouring slot's texts are untouched by either.
    const other = table.claim(digest(2));
    expect(table.setTexts(other, ['x'.repeat(32)])).toBe(true);
    expect(table.setTexts(slot, ['y'.repeat(32)])).toBe(true);
    expect(table.text(other, 0)).toBe('x'.repeat(32));
  });

  it('keeps a bounded number of objects, pinned ones for as long as their entry lives', () => {
    const table = new DigestTable<string>(100, { numbers: 0, texts: 0, textBytes: 0, keep: 3 });
    const slots = Array.from({ length: 5 }, (_, n) => table.claim(digest(n)));
    table.pin(slots[0]!, 'pinned');
    for (let n = 1; n < 5; n++) table.keep(slots[n]!, `kept ${n}`);
    expect(slots.map((slot) => table.object(slot))).toEqual(['pinned', undefined, 'kept 2', 'kept 3', 'kept 4']);
    // Storing an entry again (or in a reused slot) forgets the object made from the old one.
    expect(table.claim(digest(3))).toBe(slots[3]);
    expect(table.object(slots[3]!)).toBeUndefined();
    table.remove(slots[0]!);
    expect(table.claim(digest(9))).toBe(slots[0]);
    expect(table.object(slots[0]!)).toBeUndefined();
  });

  it('refuses a digest that is not 32 bytes', () => {
    const table = new DigestTable<number>(2, { numbers: 0, texts: 0, textBytes: 0 });
    expect(() => table.find('x'.repeat(16))).toThrow(RangeError);
    expect(() => new DigestTable(0, { numbers: 0, texts: 0, textBytes: 0 })).toThrow(RangeError);
  });
});
