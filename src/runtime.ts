import type { Clock } from './clock.js';
import type { Logger } from './observability/logger.js';
import type { Metrics } from './observability/metrics.js';

/**
 * What the composition root hands to every module: injected collaborators, never module-level
 * singletons. Long-lived resources (JWKS caches, store connections, Redis clients) live in
 * `resources`, so they survive policy reloads.
 */
export interface Runtime {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly resources: ResourcePool;
  /** Environment used for `${VAR}` interpolation and DATABASE_URL-style settings. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * Set by `portcullis validate`: compile everything, connect to nothing (no JWKS fetch, no
   * database or Redis connection). Serving runtimes leave it unset.
   */
  readonly offline?: boolean;
}

interface PoolEntry {
  value: unknown;
  dispose?: (value: unknown) => void | Promise<void>;
  generation: number;
}

/**
 * Long-lived resources keyed by what they are (e.g. `jwks:https://issuer/.well-known/jwks.json`).
 * Each policy compile runs in a generation; after a successful swap the pool disposes what the new
 * policy no longer uses, after a failed compile it disposes only what that compile created.
 */
export class ResourcePool {
  private readonly entries = new Map<string, PoolEntry>();
  private generation = 0;
  private touched = new Set<string>();

  /** Get or create the resource under `key`, marking it used by the compile in progress. */
  acquire<T>(key: string, create: () => T, dispose?: (value: T) => void | Promise<void>): T {
    this.touched.add(key);
    const existing = this.entries.get(key);
    if (existing) return existing.value as T;
    const value = create();
    this.entries.set(key, { value, dispose: dispose as PoolEntry['dispose'], generation: this.generation + 1 });
    return value;
  }

  /** Look a resource up without marking it (metrics, CLI). */
  peek<T>(key: string): T | undefined {
    return this.entries.get(key)?.value as T | undefined;
  }

  beginCompile(): void {
    this.touched = new Set();
  }

  /** The compiled policy is now live: drop what it does not use. */
  async commit(): Promise<void> {
    this.generation++;
    const stale = [...this.entries.keys()].filter((key) => !this.touched.has(key));
    await this.disposeKeys(stale);
  }

  /** The compile failed: drop only what it created; the live policy keeps its resources. */
  async rollback(): Promise<void> {
    const created = [...this.entries.entries()].filter(([, entry]) => entry.generation > this.generation).map(([key]) => key);
    await this.disposeKeys(created);
  }

  async closeAll(): Promise<void> {
    await this.disposeKeys([...this.entries.keys()]);
  }

  private async disposeKeys(keys: string[]): Promise<void> {
    for (const key of keys) {
      const entry = this.entries.get(key);
      this.entries.delete(key);
      if (entry?.dispose) {
        try {
          await entry.dispose(entry.value);
        } catch {
          // A resource that fails to close must not keep the others open.
        }
      }
    }
  }
}
