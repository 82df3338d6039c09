// Seed 004: imported keys stored as bcrypt hashes verify, off the event loop, once per key.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import bcrypt from 'bcryptjs';
const { hashSync } = bcrypt;
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { importKey } from '../../src/keys/admin.js';
import { keyCacheSchema } from '../../src/keys/config.js';
import { FileKeyStore } from '../../src/keys/file-store.js';
import { CLIENT_BUDGET, RECORD_BUDGET } from '../../src/keys/attempt-budget.js';
import { BcryptComparator, KeyHasher } from '../../src/keys/hashing.js';
import type { KeyRecord } from '../../src/keys/record.js';
import { KeyVerifier } from '../../src/keys/verifier.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { isPromise } from '../../src/types.js';
import { adminFor, DAY, tempDir } from './helpers.js';

/** Real bcrypt, counted. */
class CountingComparator extends BcryptComparator {
  compares = 0;
  override compare(key: string, hash: string): Promise<boolean> {
    this.compares++;
    return super.compare(key, hash);
  }
}

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const clock = new ManualClock(Date.UTC(2026, 0, 1));

async function setup(file: string, timeoutMs?: number) {
  const store = new FileKeyStore({ path: path.join(tmp.dir, file), logger: silentLogger(), reloadIntervalMs: 0 });
  const admin = adminFor(store, clock);
  const comparator = new CountingComparator();
  const makeVerifier = () =>
    new KeyVerifier({
      store,
      hasher: new KeyHasher(),
      bcrypt: comparator,
      clock,
      logger: silentLogger(),
      metrics: new Metrics({ defaultMetrics: false }),
      cache: keyCacheSchema.parse({ ttl: '60s' }),
      lookupTimeoutMs: timeoutMs ?? 50,
      bcryptTimeoutMs: timeoutMs ?? 2000,
    });
  return { store, admin, comparator, makeVerifier };
}

// Tronexus keys look like ak_<random>; their system stored bcrypt(key) and the first characters.
const TRONEXUS_KEY = 'ak_Abc123xyzQRSTuvw0987654321mnopLKJ';

describe('bcrypt-hashed imported keys', () => {
  it('verify once, then come from the cache; a wrong key with the same prefix is refused', async () => {
    const { store, admin, comparator, makeVerifier } = await setup('cost4.yaml');
    const record = await importKey(
      admin,
      { tenant: 'app-1', name: 'my-service', scopes: ['admin'], id: 'key-uuid-1', expiresAt: clock.now() + 300 * DAY },
      { kind: 'bcrypt', hash: hashSync(TRONEXUS_KEY, 4), prefix: 'ak_', displayPrefix: 'ak_Abc123' },
    );
    store.reload();
    const verifier = makeVerifier();

    const first = verifier.check(TRONEXUS_KEY);
    expect(isPromise(first)).toBe(true); // bcrypt never runs on the request thread
    expect(await first).toEqual(proves(record));
    expect(verifier.check(TRONEXUS_KEY)).toEqual(proves(record));
    expect(comparator.compares).toBe(1);

    // Past the ttl the record is re-read, but the key was already proven against this hash.
    clock.advance(61_000);
    expect(verifier.check(TRONEXUS_KEY)).toMatchObject({ ok: true });
    expect(comparator.compares).toBe(1);

    const wrong = TRONEXUS_KEY.slice(0, -1) + '0';
    expect(await verifier.check(wrong)).toEqual({ ok: false, reason: 'invalid_api_key' });
    expect(verifier.check(wrong)).toEqual({ ok: false, reason: 'invalid_api_key' }); // negative entry: no second compare
    expect(comparator.compares).toBe(2);
    verifier.close();
  });

  it('a comparison slower than bcryptTimeout answers 503 but completes and fills the cache (cost 10)', async () => {
    const { store, admin, comparator, makeVerifier } = await setup('cost10.yaml', 1);
    const hash = hashSync(TRONEXUS_KEY, 10);
    await importKey(
      admin,
      { tenant: 'app-1', name: 'slow', scopes: [], expiresAt: clock.now() + DAY },
      { kind: 'bcrypt', hash, prefix: 'ak_', displayPrefix: 'ak_Abc123xy' },
    );
    store.reload();
    const verifier = makeVerifier();
    expect(await verifier.check(TRONEXUS_KEY)).toMatchObject({ ok: false, reason: 'store_unavailable' });
    // The client retries; by then the comparison has finished in the thread pool.
    let retry = verifier.check(TRONEXUS_KEY);
    for (let i = 0; i < 250 && (isPromise(retry) || !retry.ok); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      retry = verifier.check(TRONEXUS_KEY);
    }
    expect(retry).toMatchObject({ ok: true });
    expect(comparator.compares).toBe(1);
    verifier.close();
  });

  it('refuses to queue more comparisons than the limit', async () => {
    const comparator = new BcryptComparator(1, 1);
    const hash = hashSync('ak_whatever-key-value-0000', 8);
    const running = comparator.compare('ak_a', hash);
    const queued = comparator.compare('ak_b', hash);
    await expect(comparator.compare('ak_c', hash)).rejects.toThrow('too many bcrypt comparisons waiting');
    expect(await running).toBe(false);
    expect(await queued).toBe(false);
  });
});

describe('budget of failed bcrypt comparisons (issue 13 §5)', () => {
  const byIp = (ip: string) => ip;
  const wrongKey = (displayPrefix: string) => displayPrefix + randomBytes(16).toString('hex');
  const ATTACKER = '198.51.100.66';

  async function twoTenants(file: string) {
    const ctx = await setup(file, 2000);
    const keyA = 'ak_Abc123' + 'x'.repeat(24);
    const keyB = 'ak_Zzz999' + 'y'.repeat(24);
    const a = await importKey(ctx.admin, { tenant: 'app-1', name: 'a', scopes: [], expiresAt: clock.now() + DAY }, { kind: 'bcrypt', hash: hashSync(keyA, 4), prefix: 'ak_', displayPrefix: 'ak_Abc123' });
    const b = await importKey(ctx.admin, { tenant: 'app-2', name: 'b', scopes: [], expiresAt: clock.now() + DAY }, { kind: 'bcrypt', hash: hashSync(keyB, 4), prefix: 'ak_', displayPrefix: 'ak_Zzz999' });
    ctx.store.reload();
    return { ...ctx, keyA, keyB, a, b };
  }

  it('8 concurrent wrong secrets under one display prefix: only the record\'s budget is compared, the rest 429 at once; another tenant\'s key still verifies', async () => {
    const { comparator, makeVerifier, keyB, b } = await twoTenants('budget-record.yaml');
    const verifier = makeVerifier();
    // Eight clients, so that only the record's budget can be what stops them.
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => verifier.check(wrongKey('ak_Abc123'), `198.51.100.${i}`, byIp)));
    expect(comparator.compares).toBe(RECORD_BUDGET.capacity);
    expect(results.filter((r) => !r.ok && r.reason === 'invalid_api_key')).toHaveLength(RECORD_BUDGET.capacity);
    expect(results.filter((r) => !r.ok && r.reason === 'key_lookup_limited')).toHaveLength(8 - RECORD_BUDGET.capacity);
    expect(await verifier.check(keyB, '203.0.113.9', byIp)).toEqual(proves(b));
    // The budget refills with time: one more failed comparison after 1 / perSecond seconds.
    clock.advance(1000 / RECORD_BUDGET.perSecond);
    const compares = comparator.compares;
    expect(await verifier.check(wrongKey('ak_Abc123'), '198.51.100.200', byIp)).toEqual({ ok: false, reason: 'invalid_api_key' });
    expect(await verifier.check(wrongKey('ak_Abc123'), '198.51.100.201', byIp)).toMatchObject({ ok: false, reason: 'key_lookup_limited' });
    expect(comparator.compares).toBe(compares + 1);
    verifier.close();
  });

  it('one client spreading wrong secrets over many prefixes is held to its own budget; successes cost nothing', async () => {
    const { comparator, makeVerifier, admin, store, keyA, a } = await twoTenants('budget-client.yaml');
    // More records than the client's budget, one wrong attempt each.
    const prefixes = Array.from({ length: CLIENT_BUDGET.capacity + 2 }, (_, i) => `ak_Pre${String(i).padStart(3, '0')}`);
    for (const [i, displayPrefix] of prefixes.entries()) {
      await importKey(admin, { tenant: `t-${i}`, name: 'n', scopes: [], expiresAt: clock.now() + DAY }, { kind: 'bcrypt', hash: hashSync(displayPrefix + 'secret-secret-secret', 4), prefix: 'ak_', displayPrefix });
    }
    store.reload();
    const verifier = makeVerifier();
    const reasons: string[] = [];
    for (const displayPrefix of prefixes) {
      const r = await verifier.check(wrongKey(displayPrefix), ATTACKER, byIp);
      reasons.push(r.ok ? 'ok' : r.reason);
    }
    expect(reasons).toEqual([...Array(CLIENT_BUDGET.capacity).fill('invalid_api_key'), 'key_lookup_limited', 'key_lookup_limited']);
    expect(comparator.compares).toBe(CLIENT_BUDGET.capacity);
    // A right key from another client is unaffected; and its success gives its tokens back.
    expect(await verifier.check(keyA, '203.0.113.9', byIp)).toEqual(proves(a));
    verifier.close();
  });

  // The reviewer's reproduction: the record's budget used to be spent by anyone's failures, so one
  // attacker spending it (4 at once, then one every 2 s) locked the key's holder out of its first
  // use — on every replica, for as long as the attack ran.
  it('an attacker failing at the record\'s rate from one IP does not lock out the holder of the right key', async () => {
    const { comparator, makeVerifier, keyA, a } = await twoTenants('budget-lockout.yaml');
    const VICTIM = '203.0.113.7';
    // Two replicas: the victim's first use on each comes at a different point of the attack.
    for (let replica = 0; replica < 2; replica++) {
      const verifier = makeVerifier();
      for (let i = 0; i < RECORD_BUDGET.capacity; i++) {
        expect(await verifier.check(wrongKey('ak_Abc123'), ATTACKER, byIp)).toEqual({ ok: false, reason: 'invalid_api_key' });
      }
      for (let round = 0; round < 3 + replica * 2; round++) {
        clock.advance(1000 / RECORD_BUDGET.perSecond);
        // Every failure is compared: the attacker keeps exactly to the record's budget.
        expect(await verifier.check(wrongKey('ak_Abc123'), ATTACKER, byIp)).toEqual({ ok: false, reason: 'invalid_api_key' });
      }
      // Right after the attacker's latest failure, the holder uses its key for the first time here.
      const compares = comparator.compares;
      expect(await verifier.check(keyA, VICTIM, byIp)).toEqual(proves(a));
      expect(comparator.compares).toBe(compares + 1);
      verifier.close();
    }
  });

  it('one client is still held to the record\'s budget, however it sends: concurrent attempts included', async () => {
    const { comparator, makeVerifier, keyA, a } = await twoTenants('budget-one-client.yaml');
    const verifier = makeVerifier();
    const burst = await Promise.all(Array.from({ length: 8 }, () => verifier.check(wrongKey('ak_Abc123'), ATTACKER, byIp)));
    expect(burst.filter((r) => !r.ok && r.reason === 'invalid_api_key')).toHaveLength(RECORD_BUDGET.capacity);
    expect(burst.filter((r) => !r.ok && r.reason === 'key_lookup_limited')).toHaveLength(8 - RECORD_BUDGET.capacity);
    expect(comparator.compares).toBe(RECORD_BUDGET.capacity);
    // Then one failed comparison per 1 / perSecond seconds, no more.
    for (let round = 0; round < 3; round++) {
      clock.advance(1000 / RECORD_BUDGET.perSecond);
      expect(await verifier.check(wrongKey('ak_Abc123'), ATTACKER, byIp)).toEqual({ ok: false, reason: 'invalid_api_key' });
      expect(await verifier.check(wrongKey('ak_Abc123'), ATTACKER, byIp)).toMatchObject({ ok: false, reason: 'key_lookup_limited' });
    }
    expect(comparator.compares).toBe(RECORD_BUDGET.capacity + 3);
    // Its failures cost the record one token, not four: other clients still get their comparisons.
    expect(await verifier.check(wrongKey('ak_Abc123'), '192.0.2.1', byIp)).toEqual({ ok: false, reason: 'invalid_api_key' });
    expect(await verifier.check(keyA, '203.0.113.7', byIp)).toEqual(proves(a));
    verifier.close();
  });
});

/** A successful check of `record`: the cache keeps the fields a decision needs, not the row. */
function proves(record: KeyRecord) {
  return expect.objectContaining({
    ok: true,
    record: expect.objectContaining({ id: record.id, tenant: record.tenant, name: record.name, scopes: record.scopes, expiresAt: record.expiresAt, revokedAt: record.revokedAt }),
  });
}
