// Opening stores and the verifier in front of them. The server takes both from the runtime's
// resource pool, so the store connection, the NOTIFY listener and the cache survive policy
// reloads; the CLI opens a store of its own.

import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Runtime } from '../runtime.js';
import type { KeyStoreConfig } from './config.js';
import { FileKeyStore } from './file-store.js';
import { BcryptComparator, KeyHasher } from './hashing.js';
import { PostgresKeyStore } from './postgres/store.js';
import { storeLocation, storePoolKey, verifierPoolKey, type StoreLocation } from './settings.js';
import type { KeyAdminStore, KeyStore } from './store.js';
import { KeyVerifier } from './verifier.js';

export interface StoreDeps {
  readonly logger: Logger;
  readonly metrics?: Metrics;
}

/** Open a store for serving (watching / listening) or for the CLI (neither). */
export function openKeyStore(location: StoreLocation, deps: StoreDeps, purpose: 'serve' | 'admin'): (KeyStore & KeyAdminStore) | FileKeyStore | PostgresKeyStore {
  if (location.kind === 'file') {
    return new FileKeyStore({ path: location.path, logger: deps.logger, reloadIntervalMs: purpose === 'serve' ? location.reloadIntervalMs : 0 });
  }
  const listenerUp = deps.metrics?.gauge('portcullis_keystore_listener_connected', 'Whether the key-change LISTEN connection is up (1) or reconnecting (0).', []);
  return new PostgresKeyStore({
    url: location.url,
    schema: location.schema,
    poolSize: location.poolSize,
    connectTimeoutMs: location.connectTimeoutMs,
    lastUsedFlushMs: purpose === 'serve' ? location.lastUsedFlushMs : 0,
    listen: purpose === 'serve',
    logger: deps.logger,
    onListenerState: listenerUp ? (connected) => listenerUp.set(connected ? 1 : 0) : undefined,
    statementTimeoutMs: purpose === 'serve' ? 5000 : 60_000,
  });
}

export interface AcquiredVerifier {
  readonly verifier: KeyVerifier;
  /** Resolves when the store can answer (PostgreSQL schema checked); undefined for the file store. */
  readonly ready: Promise<void> | undefined;
}

/** The shared verifier for `config`, created on first use. Throws CONFIG_INVALID for a bad location. */
export function acquireVerifier(runtime: Runtime, config: KeyStoreConfig, policyFile: string): AcquiredVerifier {
  const location = storeLocation(config, policyFile, runtime.env);
  const storeKey = storePoolKey(location);
  const store = runtime.resources.acquire(
    storeKey,
    () => openKeyStore(location, { logger: runtime.logger.child({ component: 'keystore' }), metrics: runtime.metrics }, 'serve'),
    (s) => s.close(),
  );
  const verifier = runtime.resources.acquire(
    verifierPoolKey(storeKey, config),
    () => createVerifier(store, config, runtime.clock, runtime.logger, runtime.metrics),
    (v) => v.close(),
  );
  const ready = store instanceof PostgresKeyStore ? store.ensureSchema() : undefined;
  return { verifier, ready };
}

export function createVerifier(store: KeyStore, config: KeyStoreConfig, clock: Clock, logger: Logger, metrics: Metrics): KeyVerifier {
  return new KeyVerifier({
    store,
    hasher: new KeyHasher(config.pepper),
    bcrypt: new BcryptComparator(),
    clock,
    logger: logger.child({ component: 'apikey' }),
    metrics,
    cache: config.cache,
    lookupTimeoutMs: config.lookupTimeout,
    bcryptTimeoutMs: config.bcryptTimeout,
  });
}
