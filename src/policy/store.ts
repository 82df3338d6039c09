// The policy in force: loaded, compiled and swapped atomically (one reference assignment). A file
// change triggers a reload; a reload that fails keeps the last good policy, and is logged and
// counted once per distinct broken content (not once per poll).
//
// All or nothing: a reload applies only a complete, stable file. Its content must be the same
// (hash, size, mtime, inode) across two reads a settle window apart, and it must parse as exactly
// one clean YAML document that states a policy (load.ts): a file rewritten in place in several
// parts is never compiled half-written while the writer pauses less than the settle window.
//
// Kubernetes mounts a ConfigMap as symlinks (policy.yaml → ..data/policy.yaml, ..data →
// ..2026_11_22_...) and updates it by swapping the ..data link, so the directory is watched, not
// the file; only events naming the policy file or `..data` schedule a reload, and the first event
// of a burst sets the timer (later ones never postpone it). A slow poll backs up fs.watch where
// inotify does not reach (some network filesystems); it bypasses the debounce.

import { createHash } from 'node:crypto';
import { watch, type FSWatcher, type Stats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Gauge } from 'prom-client';
import { formatPolicyIssue, PolicyError, PortcullisError } from '../errors.js';
import type { Runtime } from '../runtime.js';
import type { CompiledPolicy } from './compile.js';
import { compileLoaded, MAX_POLICY_BYTES, parsePolicyWithLocator } from './load.js';

export interface PolicyStoreOptions {
  /** Poll interval backing up fs.watch, ms (0 disables polling). Polls are never debounced. */
  pollIntervalMs?: number;
  /** Delay between the first event of a burst and the reload it schedules, ms (not restarted by later events). */
  debounceMs?: number;
  /**
   * The settle window, ms: a changed file is applied only when two reads this far apart see the
   * same content, size and modification time. A writer must not pause longer than this in the
   * middle of an in-place rewrite (write to a temporary file and rename it instead, as
   * Kubernetes ConfigMaps, editors and config-management tools do).
   */
  settleMs?: number;
  /** How many settle windows one reload waits for a changing file before giving up until the next event or poll. */
  maxSettleRounds?: number;
  /** How long a reload waits for new dependencies (JWKS) before swapping anyway, ms. */
  reloadReadyTimeoutMs?: number;
}

export const DEFAULT_SETTLE_MS = 1000;

interface Snapshot {
  readonly text: string;
  readonly hash: string;
  /** size, mtime and inode, read before and after the content: equal when nothing wrote meanwhile. */
  readonly stamp: string;
}

export class PolicyStore {
  private policy: CompiledPolicy | undefined;
  private contentHash = '';
  private generation = 0;
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private reloading: Promise<boolean> = Promise.resolve(true);
  /** A reload queued behind the running one; later requests join it rather than queue more. */
  private queued: Promise<boolean> | undefined;
  /** The last failure (content hash or read error), so one broken content is logged and counted once. */
  private lastFailure: string | undefined;
  private closed = false;
  private unsettledLogged = false;
  private readonly listeners: ((policy: CompiledPolicy) => void)[] = [];
  private readonly lastReloadSuccess: Gauge;
  private readonly lastReloadTimestamp: Gauge;

  constructor(
    readonly file: string,
    private readonly runtime: Runtime,
    private readonly options: PolicyStoreOptions = {},
  ) {
    this.lastReloadSuccess = minGauge(
      runtime,
      'portcullis_policy_last_reload_success',
      '1 when the last policy load or reload attempt succeeded, 0 when it failed (the last good policy stays in force).',
    );
    this.lastReloadTimestamp = minGauge(
      runtime,
      'portcullis_policy_last_reload_timestamp_seconds',
      'Unix time of the last successful policy load or reload.',
    );
  }

  current(): CompiledPolicy | undefined {
    return this.policy;
  }

  /** Called after every successful swap (initial load included). */
  onSwap(listener: (policy: CompiledPolicy) => void): void {
    this.listeners.push(listener);
  }

  /** First load: throws (PolicyError / PortcullisError) so the process can refuse to start. */
  async load(): Promise<CompiledPolicy> {
    try {
      const snapshot = await this.snapshot();
      const compiled = await this.compile(snapshot.text);
      this.swap(compiled, snapshot.hash);
      this.recordAttempt(true);
      return compiled;
    } catch (err) {
      this.recordAttempt(false);
      throw err;
    }
  }

  /**
   * Re-read the file and apply it once it is complete and stable; returns true when a new policy
   * went live or nothing changed. Never throws. Requests made while a reload is queued join it.
   */
  reload(): Promise<boolean> {
    if (this.queued) return this.queued;
    const next = this.reloading.then(async () => {
      this.queued = undefined;
      try {
        return await this.reloadNow();
      } catch (err) {
        // Never leave the chain rejected: the next event or poll must get its reload.
        this.runtime.logger.error({ err: (err as Error).message, file: this.file }, 'policy reload: unexpected error; keeping the current policy');
        return false;
      }
    });
    this.queued = next;
    this.reloading = next;
    return next;
  }

  watch(): void {
    const resolved = path.resolve(this.file);
    const dir = path.dirname(resolved);
    const base = path.basename(resolved);
    try {
      // Only the policy file's own entry, or the ConfigMap `..data` link swap, schedules a reload:
      // other files changing in the directory (a log file, editor swap files) never delay one.
      this.watcher = watch(dir, { persistent: false }, (_event, filename) => {
        if (filename === null || filename === base || filename === '..data') this.scheduleReload();
      });
      this.watcher.on('error', (err) => this.runtime.logger.warn({ err: err.message, dir }, 'policy watch failed; polling only'));
    } catch (err) {
      this.runtime.logger.warn({ err: (err as Error).message, dir }, 'cannot watch policy directory; polling only');
    }
    const poll = this.options.pollIntervalMs ?? 5000;
    if (poll > 0) {
      this.pollTimer = setInterval(() => void this.reload(), poll);
      this.pollTimer.unref();
    }
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
  }

  /** The first event of a burst sets the timer; later events ride on it (never postponing it). */
  private scheduleReload(): void {
    if (this.debounceTimer || this.closed) return;
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      void this.reload();
    }, this.options.debounceMs ?? 100);
    this.debounceTimer.unref();
  }

  private async reloadNow(): Promise<boolean> {
    if (this.closed) return true;
    const logger = this.runtime.logger;
    let stable: Snapshot | 'unchanged' | 'known-broken' | 'unsettled';
    try {
      stable = await this.readStable();
    } catch (err) {
      // Mid-swap a ConfigMap directory can briefly lack the file: keep the policy, retry on next event/poll.
      const message = (err as Error).message;
      if (this.failedOnce(`read:${message}`)) {
        logger.warn({ err: message, file: this.file }, 'policy reload: file unreadable; keeping the current policy');
      }
      return false;
    }
    if (stable === 'unchanged') {
      // Back to the content in force: a later write of a broken content is news again.
      this.lastFailure = undefined;
      return true;
    }
    if (stable === 'known-broken') return false;
    if (stable === 'unsettled') {
      if (!this.unsettledLogged) {
        this.unsettledLogged = true;
        logger.warn({ file: this.file, settleMs: this.settleMs }, 'policy reload: the file keeps changing; keeping the current policy until it is stable');
      }
      return false;
    }
    this.unsettledLogged = false;
    try {
      const compiled = await this.compile(stable.text);
      await waitAtMost(compiled.ready, this.options.reloadReadyTimeoutMs ?? 10_000).catch((err: unknown) =>
        logger.warn({ err: (err as Error).message }, 'policy reload: a dependency is not ready; swapping anyway'),
      );
      this.swap(compiled, stable.hash);
      this.lastFailure = undefined;
      this.recordAttempt(true);
      logger.info({ file: this.file, generation: this.generation }, 'policy reloaded');
      return true;
    } catch (err) {
      if (this.failedOnce(stable.hash)) {
        const problems = err instanceof PolicyError ? err.issues.map(formatPolicyIssue) : undefined;
        logger.error({ file: this.file, err: (err as Error).message, problems }, 'policy reload failed; keeping the last good policy');
      }
      return false;
    }
  }

  /** Count and report a failure only the first time it is seen; true when it is new. */
  private failedOnce(identity: string): boolean {
    if (identity === this.lastFailure) return false;
    this.lastFailure = identity;
    this.recordAttempt(false);
    return true;
  }

  private recordAttempt(success: boolean): void {
    this.runtime.metrics.policyReloads.inc({ result: success ? 'success' : 'failure' });
    this.lastReloadSuccess.set(success ? 1 : 0);
    if (success) this.lastReloadTimestamp.set(this.runtime.clock.now() / 1000);
  }

  private get settleMs(): number {
    return this.options.settleMs ?? DEFAULT_SETTLE_MS;
  }

  /**
   * The file's content once it has stopped changing: two reads settleMs apart with the same
   * content hash and the same size/mtime/inode (checked around each read). Content equal to the
   * policy in force is 'unchanged' at once, so polls of an unchanged file cost one read.
   */
  private async readStable(): Promise<Snapshot | 'unchanged' | 'known-broken' | 'unsettled'> {
    let previous: Snapshot | undefined;
    const rounds = this.options.maxSettleRounds ?? 20;
    for (let round = 0; round <= rounds && !this.closed; round++) {
      const current = await this.snapshot();
      if (current.hash === this.contentHash) return 'unchanged';
      if (current.hash === this.lastFailure) return 'known-broken';
      if (previous && current.stamp !== '' && previous.hash === current.hash && previous.stamp === current.stamp) return current;
      previous = current;
      await sleep(this.settleMs);
    }
    return this.closed ? 'unchanged' : 'unsettled';
  }

  private async snapshot(): Promise<Snapshot> {
    try {
      const before = await stat(this.file);
      if (before.size > MAX_POLICY_BYTES) {
        throw new PolicyError([{ file: this.file, path: [], message: `policy file is ${before.size} bytes; the limit is ${MAX_POLICY_BYTES}` }]);
      }
      const buffer = await readFile(this.file);
      if (buffer.length > MAX_POLICY_BYTES) {
        throw new PolicyError([{ file: this.file, path: [], message: `policy file is ${buffer.length} bytes; the limit is ${MAX_POLICY_BYTES}` }]);
      }
      const after = await stat(this.file);
      const stampOf = (s: Stats) => `${s.size}:${s.mtimeMs}:${s.ino}`;
      // A write between the two stats makes this snapshot inconsistent: it never counts as stable.
      const stamp = stampOf(before) === stampOf(after) && after.size === buffer.length ? stampOf(after) : '';
      return { text: buffer.toString('utf8'), hash: hash(buffer), stamp };
    } catch (err) {
      if (err instanceof PolicyError) throw err;
      throw new PortcullisError('POLICY_IO', `${this.file}: cannot read policy file: ${(err as Error).message}`, { cause: err });
    }
  }

  private async compile(text: string): Promise<CompiledPolicy> {
    const loaded = parsePolicyWithLocator(text, this.file, this.runtime.env);
    const pool = this.runtime.resources;
    pool.beginCompile();
    try {
      return compileLoaded(loaded, this.runtime, this.file);
    } catch (err) {
      await pool.rollback();
      throw err;
    }
  }

  private swap(compiled: CompiledPolicy, contentHash: string): void {
    this.policy = compiled;
    this.contentHash = contentHash;
    this.generation++;
    this.runtime.metrics.policyGeneration.set(this.generation);
    for (const warning of compiled.warnings) this.runtime.logger.warn(warning);
    void this.runtime.resources.commit();
    for (const listener of this.listeners) listener(compiled);
  }
}

/**
 * A gauge that `serve --workers N` aggregates with min rather than sum: 0 if any worker's last
 * reload failed; the oldest worker's last success.
 */
function minGauge(runtime: Runtime, name: string, help: string): Gauge {
  const existing = runtime.metrics.registry.getSingleMetric(name);
  if (existing) return existing as Gauge;
  return new Gauge({ name, help, labelNames: [], aggregator: 'min', registers: [runtime.metrics.registry] });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function hash(text: string | Buffer): string {
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
