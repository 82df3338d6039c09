// bcrypt comparisons on worker threads. A comparison at cost 10 takes ~50–100 ms of CPU: on the
// event loop it would stall every check in flight, so it runs in a small pool of workers running
// bcryptjs (pure JavaScript, no native build, portable across platforms and images).

import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

// Evaluated inside each worker (CommonJS script); the module path is resolved here, in the parent.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcryptPath);
parentPort.on('message', ({ id, key, hash }) => {
  let ok = false;
  try { ok = bcrypt.compareSync(key, hash); } catch { ok = false; }
  parentPort.postMessage({ id, ok });
});
`;

interface Pending {
  resolve(ok: boolean): void;
  reject(err: Error): void;
}

class BcryptThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;

  constructor(bcryptPath: string) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { bcryptPath } });
    this.worker.unref();
    this.worker.on('message', ({ id, ok }: { id: number; ok: boolean }) => {
      const p = this.pending.get(id);
      this.pending.delete(id);
      p?.resolve(ok);
    });
    this.worker.on('error', (err) => this.failAll(err));
    this.worker.on('exit', () => this.failAll(new Error('bcrypt worker exited')));
  }

  get busy(): number {
    return this.pending.size;
  }

  compare(key: string, hash: string): Promise<boolean> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, key, hash });
    });
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

/** A fixed pool of bcrypt threads, started on first use. */
export class BcryptThreadPool {
  private threads: BcryptThread[] | undefined;

  constructor(private readonly size: number) {}

  compare(key: string, hash: string): Promise<boolean> {
    if (!this.threads) {
      const bcryptPath = createRequire(import.meta.url).resolve('bcryptjs');
      this.threads = Array.from({ length: this.size }, () => new BcryptThread(bcryptPath));
    }
    // Least busy thread; the comparator above caps how many run at once.
    let best = this.threads[0]!;
    for (const t of this.threads) if (t.busy < best.busy) best = t;
    return best.compare(key, hash);
  }

  async close(): Promise<void> {
    const threads = this.threads ?? [];
    this.threads = undefined;
    await Promise.all(threads.map((t) => t.terminate()));
  }
}
