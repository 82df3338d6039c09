// Policy schema of lookups (top-level `lookups:` map) and of the sources built on them: `session`,
// `introspection`, and the `lookup:` options of `apiKey` and `host`, plus `enrich`. Kept here so
// the lookup feature owns its schema (src/policy/schema.ts only puts it into the document).

import { z } from 'zod';
import { durationSchema, headerNameSchema } from '../policy/units.js';

const nonEmpty = z.string().min(1, 'must not be empty');
const httpUrl = z.url({ protocol: /^https?$/, message: 'must be an absolute http(s) URL' });

/** `a.b.c`, `a[0].b`, or a literal key (namespaced claims contain dots). */
export const jsonPathSchema = z.string().regex(/^[^\s[\]]+(\[\d+\])*(\.[^\s.[\]]+(\[\d+\])*)*$/, 'must be a JSON path such as a.b.c or a[0].b');

/** Where an answer's fields come from (paths into the lookup's JSON answer or SQL row). */
export const answerMapSchema = z.strictObject({
  tenant: jsonPathSchema.optional(),
  subject: jsonPathSchema.optional(),
  email: jsonPathSchema.optional(),
  /** Paths holding scopes: arrays of strings or space-delimited strings. */
  scopes: z.array(jsonPathSchema).default([]),
  /** ISO-8601 time, epoch seconds or epoch milliseconds: the answer is never used past it. */
  expiresAt: jsonPathSchema.optional(),
  /** API keys only: the key's id for x-auth-key-id. */
  keyId: jsonPathSchema.optional(),
  /** A path that must hold a truthy value for the answer to count (e.g. `session.id`, `valid`). */
  present: jsonPathSchema.optional(),
});
export type AnswerMapConfig = z.output<typeof answerMapSchema>;

export const lookupCacheSchema = z.strictObject({
  /** How long a found answer is used (never past its expiresAt). */
  ttl: durationSchema.default(30_000),
  /** How long "not found" is remembered. */
  negativeTtl: durationSchema.default(5_000),
  maxEntries: z.number().int().min(1).max(5_000_000).default(100_000),
});

/** What every lookup shares: limits, cache, fairness, breaker. */
const lookupLimitsShape = {
  /** One lookup (connect, request, response) must finish within this, else 503 lookup_unavailable. */
  timeout: durationSchema.default(1_000),
  cache: lookupCacheSchema.default(() => lookupCacheSchema.parse({})),
  /** Lookups in flight at once, over all clients. */
  maxInFlight: z.number().int().min(1).max(10_000).default(64),
  /** Lookups in flight at once for one client IP (a spray from one client cannot starve the rest). */
  perClientInFlight: z.number().int().min(1).max(10_000).default(8),
  breaker: z
    .strictObject({
      failures: z.number().int().min(1).default(5),
      cooldown: durationSchema.default(2_000),
    })
    .default({ failures: 5, cooldown: 2_000 }),
};

/** A string with `{{credential}}` placeholders. */
const templateSchema = z.string();

export const httpLookupSchema = z.strictObject({
  url: z.string().min(1, 'must not be empty'),
  method: z.enum(['GET', 'POST']).default('GET'),
  headers: z.record(headerNameSchema, templateSchema).default({}),
  /** A JSON body (string values are templates) or a form body. */
  json: z.record(z.string(), z.unknown()).optional(),
  form: z.record(z.string(), templateSchema).optional(),
  /** Statuses that mean "not found" (the credential is unknown); others than 2xx are failures. */
  notFound: z.array(z.number().int().min(200).max(599)).default([401, 403, 404]),
  maxResponseBytes: z.number().int().min(64).max(16 * 1024 * 1024).default(256 * 1024),
});
export type HttpLookupConfig = z.output<typeof httpLookupSchema>;

export const sqlLookupSchema = z.strictObject({
  /** postgres:// URL, normally "${DATABASE_URL}". */
  url: nonEmpty,
  /** A read-only query with $1 for the credential (or its SHA-256). First row is the answer. */
  query: nonEmpty,
  /** What $1 is: the credential itself, or its SHA-256 as hex / base64url. */
  param: z.enum(['credential', 'sha256-hex', 'sha256-base64url']).default('credential'),
  poolSize: z.number().int().min(1).max(100).default(4),
});
export type SqlLookupConfig = z.output<typeof sqlLookupSchema>;

export const lookupSchema = z
  .strictObject({
    http: httpLookupSchema.optional(),
    sql: sqlLookupSchema.optional(),
    ...lookupLimitsShape,
  })
  .superRefine((lookup, ctx) => {
    if ((lookup.http === undefined) === (lookup.sql === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'a lookup has exactly one of http or sql' });
    }
    if (lookup.perClientInFlight > lookup.maxInFlight) {
      ctx.addIssue({ code: 'custom', path: ['perClientInFlight'], message: 'must not exceed maxInFlight' });
    }
    if (lookup.timeout < 10 || lookup.timeout > 30_000) ctx.addIssue({ code: 'custom', path: ['timeout'], message: 'must be between 10ms and 30s' });
  });
export type LookupConfig = z.output<typeof lookupSchema>;

export const lookupsSchema = z.record(z.string().regex(/^[A-Za-z0-9_-]+$/, 'lookup names may contain letters, digits, _ and -'), lookupSchema);

/** `- session:` an opaque value in a cookie or header, resolved by a lookup. */
export const sessionSourceSchema = z
  .strictObject({
    cookie: nonEmpty.optional(),
    header: headerNameSchema.optional(),
    /** Name of a lookup in `lookups:`. */
    lookup: nonEmpty,
    map: answerMapSchema.default(() => answerMapSchema.parse({})),
    /** Scopes every session gets (seed 002: admin, storefront). */
    scopes: z.array(nonEmpty).default([]),
    /** Strip the cookie/header before the request goes upstream (default false: apps read it). */
    removeCredential: z.boolean().default(false),
  })
  .superRefine((s, ctx) => {
    if ((s.cookie === undefined) === (s.header === undefined)) ctx.addIssue({ code: 'custom', message: 'a session source has exactly one of cookie or header' });
  });
export type SessionSourceConfig = z.output<typeof sessionSourceSchema>;

/** `- introspection:` RFC 7662 for opaque bearer tokens. */
export const introspectionSourceSchema = z.strictObject({
  endpoint: httpUrl,
  clientId: nonEmpty,
  clientSecret: nonEmpty,
  /** client_secret_basic (default) or client_secret_post. */
  clientAuth: z.enum(['basic', 'post']).default('basic'),
  /** The token must carry one of these in `aud` (when set). */
  audiences: z.array(nonEmpty).min(1).optional(),
  /** Only tokens issued to these client_ids (when set). */
  clientIds: z.array(nonEmpty).min(1).optional(),
  /** Defaults: subject `sub`, scopes `scope`; `exp` is always honoured. */
  map: answerMapSchema.default(() => answerMapSchema.parse({})),
  scopes: z.array(nonEmpty).default([]),
  maxResponseBytes: z.number().int().min(64).max(16 * 1024 * 1024).default(64 * 1024),
  ...lookupLimitsShape,
});
export type IntrospectionSourceConfig = z.output<typeof introspectionSourceSchema>;

/** `apiKey: { lookup: … }`: the key is verified by an external store. */
export const externalKeySchema = z.strictObject({
  lookup: nonEmpty,
  map: answerMapSchema.default(() => answerMapSchema.parse({})),
  scopes: z.array(nonEmpty).default([]),
});
export type ExternalKeyConfig = z.output<typeof externalKeySchema>;

/** `host: { lookup: … }`: domains resolved by a store; `patterns` compute the tenant. */
export const hostStoreSchema = z.strictObject({
  lookup: nonEmpty,
  map: answerMapSchema.default(() => answerMapSchema.parse({ tenant: 'tenant', scopes: ['scopes'] })),
  scopes: z.array(nonEmpty).default([]),
});
export const hostPatternSchema = z.strictObject({
  /** "{tenant}.shops.example.com": one label captured as the tenant. */
  pattern: z.string().regex(/^\{tenant\}(\.[a-z0-9-]+)+$/i, 'must look like {tenant}.domain.example'),
  /** The tenant made of the label: "{tenant}" (default) or e.g. "org_{tenant}". */
  tenant: z.string().regex(/^[A-Za-z0-9_.:-]*\{tenant\}[A-Za-z0-9_.:-]*$/, 'must contain {tenant} once, with letters, digits, _ . : - around it').default('{tenant}'),
  scopes: z.array(nonEmpty).default([]),
});

/** One `enrich:` step: after identification, look more up about the principal (seed 002 agents). */
export const enrichSchema = z.strictObject({
  lookup: nonEmpty,
  /**
   * What is looked up: the principal's subject (default), tenant, email or key id, or
   * `claim:<name>`: a top-level claim (string or number) of the verified token.
   */
  by: z
    .union([z.enum(['subject', 'tenant', 'email', 'keyId']), z.string().regex(/^claim:[\x21-\x7e]{1,256}$/, 'must be subject, tenant, email, keyId or claim:<name>')])
    .default('subject'),
  /** Only principals proven by these methods (all when absent). */
  methods: z.array(z.enum(['jwt', 'api-key', 'host', 'shared-secret', 'session', 'introspection', 'peer'])).min(1).optional(),
  /**
   * Extra claims from the answer (claim name → JSON path), seen by expressions as
   * `auth.claims.<name>`; a claim of the verified token of the same name wins.
   */
  claims: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'must be a claim name: letters, digits and _'), jsonPathSchema).optional(),
  /** Only principals without a tenant (default true): "tenant from the token, else the first org membership". */
  onlyWithoutTenant: z.boolean().default(true),
  /** tenant, email replace the principal's; scopes are added. */
  map: answerMapSchema.default(() => answerMapSchema.parse({})),
  scopes: z.array(nonEmpty).default([]),
});
export type EnrichConfig = z.output<typeof enrichSchema>;
export const enrichListSchema = z.array(enrichSchema).max(8);
