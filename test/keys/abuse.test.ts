// Issue 13 §5 / 14 §3 against the real PostgreSQL, 5 ms away behind a latency-adding proxy:
//   - a spray of random well-formed keys from one client IP cannot take every lookup: first-use
//     keys from other clients keep being answered (never 503);
//   - a key revoked while the LISTEN connection is silently dead (the proxy stops forwarding it
//     without closing it), under that same spray, is refused within the documented window.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKeysCommand, runMigrateCommand } from '../../src/keys/cli.js';
import { mintKey } from '../../src/keys/format.js';
import { PostgresKeyStore } from '../../src/keys/postgres/store.js';
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, REVOCATION_WINDOW_MS, TRUST_HORIZON_MS } from '../../src/keys/revalidation.js';
import { silentLogger } from '../../src/observability/logger.js';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import type { Runtime } from '../../src/runtime.js';
import type { Decision } from '../../src/types.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { keyStoreCli } from '../support/key-store-cli.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { counterValue, eventually } from './helpers.js';
import { TcpProxy } from './tcp-proxy.js';

const SCHEMA = `pc_keys_abuse_${randomBytes(4).toString('hex')}`;
const available = await postgresAvailable();
const SPRAYER = '198.51.100.66';

const cli = (argv: string[], run = runKeysCommand) => keyStoreCli(SCHEMA, argv, run);

async function createKey(name: string): Promise<{ key: string; id: string }> {
  const result = await cli(['create', '--tenant', 'acme', '--name', name, '--scopes', 'orders:read', '--expires-in', '30d', '--json']);
  expect(result.err).toBe('');
  return JSON.parse(result.out) as { key: string; id: string };
}

interface Node {
  runtime: Runtime;
  policy: CompiledPolicy;
  check(key: string, ip: string): Promise<Decision>;
}

async function node(url: string): Promise<Node> {
  const runtime = testRuntime();
  const policy = compileYaml(
    `
identity:
  - apiKey: { headers: [x-api-key] }
keyStore:
  type: postgres
  postgres: { url: "${url}", schema: ${SCHEMA}, poolSize: 4, connectTimeout: 1s }
  lookupTimeout: 1s
  cache: { ttl: 60s, negativeTtl: 10s, staleFor: 1h }
routes:
  - { name: orders, match: { pathPrefix: /v1/ }, require: { allOf: ["orders:read"] } }
`,
    runtime,
  );
  await policy.ready;
  return { runtime, policy, check: async (key, ip) => authorize(policy, request({ path: '/v1/orders', headers: { 'x-api-key': key }, sourceAddress: ip })) };
}

/**
 * 300 concurrent callers from one IP, each presenting a fresh random key with a valid checksum.
 * (lookupTimeout is 1 s in this policy, not the 50 ms default, because the sprayer competes for
 * the CPU of this very process; before the fix the legitimate keys got 503 at once, "too many key
 * lookups in flight", whatever the timeout.)
 */
function spray(target: Node): { stop(): Promise<Map<string, number>> } {
  let stopped = false;
  const outcomes = new Map<string, number>();
  const worker = async () => {
    while (!stopped) {
      const d = await target.check(mintKey('portcullis_'), SPRAYER);
      const label = d.allowed ? 'allowed' : d.reason;
      outcomes.set(label, (outcomes.get(label) ?? 0) + 1);
      // A breath between attempts: the sprayer runs in the test's own process, next to the proxy
      // and the server, on a shared 2-core machine (its share stays full regardless).
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  };
  const workers = Array.from({ length: 300 }, worker);
  return {
    async stop() {
      stopped = true;
      await Promise.all(workers);
      return outcomes;
    },
  };
}

const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
const target = new URL(DATABASE_URL);
const proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
let n: Node;

beforeAll(async () => {
  if (!available) return;
  expect((await cli([], runMigrateCommand)).code).toBe(0);
  const port = await proxy.start();
  proxy.latencyMs = 5;
  const viaProxy = new URL(DATABASE_URL);
  viaProxy.port = String(port);
  n = await node(viaProxy.toString());
});

afterAll(async () => {
  if (n) await n.runtime.resources.closeAll();
  await proxy.down();
  await admin.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`).catch(() => undefined);
  await admin.end();
});

describe.skipIf(!available)('API-key lookups under abuse (PostgreSQL 5 ms away)', () => {
  it('a sprayer from one IP cannot starve first-use keys from other clients', async () => {
    const legit = [];
    for (let i = 0; i < 10; i++) legit.push(await createKey(`legit-${i}`));
    const sprayer = spray(n);
    // Let the spray fill whatever it can.
    await eventually(async () => (await counterValue(n.runtime, 'portcullis_keystore_lookups_total', { result: 'not_found' })) > 50, 5000);
    const answers: string[] = [];
    for (const [i, { key }] of legit.entries()) {
      const d = await n.check(key, `203.0.113.${10 + i}`);
      answers.push(d.allowed ? 'allowed' : `${d.status} ${d.reason} ${d.detail ?? ''}`);
    }
    const outcomes = await sprayer.stop();
    expect(answers).toEqual(Array(10).fill('allowed'));
    // The sprayer was held to its share and told so (429), not the store reported down.
    expect(outcomes.get('key_lookup_limited') ?? 0).toBeGreaterThan(0);
    expect(outcomes.get('allowed')).toBeUndefined();
  });

  it('a key revoked while the LISTEN connection is silently dead is refused within the documented window, under spray', async () => {
    const { key, id } = await createKey('revoked-while-deaf');
    // The previous test's spray may still be draining from the pool.
    expect(await eventually(async () => (await n.check(key, '203.0.113.50')).allowed, 5000)).toBe(true);

    expect(proxy.stall('portcullis-key-listener')).toBe(1);
    const sprayer = spray(n);
    expect((await cli(['revoke', id])).code).toBe(0);
    const revokedAt = Date.now();
    let allowedMeanwhile = 0;
    const refused = await eventually(async () => {
      const d = await n.check(key, '203.0.113.50');
      if (d.allowed) allowedMeanwhile++;
      return !d.allowed && d.reason === 'key_revoked';
    }, REVOCATION_WINDOW_MS);
    const tookMs = Date.now() - revokedAt;
    console.log(`revocation through a dead LISTEN seen after ${tookMs} ms, ${allowedMeanwhile} allows meanwhile`);
    await sprayer.stop();
    expect({ refused, withinWindow: tookMs <= REVOCATION_WINDOW_MS }).toEqual({ refused: true, withinWindow: true });
    // And it stays refused once the listener is back.
    expect((await n.check(key, '203.0.113.50')).allowed).toBe(false);
  });

  it('detects a silently dead LISTEN connection within the heartbeat bound and listens again on a new one', async () => {
    const viaProxy = new URL(DATABASE_URL);
    viaProxy.port = String(proxy.port);
    const states: boolean[] = [];
    const store = new PostgresKeyStore({
      url: viaProxy.toString(), schema: SCHEMA, poolSize: 1, connectTimeoutMs: 1000, lastUsedFlushMs: 0, listen: true,
      logger: silentLogger(), onListenerState: (up) => states.push(up),
    });
    try {
      expect(await eventually(() => store.listenerConnected, 3000)).toBe(true);
      // This store's LISTEN connection goes silent (and the serving node's, same channel, if it
      // has replaced the one the previous test stalled).
      expect(proxy.stall('portcullis-key-listener')).toBeGreaterThanOrEqual(1);
      const stalledAt = Date.now();
      // Untrusted first (revalidation starts), within the trust horizon...
      expect(await eventually(() => !store.changesTrusted(), TRUST_HORIZON_MS + 500)).toBe(true);
      console.log(`silent LISTEN untrusted after ${Date.now() - stalledAt} ms`);
      // ...then given up within one heartbeat interval plus its timeout (plus slack for a busy machine)...
      expect(await eventually(() => states.includes(false), HEARTBEAT_INTERVAL_MS + HEARTBEAT_TIMEOUT_MS + 1000)).toBe(true);
      console.log(`silent LISTEN death detected after ${Date.now() - stalledAt} ms`);
      // ...and back on a fresh connection, which is trusted again.
      expect(await eventually(() => store.listenerConnected && store.changesTrusted(), 5000)).toBe(true);
      expect(states).toEqual([true, false, true]);
    } finally {
      await store.close();
    }
  });
});
