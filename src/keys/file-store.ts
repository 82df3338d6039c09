// The default, embedded key store: one YAML file of hashed keys, held in memory, re-read when it
// changes (polled, so atomic replacements, ConfigMap updates and edits on shared volumes are all
// seen). A file that fails to parse is logged and ignored: the keys already loaded stay in force.
// Writes (CLI) take a lock file, re-read the file, and replace it atomically (write + rename).

import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../observability/logger.js';
import { PortcullisError } from '../errors.js';
import { parseKeyFile, recordProblem, serializeKeyFile } from './file-format.js';
import type { KeyRecord } from './record.js';
import type { KeyAdminStore, KeyChange, KeyMutation, KeyStore, LookupQuery } from './store.js';

const NO_RECORDS: readonly KeyRecord[] = Object.freeze([]);
const LOCK_WAIT_MS = 5000;
/** A lock file older than this was left by a crashed writer. */
const STALE_LOCK_MS = 30_000;

interface Index {
  readonly byDigest: ReadonlyMap<string, KeyRecord>;
  readonly bcryptByPrefix: ReadonlyMap<string, readonly KeyRecord[]>;
}

function buildIndex(records: readonly KeyRecord[]): Index {
  const byDigest = new Map<string, KeyRecord>();
  const bcryptByPrefix = new Map<string, KeyRecord[]>();
  for (const record of records) {
    if (record.hashAlgorithm === 'bcrypt') {
      const list = bcryptByPrefix.get(record.displayPrefix);
      if (list) list.push(record);
      else bcryptByPrefix.set(record.displayPrefix, [record]);
    } else {
      byDigest.set(record.hash, record);
    }
  }
  return { byDigest, bcryptByPrefix };
}

export interface FileKeyStoreOptions {
  readonly path: string;
  readonly logger: Logger;
  /** Poll interval for hot reload; 0 disables watching (CLI). */
  readonly reloadIntervalMs: number;
}

export class FileKeyStore implements KeyStore, KeyAdminStore {
  readonly kind = 'file';
  readonly path: string;
  private index: Index = buildIndex([]);
  private readonly listeners = new Set<(change: KeyChange) => void>();
  private readonly logger: Logger;
  private readonly onFileChange = (current: Stats, previous: Stats) => {
    if (current.mtimeMs !== previous.mtimeMs || current.ino !== previous.ino || current.size !== previous.size) this.reload();
  };
  private watching = false;

  constructor(options: FileKeyStoreOptions) {
    this.path = path.resolve(options.path);
    this.logger = options.logger;
    this.reload();
    if (options.reloadIntervalMs > 0) {
      watchFile(this.path, { interval: options.reloadIntervalMs, persistent: false }, this.onFileChange);
      this.watching = true;
    }
  }

  get mayHoldBcrypt(): boolean {
    return this.index.bcryptByPrefix.size > 0;
  }

  /** Number of keys loaded (for logs and tests). */
  get size(): number {
    return this.index.byDigest.size + [...this.index.bcryptByPrefix.values()].reduce((n, list) => n + list.length, 0);
  }

  lookup(query: LookupQuery): readonly KeyRecord[] {
    let found: KeyRecord[] | undefined;
    for (const digest of query.digests) {
      const record = this.index.byDigest.get(digest);
      if (record) (found ??= []).push(record);
    }
    for (const prefix of query.bcryptPrefixes) {
      const records = this.index.bcryptByPrefix.get(prefix);
      if (records) (found ??= []).push(...records);
    }
    return found ?? NO_RECORDS;
  }

  /** last_used_at is not persisted by the file store (the server never writes the file). */
  markUsed(): void {}

  subscribe(listener: (change: KeyChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.watching) unwatchFile(this.path, this.onFileChange);
    this.watching = false;
    this.listeners.clear();
  }

  /** Re-read the file; on failure keep what is loaded. */
  reload(): void {
    let records: KeyRecord[];
    try {
      records = existsSync(this.path) ? parseKeyFile(readFileSync(this.path, 'utf8'), this.path) : [];
    } catch (err) {
      this.logger.error({ file: this.path, err: (err as Error).message }, 'key file not loaded; keeping the keys already loaded');
      return;
    }
    if (!existsSync(this.path)) this.logger.warn({ file: this.path }, 'key file does not exist: no API key is accepted until it is created');
    this.index = buildIndex(records);
    this.logger.info({ file: this.path, keys: records.length }, 'key file loaded');
    for (const listener of this.listeners) listener({ kind: 'all' });
  }

  // ---- admin (CLI) ----

  async list(filter: { tenant?: string } = {}): Promise<KeyRecord[]> {
    const records = await this.readRecords();
    return records.filter((r) => filter.tenant === undefined || r.tenant === filter.tenant);
  }

  async get(id: string): Promise<KeyRecord | undefined> {
    return (await this.readRecords()).find((r) => r.id === id);
  }

  async insert(record: KeyRecord): Promise<void> {
    checkRecord(record);
    await this.withLock(async () => {
      const records = await this.readRecords();
      if (records.some((r) => r.id === record.id)) throw new PortcullisError('STORE_CONFLICT', `a key with id ${record.id} already exists`);
      if (record.hashAlgorithm !== 'bcrypt' && records.some((r) => r.hash === record.hash)) {
        throw new PortcullisError('STORE_CONFLICT', 'a key with the same hash already exists');
      }
      await this.writeRecords([...records, record]);
    });
  }

  async mutate(id: string, mutate: (current: KeyRecord) => KeyMutation): Promise<KeyMutation> {
    return this.withLock(async () => {
      const records = await this.readRecords();
      const index = records.findIndex((r) => r.id === id);
      if (index < 0) throw new PortcullisError('NOT_FOUND', `no key with id ${id}`);
      const mutation = mutate(records[index]!);
      checkRecord(mutation.updated);
      const next = [...records];
      next[index] = mutation.updated;
      if (mutation.added) {
        checkRecord(mutation.added);
        if (records.some((r) => r.id === mutation.added!.id)) throw new PortcullisError('STORE_CONFLICT', `a key with id ${mutation.added.id} already exists`);
        next.push(mutation.added);
      }
      await this.writeRecords(next);
      return mutation;
    });
  }

  private async readRecords(): Promise<KeyRecord[]> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new PortcullisError('STORE_UNAVAILABLE', `cannot read key file ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      return parseKeyFile(text, this.path);
    } catch (err) {
      throw new PortcullisError('STORE_UNAVAILABLE', (err as Error).message, { cause: err });
    }
  }

  /** Write to a temporary file in the same directory, flush it, then rename over the key file. */
  private async writeRecords(records: readonly KeyRecord[]): Promise<void> {
    const temporary = `${this.path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const handle = await open(temporary, 'wx', 0o600);
    try {
      await handle.writeFile(serializeKeyFile(records), 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await rename(temporary, this.path);
    } catch (err) {
      await rm(temporary, { force: true });
      throw err;
    }
  }

  private async withLock<T>(work: () => Promise<T>): Promise<T> {
    const lock = `${this.path}.lock`;
    await mkdir(path.dirname(this.path), { recursive: true });
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        const handle = await open(lock, 'wx', 0o600);
        await handle.writeFile(String(process.pid));
        await handle.close();
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const info = await stat(lock).catch(() => undefined);
        if (info && Date.now() - info.mtimeMs > STALE_LOCK_MS) {
          await rm(lock, { force: true });
          continue;
        }
        if (Date.now() > deadline) throw new PortcullisError('STORE_CONFLICT', `key file ${this.path} is locked by another writer (${lock})`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }
    try {
      return await work();
    } finally {
      await rm(lock, { force: true });
    }
  }
}

function checkRecord(record: KeyRecord): void {
  const problem = recordProblem(record);
  if (problem) throw new PortcullisError('CONFIG_INVALID', `key ${record.id}: ${problem.field} ${problem.message}`);
}
