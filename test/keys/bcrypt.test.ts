// Seed 004: imported keys stored as bcrypt hashes verify, off the event loop, once per key.
import path from 'node:path';
import bcrypt from 'bcryptjs';
const { hashSync } = bcrypt;
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { importKey } from '../../src/keys/admin.js';
import { keyCacheSchema } from '../../src/keys/config.js';
import { FileKeyStore } from '../../src/keys/file-store.js';
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
    for (let i = 0; i < 50 && (isPromise(retry) || !retry.ok); i++) {
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

/** A successful check of `record`: the cache keeps the fields a decision needs, not the row. */
function proves(record: KeyRecord) {
  return expect.objectContaining({
    ok: true,
    record: expect.objectContaining({ id: record.id, tenant: record.tenant, name: record.name, scopes: record.scopes, expiresAt: record.expiresAt, revokedAt: record.revokedAt }),
  });
}
