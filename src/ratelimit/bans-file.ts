// Bans in a JSON file: { "version": 1, "bans": [ { kind, value, reason, createdAt, expiresAt } ] }.
// Writers (the CLI) take a lock file and replace the file atomically (write + rename), so the
// server never reads half a file. A missing file is an empty list.

import { open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { PortcullisError } from '../errors.js';
import { BAN_KINDS, sameBanTarget, type BanRecord, type BanStore, type BanTarget } from './bans.js';

const LOCK_WAIT_MS = 5000;
/** A lock older than this was left by a crashed writer. */
const STALE_LOCK_MS = 30_000;

export class FileBanStore implements BanStore {
  constructor(readonly path: string) {}

  async list(): Promise<BanRecord[]> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new PortcullisError('STORE_UNAVAILABLE', `${this.path}: cannot read the ban file: ${(err as Error).message}`, { cause: err });
    }
    return parseBanFile(text, this.path);
  }

  async version(): Promise<string | undefined> {
    try {
      const s = await stat(this.path);
      return `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
      throw new PortcullisError('STORE_UNAVAILABLE', `${this.path}: ${(err as Error).message}`, { cause: err });
    }
  }

  async put(record: BanRecord): Promise<void> {
    await this.update((bans) => [...bans.filter((b) => !sameTarget(b, record)), record]);
  }

  async remove(target: BanTarget): Promise<boolean> {
    let found = false;
    await this.update((bans) => {
      const kept = bans.filter((b) => !sameTarget(b, target));
      found = kept.length !== bans.length;
      return kept;
    });
    return found;
  }

  async close(): Promise<void> {}

  private async update(change: (bans: BanRecord[]) => BanRecord[]): Promise<void> {
    const lock = `${this.path}.lock`;
    await acquireLock(lock);
    try {
      const next = change(await this.list());
      const tmp = `${this.path}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify({ version: 1, bans: next }, null, 2) + '\n', { mode: 0o640 });
      await rename(tmp, this.path);
    } catch (err) {
      if (err instanceof PortcullisError) throw err;
      throw new PortcullisError('STORE_UNAVAILABLE', `${this.path}: cannot write the ban file: ${(err as Error).message}`, { cause: err });
    } finally {
      await unlink(lock).catch(() => {});
    }
  }
}

const sameTarget = sameBanTarget;

async function acquireLock(lock: string): Promise<void> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const handle = await open(lock, 'wx');
      await handle.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new PortcullisError('STORE_UNAVAILABLE', `${lock}: cannot lock the ban file: ${(err as Error).message}`, { cause: err });
      }
      const age = await stat(lock).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age > STALE_LOCK_MS) await unlink(lock).catch(() => {});
      else if (Date.now() > deadline) throw new PortcullisError('STORE_CONFLICT', `${lock}: another writer holds the ban file lock`);
      else await sleep(20);
    }
  }
}

export function parseBanFile(text: string, path: string): BanRecord[] {
  const fail = (why: string) => new PortcullisError('STORE_UNAVAILABLE', `${path}: invalid ban file: ${why}`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw fail((err as Error).message);
  }
  const bans = (doc as { bans?: unknown } | null)?.bans;
  if (!Array.isArray(bans)) throw fail('expected {"version":1,"bans":[...]}');
  return bans.map((entry, i) => {
    const e = entry as Partial<Record<keyof BanRecord, unknown>>;
    if (!BAN_KINDS.includes(e.kind as never) || typeof e.value !== 'string' || typeof e.createdAt !== 'string') {
      throw fail(`bans[${i}] needs kind (${BAN_KINDS.join(', ')}), value and createdAt`);
    }
    for (const field of ['reason', 'expiresAt', 'createdBy', 'route', 'source', 'firstOffence', 'lastOffence'] as const) {
      if (e[field] !== undefined && typeof e[field] !== 'string') throw fail(`bans[${i}].${field} must be a string`);
    }
    if (e.offences !== undefined && !Number.isInteger(e.offences)) throw fail(`bans[${i}].offences must be an integer`);
    if (e.expiresAt !== undefined && Number.isNaN(Date.parse(e.expiresAt as string))) throw fail(`bans[${i}].expiresAt is not a date`);
    return e as BanRecord;
  });
}
