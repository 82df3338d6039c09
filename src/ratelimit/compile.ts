// rateLimits (+ tenants.*.limits, routes[i].rateLimits) → CompiledRateLimits. Everything is
// resolved here once per load: keys compiled to functions, plans to shapes, header texts built,
// metric children bound; the backend and ban list come from the resource pool so counters and
// connections survive reloads.

import { didYouMean } from '../policy/suggest.js';
import path from 'node:path';
import { describeMatch } from '../authz/routes.js';
import { credentialHeaderNames } from '../expr/credential-headers.js';
import type { CompileContext } from '../policy/context.js';
import type { RouteConfig } from '../policy/schema.js';
import { BanWatcher } from './bans-watcher.js';
import { FileBanStore } from './bans-file.js';
import { PostgresBanStore } from './bans-postgres.js';
import type { BackendConfig, BansConfig, LimitOverrideConfig, LimitPolicyConfig, RateLimitsConfig } from './config.js';
import { describeQuota } from './headers.js';
import { clientNetwork } from '../pipeline/client-ip.js';
import { Escalation, offenceKey } from './escalation.js';
import { compileKey } from './keys.js';
import { OverLimitMemory, RouteLimiter, type CompiledLimitPolicy, type SharedLimits, type Variant } from './limiter.js';
import { MemoryStore } from './memory-store.js';
import { BackendUnavailableError, RedisStore } from './redis-store.js';
import type { CompiledRateLimits, LimitPhase, LimitShape, LimitStore, LockoutShape } from './types.js';

const OVER_LIMIT_KEYS = 10_000;
const IDENTITY_PARTS: ReadonlySet<string> = new Set(['tenant', 'apiKey', 'subject']);

export function compileRateLimits(ctx: CompileContext): CompiledRateLimits | undefined {
  const config = ctx.policy.rateLimits;
  if (config === undefined) {
    reportOrphans(ctx);
    return undefined;
  }
  const store = acquireStore(config.backend, ctx);
  const bans = config.bans ? acquireBans(config.bans, ctx) : undefined;
  const policies = compilePolicies(config, ctx, store, bans);
  const byName = new Map(policies.map((p) => [p.name, p]));
  checkRoutes(config, byName, ctx);

  const metrics = ctx.runtime.metrics;
  const decisions = metrics.counter('portcullis_ratelimit_decisions_total', 'Rate-limit decisions by policy and result.', ['policy', 'result']);
  const shared: SharedLimits = {
    store,
    clock: ctx.runtime.clock,
    headerStyle: config.headers,
    quotaHeaders: config.quotaHeaders,
    failOpen: config.failure === 'open',
    bans,
    clientNetwork: { ipv4Prefix: ctx.policy.clientIp.ipv4Prefix, ipv6Prefix: ctx.policy.clientIp.ipv6Prefix },
    bannedCounter: decisions.labels('bans', 'banned'),
    bansUnavailableCounter: decisions.labels('bans', config.failure === 'open' ? 'fail_open' : 'fail_closed'),
    overLimit: store.kind === 'redis' ? new OverLimitMemory(OVER_LIMIT_KEYS) : undefined,
  };

  return {
    forRoute(routeName: string, route: RouteConfig | undefined, phase: LimitPhase = 'all') {
      const settings = route?.rateLimits;
      const applicable = settings?.exempt
        ? []
        : policies.filter(
            (p) =>
              (p.routes === undefined || p.routes.has(routeName)) &&
              !settings?.skip?.includes(p.name) &&
              (phase === 'all' || (phase === 'before-identity') === p.identityFree),
          );
      if (applicable.length === 0 && shared.bans === undefined) return undefined;
      return new RouteLimiter(shared, applicable.map((p) => p.compiled), settings?.cost);
    },
  };
}

interface PolicyEntry {
  readonly name: string;
  /** Keyed only by request facts (ip, route, method, host, header): evaluated before identification. */
  readonly identityFree: boolean;
  readonly routes: ReadonlySet<string> | undefined;
  readonly compiled: CompiledLimitPolicy;
  /** Largest cost any variant admits (burst or limit of the smallest plan). */
  readonly capacity: number;
}

function compilePolicies(config: RateLimitsConfig, ctx: CompileContext, store: LimitStore, bans: BanWatcher | undefined): PolicyEntry[] {
  const keyPrefix = 'redis' in config.backend ? config.backend.redis.keyPrefix : '';
  const decisions = ctx.runtime.metrics.counter('portcullis_ratelimit_decisions_total', 'Rate-limit decisions by policy and result.', ['policy', 'result']);
  const escalations = ctx.runtime.metrics.counter('portcullis_ratelimit_escalations_total', 'Lockouts counted towards escalation, bans they wrote, and lockouts that could not be counted (backend down), by policy.', ['policy', 'result']);
  if (bans !== undefined && config.policies.some((p) => p.escalate !== undefined)) {
    // Lifting an automatic ban (bans remove) resets its offence count, on whichever backend counts it.
    bans.onLifted(`${store.kind}:${keyPrefix}`, (record) => {
      if (record.kind !== 'ip' || record.source === undefined) return;
      const value = record.value.includes('/') ? record.value : clientNetwork(record.value, ctx.policy.clientIp.ipv4Prefix, ctx.policy.clientIp.ipv6Prefix);
      store.clearOffences(offenceKey(keyPrefix, record.source, value, record.route)).catch((err: unknown) => {
        ctx.runtime.logger.warn({ err: (err as Error).message }, 'could not reset the offences of a lifted ban');
      });
    });
  }
  const seen = new Set<string>();
  const entries: PolicyEntry[] = [];
  config.policies.forEach((policy, index) => {
    const at = ['rateLimits', 'policies', index] as const;
    if (seen.has(policy.name)) ctx.error([...at, 'name'], `duplicate policy name "${policy.name}"`);
    seen.add(policy.name);
    // A key is stored (memory, Redis key names) and shown (explanations): never a credential.
    policy.key.forEach((part, i) => {
      if (typeof part === 'object' && credentialHeaderNames(ctx.policy).has(part.header)) {
        ctx.error([...at, 'key', i], `header:${part.header} carries a credential of the identity chain and cannot be part of a key (keys are stored and shown in explanations): key by apiKey, subject or tenant`);
      }
    });

    const base = variantOf(policy.name, shapeOf(policy));
    const plans = compilePlans(policy, ctx);
    let capacity = capacityOf(base.shape);
    for (const plan of plans?.values() ?? []) if (plan) capacity = Math.min(capacity, capacityOf(plan.shape));
    if (policy.cost > capacity) ctx.error([...at, 'cost'], `cost ${policy.cost} exceeds what the policy ever admits at once (${capacity}): no request could pass`);

    const lockout: LockoutShape | undefined = policy.lockout
      ? { after: policy.lockout.after, withinMs: policy.lockout.within ?? policy.lockout.for, forMs: policy.lockout.for }
      : undefined;
    // Counted on every check: batched children (an addition each, handed over when read).
    const c = (result: string) => ctx.runtime.metrics.batchedChild(decisions, { policy: policy.name, result });
    let escalation: Escalation | undefined;
    if (policy.escalate !== undefined) {
      if (config.bans === undefined) ctx.error([...at, 'escalate'], 'escalate writes bans: rateLimits.bans must name the ban store');
      else if (bans !== undefined) {
        const e = (result: string) => escalations.labels(policy.name, result);
        escalation = new Escalation(policy.name, policy.escalate, store, keyPrefix, bans, ctx.runtime.clock, ctx.runtime.logger, { offences: e('lockout'), bans: e('ban'), errors: e('error') }, {
          ipv4Prefix: ctx.policy.clientIp.ipv4Prefix,
          ipv6Prefix: ctx.policy.clientIp.ipv6Prefix,
        });
      }
    }
    entries.push({
      name: policy.name,
      identityFree: policy.key.every((part) => typeof part === 'object' || !IDENTITY_PARTS.has(part)),
      routes: policy.routes ? new Set(policy.routes) : undefined,
      capacity,
      compiled: {
        name: policy.name,
        keyOf: compileKey(keyPrefix, policy.name, policy.key, ctx.policy.clientIp),
        base,
        plans,
        lockout,
        escalation,
        cost: policy.cost,
        shadow: policy.shadow,
        failOpen: (policy.failure ?? config.failure) === 'open',
        counters: {
          allowed: c('allowed'),
          rateLimited: c('rate_limited'),
          lockedOut: c('locked_out'),
          shadowRateLimited: c('shadow_rate_limited'),
          shadowLockedOut: c('shadow_locked_out'),
          failOpen: c('fail_open'),
          failClosed: c('fail_closed'),
        },
      },
    });
  });
  return entries;
}

function shapeOf(numbers: { rate?: { count: number; periodMs: number }; burst?: number; window?: number; limit?: number }): LimitShape {
  if (numbers.rate !== undefined) {
    const intervalMs = numbers.rate.periodMs / numbers.rate.count;
    const burst = numbers.burst ?? Math.max(1, Math.round(numbers.rate.count));
    return { algorithm: 'bucket', intervalMs, burst, toleranceMs: burst * intervalMs };
  }
  return { algorithm: 'window', limit: numbers.limit!, windowMs: numbers.window! };
}

function variantOf(policyName: string, shape: LimitShape): Variant {
  return Object.freeze({ shape: Object.freeze(shape), quota: describeQuota(policyName, shape) });
}

function capacityOf(shape: LimitShape): number {
  return shape.algorithm === 'bucket' ? shape.burst : shape.limit;
}

/** tenants.<t>.limits.<policy> for this policy → tenant → variant (null: unlimited). */
function compilePlans(policy: LimitPolicyConfig, ctx: CompileContext): Map<string, Variant | null> | undefined {
  let plans: Map<string, Variant | null> | undefined;
  for (const [tenant, tenantConfig] of Object.entries(ctx.policy.tenants)) {
    const override = tenantConfig.limits?.[policy.name];
    if (override === undefined) continue;
    const at = ['tenants', tenant, 'limits', policy.name];
    const variant = overrideVariant(policy, override, at, ctx);
    if (variant !== undefined) (plans ??= new Map()).set(tenant, variant);
  }
  return plans;
}

function overrideVariant(policy: LimitPolicyConfig, o: LimitOverrideConfig, at: (string | number)[], ctx: CompileContext): Variant | null | undefined {
  const given = (['rate', 'burst', 'window', 'limit'] as const).filter((k) => o[k] !== undefined);
  if (o.unlimited) {
    if (given.length > 0) ctx.error(at, `unlimited: true takes no ${given.join(', ')}`);
    return null;
  }
  if (given.length === 0) {
    ctx.error(at, 'an override needs rate/burst, window/limit or unlimited: true');
    return undefined;
  }
  if (policy.rate !== undefined) {
    if (o.window !== undefined || o.limit !== undefined) {
      ctx.error(at, `policy "${policy.name}" is a token bucket: override it with rate and/or burst`);
      return undefined;
    }
    // A new rate without a burst gets the rate's own default burst, not the policy's.
    const rate = o.rate ?? policy.rate;
    const burst = o.burst ?? (o.rate !== undefined ? undefined : policy.burst);
    return variantOf(policy.name, shapeOf({ rate, burst }));
  }
  if (o.rate !== undefined || o.burst !== undefined) {
    ctx.error(at, `policy "${policy.name}" is a sliding window: override it with window and/or limit`);
    return undefined;
  }
  return variantOf(policy.name, shapeOf({ window: o.window ?? policy.window, limit: o.limit ?? policy.limit }));
}

/** Names used in policies' `routes` and routes' `rateLimits` must exist; route costs must fit. */
function checkRoutes(config: RateLimitsConfig, byName: ReadonlyMap<string, PolicyEntry>, ctx: CompileContext): void {
  const routeNames = new Set(['default', ...ctx.policy.routes.map((r) => r.name ?? describeMatch(r.match))]);
  config.policies.forEach((policy, index) => {
    policy.routes?.forEach((name, i) => {
      if (!routeNames.has(name)) ctx.error(['rateLimits', 'policies', index, 'routes', i], `no route is named "${name}"${didYouMean(name, routeNames)} (name routes with name:, or use "default")`);
    });
  });
  for (const [tenant, tenantConfig] of Object.entries(ctx.policy.tenants)) {
    for (const name of Object.keys(tenantConfig.limits ?? {})) {
      if (!byName.has(name)) ctx.error(['tenants', tenant, 'limits', name], `no rate-limit policy is named "${name}"${didYouMean(name, byName.keys())}`);
    }
  }
  ctx.policy.routes.forEach((route, index) => {
    const settings = route.rateLimits;
    if (settings === undefined) return;
    const at = ['routes', index, 'rateLimits'];
    settings.skip?.forEach((name, i) => {
      if (!byName.has(name)) ctx.error([...at, 'skip', i], `no rate-limit policy is named "${name}"${didYouMean(name, byName.keys())}`);
    });
    if (settings.exempt && settings.skip) ctx.warn([...at, 'skip'], 'has no effect: the route is exempt from every policy');
    if (settings.cost !== undefined && !settings.exempt) {
      const routeName = route.name ?? describeMatch(route.match);
      for (const entry of byName.values()) {
        const applies = (entry.routes === undefined || entry.routes.has(routeName)) && !settings.skip?.includes(entry.name);
        if (applies && settings.cost > entry.capacity) {
          ctx.error([...at, 'cost'], `cost ${settings.cost} exceeds what policy "${entry.name}" ever admits at once (${entry.capacity})`);
        }
      }
    }
  });
}

/** Plans or route settings without a rateLimits section would silently do nothing. */
function reportOrphans(ctx: CompileContext): void {
  for (const [tenant, tenantConfig] of Object.entries(ctx.policy.tenants)) {
    if (tenantConfig.limits !== undefined) ctx.error(['tenants', tenant, 'limits'], 'there is no rateLimits section for these limits to override');
  }
  ctx.policy.routes.forEach((route, index) => {
    if (route.rateLimits !== undefined) ctx.error(['routes', index, 'rateLimits'], 'there is no rateLimits section');
  });
}

function acquireStore(backend: BackendConfig, ctx: CompileContext): LimitStore {
  const { runtime } = ctx;
  if ('memory' in backend) {
    const maxKeys = backend.memory.maxKeys;
    return runtime.resources.acquire(`ratelimit:memory:${maxKeys}`, () => new MemoryStore(runtime.clock, maxKeys));
  }
  // `portcullis validate` compiles without connecting anywhere.
  if (runtime.offline) return OFFLINE_STORE;
  const config = backend.redis;
  const store = runtime.resources.acquire(
    `ratelimit:redis:${JSON.stringify(config)}`,
    () => new RedisStore({ config, clock: runtime.clock, logger: runtime.logger, metrics: runtime.metrics }),
    (s) => s.close(),
  );
  ctx.waitFor('rate-limit backend (redis)', store.ready);
  return store;
}

const OFFLINE_STORE: LimitStore = {
  kind: 'redis',
  check() {
    throw new BackendUnavailableError('error', 'compiled offline: no rate-limit backend', 1000);
  },
  recordOffence: () => Promise.reject(new BackendUnavailableError('error', 'compiled offline: no rate-limit backend', 1000)),
  clearOffences: () => Promise.resolve(),
};

function acquireBans(config: BansConfig, ctx: CompileContext): BanWatcher | undefined {
  const { runtime } = ctx;
  let url: string | undefined;
  if (config.postgres) {
    url = config.postgres.url ?? runtime.env.DATABASE_URL;
    if (url === undefined) {
      ctx.error(['rateLimits', 'bans', 'postgres', 'url'], 'is required (or set DATABASE_URL)');
      return undefined;
    }
  }
  if (runtime.offline) return undefined;
  const pg = config.postgres;
  const watcher = runtime.resources.acquire(
    `ratelimit:bans:${JSON.stringify({ ...config, url })}`,
    () => {
      // A relative ban file is relative to the policy file, like keyStore.file.path.
      const store = pg ? new PostgresBanStore({ url: url!, schema: pg.schema, table: pg.table }) : new FileBanStore(path.resolve(path.dirname(ctx.file), config.file!));
      return new BanWatcher(store, config.refresh, runtime.clock, runtime.logger, runtime.metrics);
    },
    (w) => w.close(),
  );
  ctx.waitFor('ban list', watcher.firstAttempt);
  return watcher;
}
