// Where the keys live: the `keyStore:` policy section (or its absence), the environment and CLI
// flags resolved into one StoreSettings, shared by the server and the CLI.
//
//   keyStore absent, or type: file  → file store at keyStore.file.path, else $PORTCULLIS_KEYS_FILE,
//                                      else keys.yaml next to the policy file
//   type: postgres                   → keyStore.postgres.url, else $DATABASE_URL (required)
// DATABASE_URL alone never switches the store to PostgreSQL: a stray variable in a pod must not
// change where keys come from.

import { createHash } from 'node:crypto';
import path from 'node:path';
import { PortcullisError } from '../errors.js';
import { keyStoreSchema, postgresStoreSchema, type KeyStoreConfig } from './config.js';

export const DEFAULT_KEY_FILE = 'keys.yaml';

export type StoreLocation =
  | { readonly kind: 'file'; readonly path: string; readonly reloadIntervalMs: number }
  | {
      readonly kind: 'postgres';
      readonly url: string;
      readonly schema: string;
      readonly poolSize: number;
      readonly connectTimeoutMs: number;
      readonly lastUsedFlushMs: number;
    };

type Env = Readonly<Record<string, string | undefined>>;

/** The keyStore section with every default applied (an absent section is the file store). */
export function effectiveKeyStoreConfig(config: KeyStoreConfig | undefined): KeyStoreConfig {
  return config ?? keyStoreSchema.parse({});
}

/** Resolve the store location; `policyFile` anchors relative paths. Throws CONFIG_INVALID. */
export function storeLocation(config: KeyStoreConfig, policyFile: string | undefined, env: Env): StoreLocation {
  if (config.type === 'postgres') {
    const pg = config.postgres ?? postgresStoreSchema.parse({});
    const url = pg.url ?? env.DATABASE_URL;
    if (!url) throw new PortcullisError('CONFIG_INVALID', 'keyStore type postgres needs keyStore.postgres.url or the DATABASE_URL environment variable');
    if (!/^postgres(ql)?:\/\//.test(url)) throw new PortcullisError('CONFIG_INVALID', 'the key store URL must start with postgres:// or postgresql://');
    return { kind: 'postgres', url, schema: pg.schema, poolSize: pg.poolSize, connectTimeoutMs: pg.connectTimeout, lastUsedFlushMs: pg.lastUsedFlush };
  }
  const configured = config.file?.path ?? env.PORTCULLIS_KEYS_FILE;
  const base = policyFile !== undefined ? path.dirname(path.resolve(policyFile)) : process.cwd();
  const file = path.resolve(base, configured ?? DEFAULT_KEY_FILE);
  return { kind: 'file', path: file, reloadIntervalMs: config.file?.reloadInterval ?? 1000 };
}

/**
 * `--store file:PATH` or `--store postgres://…` (CLI). Settings not in the flag come from `base`
 * (the policy's keyStore section, when --config is given too).
 */
export function storeLocationFromFlag(flag: string, schema: string | undefined, base: KeyStoreConfig): StoreLocation {
  if (flag.startsWith('file:')) {
    const file = flag.slice('file:'.length);
    if (file === '') throw new PortcullisError('CONFIG_INVALID', '--store file: needs a path (file:/etc/portcullis/keys.yaml)');
    return { kind: 'file', path: path.resolve(file), reloadIntervalMs: 0 };
  }
  if (/^postgres(ql)?:\/\//.test(flag)) {
    const pg = base.postgres;
    return {
      kind: 'postgres',
      url: flag,
      schema: schema ?? pg?.schema ?? 'portcullis',
      poolSize: 2,
      connectTimeoutMs: pg?.connectTimeout ?? 5000,
      lastUsedFlushMs: 0,
    };
  }
  throw new PortcullisError('CONFIG_INVALID', `--store must be file:PATH or a postgres:// URL, got "${flag}"`);
}

function fingerprint(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** Resource-pool key of a store: one store per location, shared by every source and reload. */
export function storePoolKey(location: StoreLocation): string {
  return location.kind === 'file'
    ? `keystore:file:${location.path}`
    : // The URL may hold a password: only a fingerprint goes into the key.
      `keystore:postgres:${fingerprint(location.url)}:${location.schema}:${location.poolSize}:${location.connectTimeoutMs}:${location.lastUsedFlushMs}`;
}

/** Resource-pool key of the verifier (cache) in front of a store for the given settings. */
export function verifierPoolKey(storeKey: string, config: KeyStoreConfig): string {
  const settings = JSON.stringify([config.cache, config.lookupTimeout, config.bcryptTimeout, config.pepper !== undefined ? fingerprint(config.pepper) : null]);
  return `apikey-verifier:${storeKey}:${fingerprint(settings)}`;
}
