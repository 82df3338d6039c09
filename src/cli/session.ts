// A compiled policy for one CLI run (check, test): the real compile with the real runtime, except
// for what the run says stands in for the outside world — JWKS issuers served from local key
// sets, and whatever a test file replaces (key store, rate-limit backend, clock).

import { readFileSync } from 'node:fs';
import type { Clock } from '../clock.js';
import { silentLogger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import type { CompiledPolicy } from '../policy/compile.js';
import { compileLoaded, type LoadedPolicy } from '../policy/load.js';
import type { PolicyDocument } from '../policy/schema.js';
import { ResourcePool, type Runtime } from '../runtime.js';
import { LocalJwks } from './local-jwks.js';

export interface SessionOptions {
  readonly file: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly clock: Clock;
  /** Issuer name → JWKS JSON text served to the pipeline instead of the issuer's own keys. */
  readonly keySets?: ReadonlyMap<string, string>;
  /** JWKS issuers without a key set get none: their tokens are refused (jwks_unavailable). */
  readonly offline?: boolean;
  /** Last changes to the document (test fixtures). */
  readonly rewrite?: (document: PolicyDocument) => void;
  /** How long to wait for JWKS and stores before deciding anyway (default 5s). */
  readonly readyTimeoutMs?: number;
}

export interface Session {
  readonly policy: CompiledPolicy;
  readonly runtime: Runtime;
  /** Issuers whose tokens this run cannot verify (offline without keys). */
  readonly unverifiable: readonly string[];
  close(): Promise<void>;
}

export function jwksIssuers(document: PolicyDocument): string[] {
  return Object.entries(document.issuers).filter(([, i]) => i.secret === undefined).map(([name]) => name);
}

/** Read `--jwks NAME=FILE` key files; throws with a usage message. */
export function readKeySets(flags: readonly string[]): Map<string, string> {
  const sets = new Map<string, string>();
  for (const flag of flags) {
    const eq = flag.indexOf('=');
    if (eq <= 0) throw new Error(`--jwks "${flag}" must be ISSUER=FILE`);
    const name = flag.slice(0, eq);
    const text = readFileSync(flag.slice(eq + 1), 'utf8');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error(`--jwks ${name}: ${flag.slice(eq + 1)} is not JSON`);
    }
    // A single JWK is accepted as a set of one.
    const set = parsed && typeof parsed === 'object' && Array.isArray((parsed as { keys?: unknown }).keys) ? parsed : { keys: [parsed] };
    sets.set(name, JSON.stringify(set));
  }
  return sets;
}

export async function openSession(loaded: LoadedPolicy, options: SessionOptions): Promise<Session> {
  const document = structuredClone(loaded.document) as PolicyDocument;
  const local = new LocalJwks();
  const unverifiable: string[] = [];
  for (const [name, set] of options.keySets ?? new Map<string, string>()) {
    if (!Object.hasOwn(document.issuers, name)) throw new Error(`--jwks ${name}: the policy has no issuer named "${name}"`);
    if (document.issuers[name]!.secret !== undefined) throw new Error(`--jwks ${name}: issuer ${name} verifies with a secret, not a JWKS`);
    local.set(name, set);
  }
  for (const name of jwksIssuers(document)) {
    if (!options.keySets?.has(name) && options.offline) {
      local.set(name, undefined);
      unverifiable.push(name);
    }
  }
  options.rewrite?.(document);
  await local.start();
  for (const [name, issuer] of Object.entries(document.issuers)) {
    if (!options.keySets?.has(name) && !unverifiable.includes(name)) continue;
    const mutable = issuer as { jwksUri?: string; discovery?: boolean; secret?: string; waitForKeys: boolean };
    mutable.jwksUri = local.url(name);
    mutable.discovery = undefined;
    mutable.secret = undefined;
    if (unverifiable.includes(name)) mutable.waitForKeys = false;
  }

  const runtime: Runtime = {
    clock: options.clock,
    logger: silentLogger(),
    metrics: new Metrics({ defaultMetrics: false }),
    resources: new ResourcePool(),
    env: options.env,
  };
  const close = async () => {
    await runtime.resources.closeAll();
    await local.close();
  };
  let policy: CompiledPolicy;
  try {
    runtime.resources.beginCompile();
    policy = compileLoaded({ ...loaded, document }, runtime, options.file);
    await runtime.resources.commit();
  } catch (err) {
    await close();
    throw err;
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    policy.ready.catch(() => undefined),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, options.readyTimeoutMs ?? 5000))),
  ]);
  clearTimeout(timer);
  return { policy, runtime, unverifiable, close };
}
