// The policy in force: loaded, compiled and swapped atomically (one reference assignment). A file
// change triggers a reload; a reload that fails keeps the last good policy, is logged and counted.
//
// Kubernetes mounts a ConfigMap as symlinks (policy.yaml → ..data/policy.yaml, ..data →
// ..2026_11_22_...) and updates it by swapping the ..data link, so the directory is watched, not
// the file, and a reload compares content rather than trusting events. A slow poll backs up
// fs.watch where inotify does not reach (some network filesystems).

import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { PolicyError, PortcullisError } from '../errors.js';
import type { Runtime } from '../runtime.js';
import { compilePolicy, type CompiledPolicy } from './compile.js';
import { MAX_POLICY_BYTES, parsePolicyWithLocator } from './load.js';

export interface PolicyStoreOptions {
  /** Poll interval backing up fs.watch, ms (0 disables polling). */
  pollIntervalMs?: number;
  /** Debounce for bursts of file events, ms. */
  debounceMs?: number;
  /** How long a reload waits for new dependencies (JWKS) before swapping anyway, ms. */
  reloadReadyTimeoutMs?: number;
}

export class PolicyStore {
  private policy: CompiledPolicy | undefined;
  private contentHash = '';
  private generation = 0;
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private reloading: Promise<boolean> = Promise.resolve(true);
  private readonly listeners: ((policy: CompiledPolicy) => void)[] = [];

  constructor(
    readonly file: string,
    private readonly runtime: Runtime,
    private readonly options: PolicyStoreOptions = {},
  ) {}

  current(): CompiledPolicy | undefined {
    return this.policy;
  }

  /** Called after every successful swap (initial load included). */
  onSwap(listener: (policy: CompiledPolicy) => void): void {
    this.listeners.push(listener);
  }

  /** First load: throws (PolicyError / PortcullisError) so the process can refuse to start. */
  async load(): Promise<CompiledPolicy> {
    const text = await this.read();
    const compiled = await this.compile(text);
    this.swap(compiled, text);
    this.runtime.metrics.policyReloads.inc({ result: 'success' });
    return compiled;
  }

  /** Re-read the file; returns true when a new policy went live or nothing changed. Never throws. */
  reload(): Promise<boolean> {
    this.reloading = this.reloading.then(() => this.reloadNow());
    return this.reloading;
  }

  watch(): void {
    const dir = path.dirname(path.resolve(this.file));
    try {
      this.watcher = watch(dir, { persistent: false }, () => this.scheduleReload());
      this.watcher.on('error', (err) => this.runtime.logger.warn({ err: err.message, dir }, 'policy watch failed; polling only'));
    } catch (err) {
      this.runtime.logger.warn({ err: (err as Error).message, dir }, 'cannot watch policy directory; polling only');
    }
    const poll = this.options.pollIntervalMs ?? 5000;
    if (poll > 0) {
      this.pollTimer = setInterval(() => this.scheduleReload(), poll);
      this.pollTimer.unref();
    }
  }

  close(): void {
    this.watcher?.close();
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
  }

  private scheduleReload(): void {
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => void this.reload(), this.options.debounceMs ?? 100);
    this.debounceTimer.unref();
  }

  private async reloadNow(): Promise<boolean> {
    const logger = this.runtime.logger;
    let text: string;
    try {
      text = await this.read();
    } catch (err) {
      // Mid-swap a ConfigMap directory can briefly lack the file: keep the policy, retry on next event/poll.
      logger.warn({ err: (err as Error).message, file: this.file }, 'policy reload: file unreadable; keeping the current policy');
      this.runtime.metrics.policyReloads.inc({ result: 'failure' });
      return false;
    }
    if (hash(text) === this.contentHash) return true;
    try {
      const compiled = await this.compile(text);
      await waitAtMost(compiled.ready, this.options.reloadReadyTimeoutMs ?? 10_000).catch((err: unknown) =>
        logger.warn({ err: (err as Error).message }, 'policy reload: a dependency is not ready; swapping anyway'),
      );
      this.swap(compiled, text);
      this.runtime.metrics.policyReloads.inc({ result: 'success' });
      logger.info({ file: this.file, generation: this.generation }, 'policy reloaded');
      return true;
    } catch (err) {
      this.runtime.metrics.policyReloads.inc({ result: 'failure' });
      const problems = err instanceof PolicyError ? err.issues.map((i) => i.message) : undefined;
      logger.error({ file: this.file, err: (err as Error).message, problems }, 'policy reload failed; keeping the last good policy');
      return false;
    }
  }

  private async read(): Promise<string> {
    try {
      const buffer = await readFile(this.file);
      if (buffer.length > MAX_POLICY_BYTES) {
        throw new PolicyError([{ file: this.file, path: [], message: `policy file is ${buffer.length} bytes; the limit is ${MAX_POLICY_BYTES}` }]);
      }
      return buffer.toString('utf8');
    } catch (err) {
      if (err instanceof PolicyError) throw err;
      throw new PortcullisError('POLICY_IO', `${this.file}: cannot read policy file: ${(err as Error).message}`, { cause: err });
    }
  }

  private async compile(text: string): Promise<CompiledPolicy> {
    const { document, locate } = parsePolicyWithLocator(text, this.file, this.runtime.env);
    const pool = this.runtime.resources;
    pool.beginCompile();
    try {
      return compilePolicy(document, this.runtime, this.file, locate);
    } catch (err) {
      await pool.rollback();
      throw err;
    }
  }

  private swap(compiled: CompiledPolicy, text: string): void {
    this.policy = compiled;
    this.contentHash = hash(text);
    this.generation++;
    this.runtime.metrics.policyGeneration.set(this.generation);
    for (const warning of compiled.warnings) this.runtime.logger.warn(warning);
    void this.runtime.resources.commit();
    for (const listener of this.listeners) listener(compiled);
  }
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function waitAtMost(promise: Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready after ${ms} ms`)), ms);
    timer.unref();
    promise.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
