// The rate-limit sections of the policy file: top-level `rateLimits`, `tenants.<name>.limits`
// (plans) and `routes[i].rateLimits`. Strict objects throughout; cross-references (policy and
// route names, plan shapes) are checked by compile.ts.

import { z } from 'zod';
import { durationSchema, headerNameSchema, parseDuration, rateSchema } from '../policy/units.js';

const POLICY_NAME = /^[A-Za-z0-9_.-]+$/;
const policyNameSchema = z.string().regex(POLICY_NAME, 'policy names may contain letters, digits, _ . and -');

/** One part of a limit key. `header:NAME` keys by a request header value. */
export const KEY_PARTS = ['tenant', 'apiKey', 'subject', 'ip', 'route', 'method', 'host'] as const;
export type SimpleKeyPart = (typeof KEY_PARTS)[number];
export type KeyPart = SimpleKeyPart | { readonly header: string };

const keyPartSchema = z.string().transform((value, ctx): KeyPart => {
  if ((KEY_PARTS as readonly string[]).includes(value)) return value as SimpleKeyPart;
  if (value.startsWith('header:')) {
    const parsed = headerNameSchema.safeParse(value.slice('header:'.length));
    if (parsed.success) return { header: parsed.data };
  }
  ctx.addIssue({ code: 'custom', message: `invalid key part "${value}": use ${KEY_PARTS.join(', ')} or header:NAME` });
  return z.NEVER;
});

const countSchema = z.number().int('must be a whole number').positive('must be at least 1');

export const lockoutSchema = z.strictObject({
  /** Violations (denied requests) that trigger the lockout. */
  after: countSchema,
  /** Violations are counted in a window that starts with the first one; defaults to `for`. */
  within: durationSchema.optional(),
  /** How long the key stays locked out. */
  for: durationSchema.refine((ms) => ms >= 1000, 'must be at least 1s'),
});
export type LockoutConfig = z.output<typeof lockoutSchema>;

/**
 * Repeat offenders (seed 004): `after` lockouts of this policy within `within` ban the offender,
 * permanently or for a duration, from every route (scope ip) or the route it was locked out of
 * (scope ip+route). The ban is written to rateLimits.bans.
 */
export const escalateSchema = z.strictObject({
  after: countSchema,
  within: durationSchema.refine((ms) => ms >= 1000, 'must be at least 1s'),
  ban: z.union([z.literal('permanent'), z.string(), z.number()]).transform((value, ctx): number | 'permanent' => {
    if (value === 'permanent') return value;
    const ms = typeof value === 'number' ? Math.round(value * 1000) : parseDuration(value);
    if (ms === undefined || ms < 1000) {
      ctx.addIssue({ code: 'custom', message: 'must be permanent or a duration such as 30d' });
      return z.NEVER;
    }
    return ms;
  }),
  scope: z.enum(['ip', 'ip+route'], { message: 'must be ip or ip+route' }),
});
export type EscalateConfig = z.output<typeof escalateSchema>;

const failureSchema = z.enum(['open', 'closed']);

export const limitPolicySchema = z
  .strictObject({
    name: policyNameSchema,
    /** What is counted together: one counter per distinct combination of these parts. */
    key: z.array(keyPartSchema).min(1, 'needs at least one key part'),
    /** Token bucket (GCRA): sustained rate ... */
    rate: rateSchema.optional(),
    /** ... and how many requests may come at once (bucket size); defaults to the rate's count. */
    burst: countSchema.optional(),
    /** Sliding window (exact log): at most `limit` requests in any `window`. */
    window: durationSchema.refine((ms) => ms >= 1, 'must be positive').optional(),
    limit: countSchema.max(100_000, 'a sliding window keeps one entry per request: use rate/burst above 100000').optional(),
    lockout: lockoutSchema.optional(),
    /** Repeated lockouts become bans (needs lockout, ip in the key and rateLimits.bans). */
    escalate: escalateSchema.optional(),
    /** Units one request consumes (routes may override). */
    cost: countSchema.default(1),
    /** Evaluate, log and count, never deny. */
    shadow: z.boolean().default(false),
    /** What to do when the backend cannot answer; defaults to rateLimits.failure. */
    failure: failureSchema.optional(),
    /** Route names this policy applies to ("default" = requests no route matches); all routes when absent. */
    routes: z.array(z.string().min(1)).min(1).optional(),
  })
  .superRefine((policy, ctx) => {
    const bucket = policy.rate !== undefined || policy.burst !== undefined;
    const window = policy.window !== undefined || policy.limit !== undefined;
    if (bucket === window) {
      ctx.addIssue({ code: 'custom', message: 'a policy has either rate (and optional burst) or window and limit' });
    } else if (bucket && policy.rate === undefined) {
      ctx.addIssue({ code: 'custom', path: ['rate'], message: 'burst needs a rate' });
    } else if (window && (policy.window === undefined || policy.limit === undefined)) {
      ctx.addIssue({ code: 'custom', path: [policy.window === undefined ? 'window' : 'limit'], message: 'a sliding window needs both window and limit' });
    }
    if (policy.escalate !== undefined) {
      if (policy.lockout === undefined) ctx.addIssue({ code: 'custom', path: ['escalate'], message: 'escalate needs a lockout (it counts lockouts)' });
      if (!policy.key.includes('ip')) ctx.addIssue({ code: 'custom', path: ['escalate', 'scope'], message: `scope ${policy.escalate.scope} needs ip in the policy key` });
    }
  });
export type LimitPolicyConfig = z.output<typeof limitPolicySchema>;

const hostPortSchema = z.string().regex(/^[^\s:]+:\d{1,5}$/, 'must be host:port');
const redisUrlSchema = z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL');

export const redisBackendSchema = z
  .strictObject({
    /** Standalone Redis: redis://[:password@]host:port[/db] (rediss:// for TLS). */
    url: redisUrlSchema.optional(),
    /** Redis Cluster seed nodes (redis:// URLs); keys are hash-tagged per counter. */
    cluster: z
      .strictObject({
        nodes: z.array(redisUrlSchema).min(1),
        password: z.string().optional(),
        username: z.string().optional(),
      })
      .optional(),
    /** Redis Sentinel: the master's name and the sentinels to ask. */
    sentinel: z
      .strictObject({
        name: z.string().min(1),
        sentinels: z.array(hostPortSchema).min(1),
        password: z.string().optional(),
        sentinelPassword: z.string().optional(),
        db: z.number().int().min(0).default(0),
      })
      .optional(),
    /** Prepended to every key; must not contain { or } (each counter's hash tag follows it). */
    keyPrefix: z.string().max(64).regex(/^[^{}]*$/, 'must not contain { or }: the hash tag of each counter follows the prefix').default('portcullis:rl:'),
    /** Per-check deadline; a slower answer counts as a backend failure. */
    timeout: durationSchema.refine((ms) => ms >= 1 && ms <= 5000, 'must be between 1ms and 5s').default(20),
    /** server: Redis TIME inside the script (exact across instances); local: this instance's clock. */
    time: z.enum(['server', 'local']).default('server'),
    circuitBreaker: z
      .strictObject({
        /** Consecutive failures that open the breaker. */
        failures: countSchema.default(5),
        /** How long checks skip Redis before one probe is let through. */
        cooldown: durationSchema.refine((ms) => ms >= 100, 'must be at least 100ms').default(2000),
      })
      .default({ failures: 5, cooldown: 2000 }),
  })
  .superRefine((redis, ctx) => {
    const kinds = [redis.url, redis.cluster, redis.sentinel].filter((k) => k !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', message: 'redis needs exactly one of url, cluster, sentinel' });
  });
export type RedisBackendConfig = z.output<typeof redisBackendSchema>;

export const memoryBackendSchema = z.strictObject({
  /** Counters kept at most; the least recently used are dropped beyond this (bounded memory). */
  maxKeys: countSchema.default(100_000),
});

const backendSchema = z
  .union([
    z.literal('memory').transform(() => ({ memory: memoryBackendSchema.parse({}) })),
    z.strictObject({ memory: memoryBackendSchema }),
    z.strictObject({ redis: redisBackendSchema }),
  ], { error: 'must be memory, { memory: { maxKeys } } or { redis: { url | cluster | sentinel, ... } }' })
  .default({ memory: { maxKeys: 100_000 } });
export type BackendConfig = { memory: z.output<typeof memoryBackendSchema> } | { redis: RedisBackendConfig };

export const bansSchema = z
  .strictObject({
    /** JSON file written by `portcullis bans`; re-read when it changes. */
    file: z.string().min(1).optional(),
    postgres: z
      .strictObject({
        /** Defaults to the DATABASE_URL environment variable. */
        url: z.string().min(1).optional(),
        schema: z.string().regex(/^[a-z_][a-z0-9_]*$/, 'must be a lower-case SQL identifier').default('public'),
        table: z.string().regex(/^[a-z_][a-z0-9_]*$/, 'must be a lower-case SQL identifier').default('portcullis_bans'),
      })
      .optional(),
    /** How often the ban list is re-read. */
    refresh: durationSchema.refine((ms) => ms >= 100, 'must be at least 100ms').default(10_000),
  })
  .superRefine((bans, ctx) => {
    if ((bans.file === undefined) === (bans.postgres === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'bans needs exactly one of file, postgres' });
    }
  });
export type BansConfig = z.output<typeof bansSchema>;

export const rateLimitsSchema = z.strictObject({
  backend: backendSchema,
  /** Default for policies without their own `failure`: closed = 503 ratelimit_unavailable. */
  failure: failureSchema.default('closed'),
  /** draft: RateLimit-Policy + RateLimit (draft-ietf-httpapi-ratelimit-headers-09); legacy: X-RateLimit-*. */
  headers: z.enum(['draft', 'legacy', 'none']).default('draft'),
  /** Also send quota headers on allowed responses (response_headers_to_add). */
  quotaHeaders: z.boolean().default(false),
  bans: bansSchema.optional(),
  policies: z.array(limitPolicySchema).default([]),
});
export type RateLimitsConfig = z.output<typeof rateLimitsSchema>;

/** A plan's override of one policy: the same algorithm, other numbers, or no limit at all. */
export const limitOverrideSchema = z.strictObject({
  rate: rateSchema.optional(),
  burst: countSchema.optional(),
  window: durationSchema.refine((ms) => ms >= 1, 'must be positive').optional(),
  limit: countSchema.max(100_000).optional(),
  /** This tenant is not limited by the policy. */
  unlimited: z.literal(true).optional(),
});
export type LimitOverrideConfig = z.output<typeof limitOverrideSchema>;

/** Per-tenant overrides (plans): tenants.<name>.limits.<policy name> */
export const tenantLimitsSchema = z.record(policyNameSchema, limitOverrideSchema);
export type TenantLimitsConfig = z.output<typeof tenantLimitsSchema>;

/** Per-route rate-limit settings: routes[i].rateLimits */
export const routeRateLimitsSchema = z.strictObject({
  /** No rate-limit policy applies on this route (bans still do). */
  exempt: z.boolean().default(false),
  /** Policies that do not apply on this route. */
  skip: z.array(policyNameSchema).min(1).optional(),
  /** Units a request on this route consumes in every policy (instead of the policy's cost). */
  cost: countSchema.optional(),
});
export type RouteRateLimitsConfig = z.output<typeof routeRateLimitsSchema>;
