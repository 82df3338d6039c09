// The verifier's cache and failure behaviour, against an in-memory store whose latency and
// failures the test controls (the real stores have their own suites).
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { keyCacheSchema } from '../../src/keys/config.js';
import { mintKey } from '../../src/keys/format.js';
import { BcryptComparator, KeyHasher, sha256Hex } from '../../src/keys/hashing.js';
import { fairnessClient } from '../../src/keys/fair-lookups.js';
import { THROTTLED_LOG_INTERVAL_MS as LOG_INTERVAL_MS } from '../../src/observability/throttled-log.js';
import { REVALIDATE_INTERVAL_MS } from '../../src/keys/revalidation.js';
import type { KeyRecord } from '../../src/keys/record.js';
import type { KeyChange, KeyStore, LookupQuery } from '../../src/keys/store.js';
import { KeyVerifier, type KeyCheck } from '../../src/keys/verifier.js';
import { pino } from 'pino';
import { silentLogger, type Logger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { isPromise } from '../../src/types.js';

/** A store in memory that answers after `delayMs`, fails while `failing`, never answers while `hanging`. */
class ControlledStore implements KeyStore {
  readonly kind = 'postgres';
  readonly mayHoldBcrypt = false;
  records: KeyRecord[] = [];
  calls = 0;
  answered = 0;
  /** First digest of every query, in the order the store was asked. */
  readonly asked: string[] = [];
  lookupConcurrency: number | undefined = undefined;
  delayMs = 1;
  failing = false;
  hanging = false;
  private readonly listeners = new Set<(change: KeyChange) => void>();

  lookup(query: LookupQuery): Promise<readonly KeyRecord[]> {
    this.calls++;
    this.asked.push(query.digests[0]!);
    const failing = this.failing;
    if (this.hanging) return new Promise(() => undefined);
    // Read at call time, answer later: like a query whose snapshot predates later commits.
    const found = this.records.filter((r) => query.digests.includes(r.hash));
    return new Promise((resolve, reject) =>
      setTimeout(() => {
        this.answered++;
        if (failing) reject(new Error('connect ECONNREFUSED 127.0.0.1:5432'));
        else resolve(found);
      }, this.delayMs),
    );
  }
  markUsed(): void {}
  subscribe(listener: (change: KeyChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  emit(change: KeyChange): void {
    for (const listener of this.listeners) listener(change);
  }
  async close(): Promise<void> {}
}

/** Like PostgreSQL: notifications may be missed; `trusted` says whether they are trusted now. */
class NotifyingStore extends ControlledStore {
  trusted = true;
  rechecks = 0;
  changesTrusted(): boolean {
    return this.trusted;
  }
  async recheck(ids: readonly string[]): Promise<readonly KeyRecord[]> {
    this.rechecks++;
    return this.records.filter((r) => ids.includes(r.id));
  }
}

const clock = new ManualClock(Date.UTC(2026, 0, 1));
/** The client of a check, given as the request itself. */
const byIp = (ip: string) => ip;
const cache = keyCacheSchema.parse({ ttl: '60s', negativeTtl: '10s', staleFor: '1h' });

function setup(options: { lookupTimeoutMs?: number; maxInflight?: number; maxInflightPerClient?: number; concurrency?: number; logger?: Logger; store?: ControlledStore } = {}) {
  const store = options.store ?? new ControlledStore();
  store.lookupConcurrency = options.concurrency;
  const verifier = new KeyVerifier({
    store,
    hasher: new KeyHasher(),
    bcrypt: new BcryptComparator(),
    clock,
    logger: options.logger ?? silentLogger(),
    metrics: new Metrics({ defaultMetrics: false }),
    cache,
    lookupTimeoutMs: options.lookupTimeoutMs ?? 50,
    bcryptTimeoutMs: 100,
    maxInflight: options.maxInflight,
    maxInflightPerClient: options.maxInflightPerClient,
  });
  verifiers.push(verifier);
  return { store, verifier };
}

function addKey(store: ControlledStore, overrides: Partial<KeyRecord> = {}): { key: string; record: KeyRecord } {
  const key = mintKey('ak_');
  const record: KeyRecord = {
    id: `id-${store.records.length + 1}`,
    tenant: 'acme',
    name: 'svc',
    scopes: ['a'],
    prefix: 'ak_',
    displayPrefix: key.slice(0, 9),
    hashAlgorithm: 'sha256',
    hash: sha256Hex(key),
    createdAt: clock.now() - 1000,
    expiresAt: clock.now() + 30 * 86_400_000,
    ...overrides,
  };
  store.records.push(record);
  return { key, record };
}

function sync(result: KeyCheck | Promise<KeyCheck>): KeyCheck {
  expect(isPromise(result)).toBe(false);
  return result as KeyCheck;
}

let verifiers: KeyVerifier[] = [];
afterEach(() => {
  for (const v of verifiers) v.close();
  verifiers = [];
});

describe('KeyVerifier', () => {
  it('looks a key up once, then answers synchronously from the cache', async () => {
    const { store, verifier } = setup();
    const { key, record } = addKey(store);
    const first = verifier.check(key);
    expect(isPromise(first)).toBe(true);
    expect(await first).toEqual(proves(record));
    expect(sync(verifier.check(key))).toEqual(proves(record));
    expect(store.calls).toBe(1);
  });

  it('shares one lookup between concurrent requests for the same key', async () => {
    const { store, verifier } = setup();
    const { key } = addKey(store);
    const results = await Promise.all(Array.from({ length: 20 }, () => verifier.check(key)));
    expect(results.every((r) => r.ok)).toBe(true);
    expect(store.calls).toBe(1);
  });

  it('answers store_unavailable before a slow store answers, and caches the late answer', async () => {
    const { store, verifier } = setup({ lookupTimeoutMs: 20 });
    const { key } = addKey(store);
    store.delayMs = 300;
    const result = await verifier.check(key);
    expect(result).toMatchObject({ ok: false, reason: 'store_unavailable' });
    expect(store.answered).toBe(0); // gave up before the store answered
    await new Promise((resolve) => setTimeout(resolve, 350));
    expect(sync(verifier.check(key)).ok).toBe(true);
  });

  it('never hangs on a store that never answers', async () => {
    const { store, verifier } = setup({ lookupTimeoutMs: 20 });
    const { key } = addKey(store);
    store.hanging = true;
    expect(await verifier.check(key)).toMatchObject({ ok: false, reason: 'store_unavailable' });
  });

  it('reports a failing store as store_unavailable and recovers once it answers again', async () => {
    const { store, verifier } = setup();
    const { key } = addKey(store);
    store.failing = true;
    expect(await verifier.check(key)).toMatchObject({ ok: false, reason: 'store_unavailable', detail: expect.stringContaining('ECONNREFUSED') });
    store.failing = false;
    expect((await verifier.check(key)).ok).toBe(true);
  });

  it('refuses new lookups beyond maxInflight at once instead of queueing them', async () => {
    const { store, verifier } = setup({ maxInflight: 2 });
    store.hanging = true;
    const keys = [addKey(store).key, addKey(store).key, addKey(store).key];
    // Three clients, each within its own share: the global cap is what refuses the third.
    void verifier.check(keys[0]!, '192.0.2.1', byIp);
    void verifier.check(keys[1]!, '192.0.2.2', byIp);
    expect(sync(verifier.check(keys[2]!, '192.0.2.3', byIp))).toMatchObject({ ok: false, reason: 'store_unavailable', detail: 'too many key lookups in flight' });
  });

  it('serves a key past its ttl while refreshing it, and keeps serving it while the store is down', async () => {
    const { store, verifier } = setup();
    const { key } = addKey(store);
    await verifier.check(key);
    store.failing = true;
    clock.advance(61_000);
    expect(sync(verifier.check(key)).ok).toBe(true); // stale, refresh started
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(store.calls).toBe(2);
    clock.advance(30 * 60_000);
    expect(sync(verifier.check(key)).ok).toBe(true); // still within staleFor
    clock.advance(31 * 60_000); // past ttl + staleFor: must ask the store, which is down
    expect(await verifier.check(key)).toMatchObject({ ok: false, reason: 'store_unavailable' });
  });

  it('picks up a revocation on the background refresh after the ttl', async () => {
    const { store, verifier } = setup();
    const { key, record } = addKey(store);
    await verifier.check(key);
    store.records[0] = { ...record, revokedAt: clock.now() };
    clock.advance(61_000);
    sync(verifier.check(key)); // stale answer, refresh runs
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(sync(verifier.check(key))).toEqual({ ok: false, reason: 'key_revoked' });
  });

  it('drops a key at once when the store reports it changed', async () => {
    const { store, verifier } = setup();
    const { key, record } = addKey(store);
    await verifier.check(key);
    store.records[0] = { ...record, revokedAt: clock.now() };
    store.emit({ kind: 'key', id: record.id, created: false });
    expect(await verifier.check(key)).toEqual({ ok: false, reason: 'key_revoked' });
  });

  it('keeps a cached key when the notification only says it was created', async () => {
    const { store, verifier } = setup();
    const { key, record } = addKey(store);
    await verifier.check(key);
    store.emit({ kind: 'key', id: record.id, created: true });
    expect(sync(verifier.check(key)).ok).toBe(true);
  });

  it('does not cache an answer that raced with a change notification', async () => {
    const { store, verifier } = setup();
    const { key, record } = addKey(store);
    store.delayMs = 30;
    const pending = verifier.check(key); // reads the record before the revocation below
    store.emit({ kind: 'key', id: record.id, created: false });
    store.records[0] = { ...record, revokedAt: clock.now() };
    expect(await pending).toMatchObject({ ok: true }); // the pre-revocation answer, used once
    store.delayMs = 1;
    expect(await verifier.check(key)).toEqual({ ok: false, reason: 'key_revoked' });
  });

  it('remembers unknown keys for negativeTtl, and forgets them when a key is added', async () => {
    const { store, verifier } = setup();
    const key = mintKey('ak_');
    expect(await verifier.check(key)).toEqual({ ok: false, reason: 'invalid_api_key' });
    expect(sync(verifier.check(key))).toEqual({ ok: false, reason: 'invalid_api_key' });
    expect(store.calls).toBe(1);
    clock.advance(10_001);
    expect(await verifier.check(key)).toEqual({ ok: false, reason: 'invalid_api_key' });
    expect(store.calls).toBe(2);
    // The key is created meanwhile: the change notification voids the negative entry.
    const record: KeyRecord = { ...addKey(store).record, hash: sha256Hex(key), id: 'late' };
    store.records.push(record);
    store.emit({ kind: 'key', id: 'late', created: true });
    expect(await verifier.check(key)).toEqual(proves(record));
  });

  it('checks expiry against the clock on every request, cached or not', async () => {
    const { store, verifier } = setup();
    const { key } = addKey(store, { expiresAt: clock.now() + 5000 });
    expect((await verifier.check(key)).ok).toBe(true);
    clock.advance(5000);
    expect(sync(verifier.check(key))).toEqual({ ok: false, reason: 'key_expired' });
  });

  it('marks every entry stale on a resync (listener reconnect)', async () => {
    const { store, verifier } = setup();
    const { key, record } = addKey(store);
    await verifier.check(key);
    store.records[0] = { ...record, revokedAt: clock.now() };
    store.emit({ kind: 'all' });
    expect(sync(verifier.check(key)).ok).toBe(true); // stale answer while re-reading
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(sync(verifier.check(key))).toEqual({ ok: false, reason: 'key_revoked' });
  });

  it('rebuilds keys it no longer keeps as objects from the cache table, and drops them on a change', async () => {
    const { store, verifier } = setup();
    store.delayMs = 0;
    // Unusual fields first: non-ASCII, too long for a table slot (kept on the heap), a space inside a scope.
    const odd = [
      addKey(store, { name: 'Zoë’s service ✓', scopes: ['ä', 'b'] }),
      addKey(store, { name: 'n'.repeat(200) }),
      addKey(store, { scopes: ['has space', 'x'], revokedAt: undefined }),
      addKey(store, { scopes: [] }),
    ];
    // More keys than the table keeps objects for (4096): the first ones are rebuilt on their next hit.
    const all = [...odd, ...Array.from({ length: 4200 }, () => addKey(store))];
    // 200 at a time from 200 clients (one client may have only its share of lookups pending).
    for (let i = 0; i < all.length; i += 200) await Promise.all(all.slice(i, i + 200).map(({ key }, n) => verifier.check(key, `192.0.2.${n}`, byIp)));
    const calls = store.calls;
    for (const { key, record } of all.slice(0, 50)) {
      const check = sync(verifier.check(key));
      expect(check).toEqual(proves(record));
      if (check.ok) expect(check.record.principal('name')).toEqual({ method: 'api-key', tenant: 'acme', subject: record.name, scopes: record.scopes, keyId: record.id, expiresAt: Math.floor(record.expiresAt / 1000) });
    }
    expect(store.calls).toBe(calls);
    // A change notification finds rebuilt and heap-kept entries alike.
    for (const { record } of [all[1]!, all[2]!, all[10]!]) {
      store.records[store.records.indexOf(record)] = { ...record, revokedAt: clock.now() };
      store.emit({ kind: 'key', id: record.id, created: false });
    }
    for (const { key } of [all[1]!, all[2]!, all[10]!]) expect(await verifier.check(key)).toEqual({ ok: false, reason: 'key_revoked' });
    expect(sync(verifier.check(all[11]!.key))).toEqual(proves(all[11]!.record));
  });
});

/** A successful check of `record`: the cache keeps the fields a decision needs, not the row. */
function proves(record: KeyRecord) {
  return expect.objectContaining({
    ok: true,
    record: expect.objectContaining({ id: record.id, tenant: record.tenant, name: record.name, scopes: record.scopes, expiresAt: record.expiresAt, revokedAt: record.revokedAt }),
  });
}

describe('KeyVerifier: fair lookups between clients (issue 13 §5)', () => {
  it('holds one client to its share of pending lookups; other clients still get theirs', async () => {
    const { store, verifier } = setup({ maxInflight: 64, maxInflightPerClient: 4 });
    store.hanging = true;
    const spray = Array.from({ length: 10 }, () => verifier.check(mintKey('ak_'), '198.51.100.66', byIp));
    const refused = spray.filter((c) => !isPromise(c));
    expect(refused).toHaveLength(6);
    expect(refused[0]).toMatchObject({ ok: false, reason: 'key_lookup_limited' });
    store.hanging = false;
    const { key, record } = addKey(store);
    expect(await verifier.check(key, '203.0.113.9', byIp)).toEqual(proves(record));
  });

  it('starts queued lookups round-robin across clients, not in arrival order', async () => {
    const { store, verifier } = setup({ maxInflightPerClient: 8, concurrency: 1, lookupTimeoutMs: 1000 });
    store.delayMs = 2;
    const sprayed = Array.from({ length: 6 }, () => verifier.check(mintKey('ak_'), '198.51.100.66', byIp));
    const { key, record } = addKey(store);
    const legit = verifier.check(key, '203.0.113.9', byIp);
    expect(await legit).toEqual(proves(record));
    await Promise.all(sprayed);
    // One sprayed lookup was running and one more had its turn first; the legitimate one went
    // next, ahead of the other four (first come, first served would have made it the 7th).
    expect(store.asked.indexOf(sha256Hex(key))).toBe(2);
  });

  it('when the global cap is full, a client below its share takes the place of the biggest client\'s queued lookup', async () => {
    const { store, verifier } = setup({ maxInflight: 4, maxInflightPerClient: 4, concurrency: 1, lookupTimeoutMs: 1000 });
    store.delayMs = 5;
    const sprayed = Array.from({ length: 4 }, () => verifier.check(mintKey('ak_'), '198.51.100.66', byIp));
    const { key, record } = addKey(store);
    expect(await verifier.check(key, '203.0.113.9', byIp)).toEqual(proves(record));
    const outcomes = await Promise.all(sprayed);
    expect(outcomes.filter((c) => !c.ok && c.reason === 'key_lookup_limited')).toHaveLength(1);
  });

  it('drops a queued lookup unstarted once its caller has had its 503 (nobody waits for it)', async () => {
    const { store, verifier } = setup({ concurrency: 1, lookupTimeoutMs: 20 });
    store.delayMs = 100;
    const running = verifier.check(mintKey('ak_'), '192.0.2.1', byIp);
    const queued = await verifier.check(mintKey('ak_'), '192.0.2.2', byIp);
    expect(queued).toMatchObject({ ok: false, reason: 'store_unavailable', detail: 'key store did not answer in time' });
    await running;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(store.calls).toBe(1);
  });

  it('logs a failing store once per interval with the count of lines left out (issue 14 §5)', async () => {
    const lines: { msg: string; suppressed?: number }[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as { msg: string; suppressed?: number }) });
    const { store, verifier } = setup({ logger, maxInflightPerClient: 1000 });
    store.failing = true;
    await Promise.all(Array.from({ length: 200 }, () => verifier.check(mintKey('ak_'), '192.0.2.1', byIp)));
    expect(lines.map((l) => l.msg)).toEqual(['key store lookup failed']);
    clock.advance(LOG_INTERVAL_MS);
    await verifier.check(mintKey('ak_'), '192.0.2.1', byIp);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ msg: 'key store lookup failed', suppressed: 199 });
  });
});

describe('KeyVerifier: revalidation while notifications cannot be trusted (issue 14 §3)', () => {
  it('re-reads cached keys on its own every interval while untrusted, and drops the changed ones; never while trusted', async () => {
    const store = new NotifyingStore();
    const { verifier } = setup({ store });
    const { key, record } = addKey(store);
    const other = addKey(store);
    expect(await verifier.check(key)).toEqual(proves(record));
    expect(await verifier.check(other.key)).toEqual(proves(other.record));
    // Trusted: no re-reads at all (a policy whose listener is healthy pays nothing).
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(store.rechecks).toBe(0);

    store.trusted = false;
    store.records[0] = { ...record, revokedAt: clock.now() }; // revoked; the NOTIFY is lost
    // No request needed to trigger it: the pass runs on its own.
    let seen = false;
    for (let i = 0; i < 40 && !seen; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      seen = store.rechecks > 0 && !isPromise(verifier.check(other.key)) && isPromise(verifier.check(key));
    }
    expect(seen).toBe(true);
    expect(await verifier.check(key)).toEqual({ ok: false, reason: 'key_revoked' });
    expect(sync(verifier.check(other.key))).toEqual(proves(other.record)); // unchanged keys stay cached
    // And again every interval while untrusted.
    const passes = store.rechecks;
    const started = performance.now();
    while (store.rechecks === passes && performance.now() - started < 3 * REVALIDATE_INTERVAL_MS + 2000) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(store.rechecks).toBeGreaterThan(passes);
  });

  it('a reconnect (resync) triggers one pass at once even when trusted', async () => {
    const store = new NotifyingStore();
    const { verifier } = setup({ store });
    const { key } = addKey(store);
    await verifier.check(key);
    store.emit({ kind: 'all' });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(store.rechecks).toBe(1);
  });
});

describe('fairnessClient', () => {
  it('keys IPv4 by address and IPv6 by /64', () => {
    expect(fairnessClient('203.0.113.7')).toBe('203.0.113.7');
    expect(fairnessClient('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(fairnessClient('2001:0db8:0001:0002:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(fairnessClient('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(fairnessClient('::1')).toBe('0:0:0:0::/64');
    expect(fairnessClient('::ffff:198.51.100.4')).toBe('198.51.100.4');
    expect(fairnessClient('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(fairnessClient('not-an-ip')).toBe('not-an-ip');
  });
});
