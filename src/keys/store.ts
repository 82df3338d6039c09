// The key store contract. Two implementations: file-store.ts (default, embedded) and
// postgres/store.ts. The request path only calls lookup(); the CLI uses the admin methods.

import type { MaybePromise } from '../types.js';
import type { KeyRecord } from './record.js';

export interface LookupQuery {
  /** SHA-256 (and, with a pepper, HMAC-SHA-256) hex digests of the presented key. */
  readonly digests: readonly string[];
  /** Display prefixes a bcrypt record of the key could be stored under (empty: skip bcrypt records). */
  readonly bcryptPrefixes: readonly string[];
}

/** A key changed somewhere (another replica revoked it, the file was edited): drop what is cached. */
export type KeyChange =
  /** One key was inserted (`created`), updated or deleted. */
  | { readonly kind: 'key'; readonly id: string; readonly created: boolean }
  /** Anything may have changed (file reloaded, notifications possibly missed). */
  | { readonly kind: 'all' };

/** What a mutation does to one existing key, computed from its current state inside the store's lock. */
export interface KeyMutation {
  readonly updated: KeyRecord;
  /** A record inserted in the same atomic step (the successor of `keys rotate`). */
  readonly added?: KeyRecord;
}

export interface KeyStore {
  /** "file" or "postgres": the `store` label of the key-store metrics. */
  readonly kind: 'file' | 'postgres';
  /** False when no bcrypt record can exist, so lookups need not compute bcrypt prefixes. */
  readonly mayHoldBcrypt: boolean;
  /**
   * Records matching one of the digests, plus bcrypt records under one of the prefixes (the
   * caller verifies those). Synchronous for the file store. Rejects when the store cannot answer.
   */
  lookup(query: LookupQuery): MaybePromise<readonly KeyRecord[]>;
  /** Note a successful use; stores that persist last_used_at write these in batches. */
  markUsed(id: string, at: number): void;
  /**
   * How many lookups the store serves at once (PostgreSQL: its pool size). More wait in the
   * verifier's per-client queues instead of the store's own FIFO. Absent: no limit (synchronous).
   */
  readonly lookupConcurrency?: number;
  /**
   * Stores whose change notifications can be missed (PostgreSQL): whether they are trusted right
   * now (LISTEN connected and its heartbeat answered recently). See revalidation.ts.
   */
  changesTrusted?(): boolean;
  /**
   * The current records of these ids, read on a connection of their own (never queued behind
   * lookups). Rejects when the store cannot be read. Present exactly when changesTrusted is.
   */
  recheck?(ids: readonly string[]): Promise<readonly KeyRecord[]>;
  /** Calls `listener` on every change made elsewhere; returns the unsubscribe function. */
  subscribe(listener: (change: KeyChange) => void): () => void;
  close(): Promise<void>;
}

export interface KeyAdminStore {
  readonly kind: 'file' | 'postgres';
  /** Throws PortcullisError STORE_CONFLICT when the id or hash already exists. */
  insert(record: KeyRecord): Promise<void>;
  list(filter?: { tenant?: string }): Promise<KeyRecord[]>;
  get(id: string): Promise<KeyRecord | undefined>;
  /**
   * Apply `mutate` to key `id` atomically (row lock / file lock). Throws PortcullisError NOT_FOUND
   * when there is no such key; errors thrown by `mutate` abort the change and propagate.
   */
  mutate(id: string, mutate: (current: KeyRecord) => KeyMutation): Promise<KeyMutation>;
  close(): Promise<void>;
}
