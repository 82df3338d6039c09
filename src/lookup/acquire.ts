// Compile-time side of lookups: checks the top-level `lookups:` section, and hands sources a
// CachedLookup for a named lookup. Targets (HTTP agent, PostgreSQL pool) and caches are long-lived
// resources in runtime.resources, so a policy reload that keeps a lookup keeps its cache and its
// connections. Nothing here connects: readiness never depends on a lookup target.

import { createHash } from 'node:crypto';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { Runtime } from '../runtime.js';
import { CachedLookup, type Decoded } from './cached-lookup.js';
import { HttpTarget, httpTemplateProblems, type HttpTargetOptions } from './http.js';
import type { LookupConfig } from './schema.js';
import { SqlTarget, sqlQueryProblem } from './sql.js';
import type { LookupTarget, TargetAnswer } from './target.js';

/** Report problems of every lookup in the policy (called once per compile). */
export function checkLookups(ctx: CompileContext): void {
  for (const [name, lookup] of Object.entries(ctx.policy.lookups ?? {})) {
    const at: PolicyPath = ['lookups', name];
    if (lookup.http) {
      for (const p of httpTemplateProblems(lookup.http)) ctx.error([...at, 'http', ...p.at], p.message);
      if (lookup.http.method === 'GET' && (lookup.http.json || lookup.http.form)) ctx.error([...at, 'http', 'method'], 'a request body (json or form) needs method: POST');
    }
    if (lookup.sql) {
      const problem = sqlQueryProblem(lookup.sql.query);
      if (problem) ctx.error([...at, 'sql', 'query'], problem);
    }
  }
}

/** Limits shared by named lookups and introspection sources. */
export type LookupLimits = Pick<LookupConfig, 'timeout' | 'cache' | 'maxInFlight' | 'perClientInFlight' | 'breaker'>;

/**
 * The CachedLookup a source uses for the named lookup; undefined (with a policy error reported at
 * `at`) when there is no such lookup. `variant` distinguishes sources that map answers differently.
 */
export function namedLookup<T>(
  name: string,
  at: PolicyPath,
  source: string,
  variant: string,
  decode: (answer: TargetAnswer, credential: string) => Decoded<T>,
  ctx: CompileContext,
): CachedLookup<T> | undefined {
  const lookups = ctx.policy.lookups ?? {};
  const config = Object.hasOwn(lookups, name) ? lookups[name] : undefined;
  if (!config) {
    const known = Object.keys(lookups);
    ctx.error(at, `unknown lookup "${name}" (${known.length > 0 ? `lookups defines ${known.join(', ')}` : 'the policy has no lookups section'})`);
    return undefined;
  }
  const runtime = ctx.runtime;
  // Keyed by a digest: the configuration may hold a database password or a token.
  const targetKey = `lookup-target:${name}:${digest(`${JSON.stringify(config.http ?? config.sql)}:${config.timeout}`)}`;
  const target = runtime.resources.acquire<LookupTarget>(
    targetKey,
    () =>
      config.http
        ? new HttpTarget(config.http as HttpTargetOptions)
        : new SqlTarget({ ...config.sql!, timeoutMs: config.timeout, name }, runtime.logger),
    (t) => t.close(),
  );
  return cachedLookup(runtime, `${targetKey}:${source}:${digest(variant)}`, target, name, source, config, decode);
}

export function cachedLookup<T>(
  runtime: Runtime,
  key: string,
  target: LookupTarget,
  lookup: string,
  source: string,
  limits: LookupLimits,
  decode: (answer: TargetAnswer, credential: string) => Decoded<T>,
): CachedLookup<T> {
  return runtime.resources.acquire(
    `lookup-cache:${key}:${JSON.stringify(limits)}`,
    () =>
      new CachedLookup<T>(
        target,
        {
          lookup,
          source,
          timeoutMs: limits.timeout,
          ttlMs: limits.cache.ttl,
          negativeTtlMs: limits.cache.negativeTtl,
          maxEntries: limits.cache.maxEntries,
          maxInFlight: limits.maxInFlight,
          perClientInFlight: limits.perClientInFlight,
          breakerFailures: limits.breaker.failures,
          breakerCooldownMs: limits.breaker.cooldown,
        },
        decode,
        runtime,
      ),
  );
}

/**
 * The fairness key of a client address: IPv4 as is, IPv6 by its /64 (one subscriber's network
 * holds 2^64 addresses; keying by the full address would let one client take every share).
 */
export function clientShareKey(ip: string): string {
  if (!ip.includes(':')) return ip;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  const zone = ip.indexOf('%');
  const address = (zone === -1 ? ip : ip.slice(0, zone)).toLowerCase();
  const [head = '', tail] = address.split('::', 2);
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/** Visible ASCII only (it may travel in a header or a URL), bounded length. */
export function plausibleCredential(value: string, maxLength = 4096): boolean {
  return value.length > 0 && value.length <= maxLength && /^[\x21-\x7E]+$/.test(value);
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('base64url');
}
