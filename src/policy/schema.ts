// The policy file's schema. Every object is strict: an unknown key is an error, never ignored.
// Each module owns the schema of its own section (jwt/config.ts, keys/config.ts,
// ratelimit/config.ts); this file puts the document together.

import { z } from 'zod';
import { issuerSchema, jwtSourceSchema } from '../jwt/config.js';
import { apiKeySourceSchema, keyStoreSchema } from '../keys/config.js';
import { denyBodySchema } from './deny-body.js';
import { rateLimitsSchema, routeRateLimitsSchema, tenantLimitsSchema } from '../ratelimit/config.js';
import { hostRuleProblem } from '../authz/host.js';
import { AUTH_METHODS } from '../types.js';
import { identityTokenSchema, peerSourceSchema, routeIdentityTokenSchema } from '../mesh/config.js';
import { durationSchema, headerNameSchema } from './units.js';
import { enrichListSchema, hostPatternSchema as tenantHostPatternSchema, hostStoreSchema, introspectionSourceSchema, lookupsSchema, sessionSourceSchema } from '../lookup/schema.js';

const nonEmpty = z.string().min(1, 'must not be empty');

/** A CEL expression (README "Expressions (CEL)"); parsed and type-checked at compile time. */
const expression = z.string().min(1, 'must not be empty');

/** Reason codes a policy defines for its rules: the syntax of the built-in ones (src/reasons.ts). */
export const POLICY_REASON_PATTERN = /^[a-z][a-z0-9_]{1,47}$/;

/**
 * Identity computed by expressions over `request.*` and `auth.*` (the principal the source just
 * proved, with its token claims): each given value replaces what the source set.
 */
export const computeSchema = z
  .strictObject({
    tenant: expression.optional(),
    subject: expression.optional(),
    scopes: expression.optional(),
  })
  .refine((c) => c.tenant !== undefined || c.subject !== undefined || c.scopes !== undefined, { message: 'compute needs tenant, subject or scopes' });
export type ComputeConfig = z.output<typeof computeSchema>;
/**
 * A host rule: exact name or "*.example.com", optionally with a port ("admin.example.com:8443").
 * Without a port it matches the scheme's default port only (README "Paths, hosts and client addresses").
 */
const hostPatternSchema = z.string().regex(/^(\*\.)?[a-z0-9._-]+(:[0-9]{1,5})?$/i, 'must be a host name or *.domain wildcard');
const hostRuleSchema = hostPatternSchema.superRefine((rule, ctx) => {
  const problem = hostRuleProblem(rule.toLowerCase());
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** A record keyed by host rules (zod reports refinements of record keys without their message). */
function hostRecord<T extends z.ZodTypeAny>(value: T) {
  return z.record(hostPatternSchema, value).superRefine((record, ctx) => {
    for (const rule of Object.keys(record)) {
      const problem = hostRuleProblem(rule.toLowerCase());
      if (problem) ctx.addIssue({ code: 'custom', path: [rule], message: problem });
    }
  });
}

/** How a path that is not canonical is judged, and whether the upstream ignores case. */
export const pathSettingsSchema = z.strictObject({
  /** refuse: 400 invalid_path. strictest: allowed only if every route any reading reaches allows it. */
  nonCanonical: z.enum(['refuse', 'strictest']).optional(),
  /** sensitive, insensitive, or unknown (both readings, the stricter decides). */
  upstreamCase: z.enum(['sensitive', 'insensitive', 'unknown']).optional(),
});
export type PathSettings = z.output<typeof pathSettingsSchema>;

export const pathsSchema = z.strictObject({
  nonCanonical: z.enum(['refuse', 'strictest']).default('refuse'),
  upstreamCase: z.enum(['sensitive', 'insensitive', 'unknown']).default('unknown'),
  /** Per-host overrides ("legacy.example.com" or "*.example.com"). */
  hosts: hostRecord(pathSettingsSchema).default({}),
});

/** Host header → tenant with fixed scopes (seed 002 storefronts). */
export const hostSourceSchema = z.strictObject({
  /** Exact host names or "*.example.com" wildcards (port ignored, case-insensitive). */
  domains: hostRecord(
    z.strictObject({
      tenant: nonEmpty,
      scopes: z.array(nonEmpty).default([]),
      subject: nonEmpty.optional(),
    }),
  )
    .default({}),
  /** "{tenant}.shops.example.com": the tenant is the host's first label (src/lookup). */
  patterns: z.array(tenantHostPatternSchema).default([]),
  /** Domains resolved by a lookup (a tenant_domains table, an API); cached, unknown hosts too. */
  store: hostStoreSchema.optional(),
});
export type HostSourceConfig = z.output<typeof hostSourceSchema>;

/** A shared secret in a header (seed 002 webhooks); compared in constant time. */
export const sharedSecretSourceSchema = z.strictObject({
  header: headerNameSchema,
  /** The secret itself, normally "${ENV_VAR}". At least 16 characters. */
  secret: z.string().min(16, 'must be at least 16 characters (use a generated secret)'),
  /** Tenant and scopes the caller gets once the secret matches. */
  tenant: nonEmpty.optional(),
  subject: nonEmpty.default('shared-secret'),
  scopes: z.array(nonEmpty).default([]),
  /** Strip the secret header before the request goes upstream (default true). */
  removeHeader: z.boolean().default(true),
});
export type SharedSecretSourceConfig = z.output<typeof sharedSecretSourceSchema>;

/** One entry of a caller-resolution chain: exactly one of its keys. */
export const identitySourceSchema = z
  .strictObject({
    jwt: jwtSourceSchema.optional(),
    apiKey: apiKeySourceSchema.optional(),
    host: hostSourceSchema.optional(),
    sharedSecret: sharedSecretSourceSchema.optional(),
    /** Workload identity from mTLS (Envoy's source.principal). */
    peer: peerSourceSchema.optional(),
    /** Tenant, subject or scopes computed by expressions once this source has identified the caller. */
    compute: computeSchema.optional(),
    session: sessionSourceSchema.optional(),
    introspection: introspectionSourceSchema.optional(),
  })
  .superRefine((entry, ctx) => {
    const kinds = Object.keys(entry).filter((k) => k !== 'compute' && entry[k as keyof typeof entry] !== undefined);
    if (kinds.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: `an identity source has exactly one of jwt, apiKey, host, sharedSecret, session, introspection, peer (found ${kinds.length === 0 ? 'none' : kinds.join(', ')})`,
      });
    }
  });
export type IdentitySourceConfig = z.output<typeof identitySourceSchema>;

const methodSchema = z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT'], {
  message: 'must be an HTTP method in upper case (GET, POST, ...)',
});

export const routeMatchSchema = z
  .strictObject({
    /** Exact host or "*.example.com"; any host when absent. */
    host: hostRuleSchema.optional(),
    methods: z.array(methodSchema).min(1).optional(),
    /** Exact path, or a template when it contains {name} segments: /v1/items/{id}. */
    path: z.string().startsWith('/', 'must start with "/"').optional(),
    /** Path prefix; "/v1/admin/" matches "/v1/admin/x" (and "/v1/admin" itself). */
    pathPrefix: z.string().startsWith('/', 'must start with "/"').optional(),
    /** Glob: "*" is one segment or part of one, "**" any number of segments. */
    pathGlob: z.string().startsWith('/', 'must start with "/"').optional(),
    /** Schemes the route accepts; a request in another scheme is refused (403 scheme_not_allowed). */
    schemes: z.array(z.enum(['http', 'https'], { message: 'must be "http" or "https"' })).min(1).optional(),
    /**
     * Query parameters the route requires: `present`, or a bool expression (request.query.<name>
     * is then known to exist). Missing → 400 missing_query_parameter; false → 400 invalid_query_parameter.
     */
    query: z.record(z.string().regex(/^[A-Za-z0-9_.~-]{1,64}$/, 'must be a query parameter name (letters, digits, _ . ~ -)'), expression).optional(),
  })
  .superRefine((match, ctx) => {
    const kinds = [match.path, match.pathPrefix, match.pathGlob].filter((p) => p !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', message: 'a route match has exactly one of path, pathPrefix, pathGlob' });
  });

export const requireSchema = z
  .strictObject({
    allOf: z.array(nonEmpty).min(1).optional(),
    anyOf: z.array(nonEmpty).min(1).optional(),
  })
  .refine((r) => r.allOf !== undefined || r.anyOf !== undefined, { message: 'require needs allOf, anyOf or both' });

/** One route rule: deny with `deny` when `when` is true, or unless `unless` is true. */
export const ruleSchema = z
  .strictObject({
    when: expression.optional(),
    unless: expression.optional(),
    deny: z.strictObject({
      status: z.union([z.literal(400), z.literal(401), z.literal(403), z.literal(404)], { message: 'must be 400, 401, 403 or 404' }).default(403),
      reason: z.string().regex(POLICY_REASON_PATTERN, 'must be a reason code: lower-case letters, digits and _, starting with a letter (2-48 characters)'),
      /** Sent to the client in the JSON body's "message". */
      message: z.string().max(200, 'must be at most 200 characters').regex(/^[^\x00-\x1f\x7f]*$/, 'must not contain control characters').optional(),
    }),
  })
  .superRefine((rule, ctx) => {
    if ((rule.when === undefined) === (rule.unless === undefined)) ctx.addIssue({ code: 'custom', message: 'a rule has exactly one of when, unless' });
  });
export type RuleConfig = z.output<typeof ruleSchema>;

export const routeSchema = z.strictObject({
  /** Name for logs, metrics and dynamic metadata; derived from the match when absent. */
  name: z.string().regex(/^[A-Za-z0-9_.:/{}*-]+$/, 'may contain letters, digits and _ . : / { } * -').optional(),
  match: routeMatchSchema,
  /** No credential needed; identity headers are still stripped from the request. */
  public: z.boolean().default(false),
  require: requireSchema.optional(),
  /** Credential methods accepted on this route (any when absent). */
  credentials: z.array(z.enum(AUTH_METHODS as [string, ...string[]])).min(1).optional(),
  /** Tenants allowed on this route (any when absent). */
  tenants: z.array(nonEmpty).min(1).optional(),
  /** Whether a caller without a tenant is refused (missing_tenant); defaults to the top-level requireTenant. */
  requireTenant: z.boolean().optional(),
  /** Caller-resolution chain for this route instead of the top-level one (e.g. webhooks). */
  identity: z.array(identitySourceSchema).min(1).optional(),
  /** Extra request headers to strip upstream on this route. */
  removeHeaders: z.array(headerNameSchema).optional(),
  rateLimits: routeRateLimitsSchema.optional(),
  /** Shorthand for one rule: 403 condition_failed unless this expression is true. Checked before `rules`. */
  when: expression.optional(),
  /** Checked in order after identification and the route's scope/tenant checks; the first that fails denies. */
  rules: z.array(ruleSchema).min(1).max(32).optional(),
  /** Overrides of the top-level `paths` settings for requests whose readings reach this route. */
  paths: pathSettingsSchema.optional(),
  /** This route's identity token: another audience, or false for none (README "Identity token for upstreams"). */
  identityToken: routeIdentityTokenSchema.optional(),
});
export type RouteConfig = z.output<typeof routeSchema>;

export const headerNamesSchema = z.strictObject({
  tenant: headerNameSchema.default('x-tenant-id'),
  subject: headerNameSchema.default('x-auth-subject'),
  scopes: headerNameSchema.default('x-auth-scopes'),
  method: headerNameSchema.default('x-auth-method'),
  keyId: headerNameSchema.default('x-auth-key-id'),
  email: headerNameSchema.default('x-auth-email'),
  /** Further headers Portcullis owns: always removed from the request on allow. */
  alsoRemove: z.array(headerNameSchema).default([]),
});
export type HeaderNames = z.output<typeof headerNamesSchema>;

/** Log levels, from the policy's server.logLevel, --log-level and PORTCULLIS_LOG_LEVEL alike. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** Limits of the gRPC port (README "Operating Portcullis": memory budget, overload). */
export const grpcLimitsSchema = z.strictObject({
  /** Request bytes (received and inflated) all connections may hold together, MiB. */
  memoryBudgetMb: z.number().int().min(8).max(4096).default(32),
  /** Checks in flight; beyond it checks are answered 503 `overloaded` at once. */
  maxInFlight: z.number().int().min(16).max(1_000_000).default(1024),
  /** Open connections; at the cap the longest-idle one is closed for a newcomer. */
  maxConnections: z.number().int().min(1).max(100_000).default(1024),
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. */
  maxStreamsPerConnection: z.number().int().min(1).max(100_000).default(128),
  /** A request still being received after this long gets DEADLINE_EXCEEDED. */
  readTimeout: durationSchema.refine((ms) => ms >= 100, 'must be at least 100ms').default(10_000),
  /** A check's answer the client has not taken this long after it was written: the stream is reset. */
  answerTimeout: durationSchema.refine((ms) => ms >= 100 && ms <= 60_000, 'must be from 100ms to 60s').default(2_000),
  /** A connection that has not sent the HTTP/2 preface by then is closed. */
  prefaceTimeout: durationSchema.refine((ms) => ms >= 100, 'must be at least 100ms').default(5_000),
  /** A connection without an open stream for this long is closed (GOAWAY). */
  idleTimeout: durationSchema.refine((ms) => ms >= 1000, 'must be at least 1s').default(300_000),
});

/** TLS on the authorization listener(s) (README "TLS and mTLS"). Files are re-read when they change. */
export const tlsSchema = z.strictObject({
  certFile: nonEmpty,
  keyFile: nonEmpty,
  /** CA bundle client certificates must chain to: when set, every client must present one (mTLS). */
  clientCaFile: nonEmpty.optional(),
  minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
  /** Backstop poll of the files (directory watches usually notice a Secret update sooner). */
  reloadInterval: durationSchema.refine((ms) => ms >= 100, 'must be at least 100ms').default(10_000),
});

/** OpenTelemetry tracing (README "Tracing"); the OTEL_* variables fill in what is not set here. */
export const tracingSchema = z.strictObject({
  enabled: z.boolean().default(false),
  /** OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces. */
  endpoint: z.string().regex(/^https?:\/\/[^\s/?#]+/i, 'must be an http:// or https:// URL').refine((u) => URL.canParse(u), 'must be an http:// or https:// URL').optional(),
  /** Share of new traces sampled (parent-based: a caller's sampled flag is followed). */
  sampleRatio: z.number().min(0, 'must be from 0 to 1').max(1, 'must be from 0 to 1').optional(),
  serviceName: nonEmpty.optional(),
  /** Put the tenant on spans (off by default, like tenantMetrics). */
  tenant: z.boolean().default(false),
});

/** The request shapes of the HTTP authorization listener (README "nginx / Traefik / Caddy"). */
export const AUTHZ_HTTP_SHAPES = ['envoy', 'nginx', 'forward-auth'] as const;
export type AuthzHttpShape = (typeof AUTHZ_HTTP_SHAPES)[number];

/** Path prefixes of the HTTP authorization listener when neither shape nor paths is set. */
export const DEFAULT_AUTHZ_HTTP_PATHS: Readonly<Record<string, AuthzHttpShape>> = Object.freeze({
  '/envoy': 'envoy',
  '/nginx': 'nginx',
  '/forward-auth': 'forward-auth',
});

const AUTHZ_HTTP_PREFIX = /^(\/[A-Za-z0-9._~-]+)+$/;
const authzHttpPaths = z.record(z.string(), z.enum(AUTHZ_HTTP_SHAPES)).superRefine((paths, ctx) => {
  for (const prefix of Object.keys(paths)) {
    if (!AUTHZ_HTTP_PREFIX.test(prefix)) {
      ctx.addIssue({ code: 'custom', path: [prefix], message: 'must be a path prefix such as /nginx: "/" and segments of letters, digits and ._~- (no trailing "/")' });
    }
  }
});

/**
 * server.authzHttp: the HTTP authorization listener (Envoy http_service, nginx auth_request,
 * Traefik forwardAuth, Caddy forward_auth). Off unless this section or --authz-http-port is given.
 */
export const authzHttpSchema = z.strictObject({
  port: z.number().int().min(0).max(65535).default(9003),
  /** Shape of every request on the listener (no prefix needed); exclusive with `paths`. */
  shape: z.enum(AUTHZ_HTTP_SHAPES).optional(),
  /** Path prefix → shape ("/nginx: nginx"); the default when neither is set: /envoy, /nginx, /forward-auth. */
  paths: authzHttpPaths.optional(),
  /** Largest request head (request line + headers) accepted, bytes; larger gets 431. */
  maxHeaderBytes: z.number().int().min(1024).max(1024 * 1024).default(32 * 1024),
  /** Open connections at once; more are refused. */
  maxConnections: z.number().int().min(1).max(100_000).default(1024),
  /** A request head still arriving after this long gets 408 and the connection is closed. */
  headersTimeout: durationSchema.refine((ms) => ms >= 100, 'must be at least 100ms').default(10_000),
  /** An idle keep-alive connection is closed after this long (keep it above the proxy's own idle timeout). */
  keepAliveTimeout: durationSchema.refine((ms) => ms >= 1000, 'must be at least 1s').default(75_000),
}).refine((h) => h.shape === undefined || h.paths === undefined, { message: 'set shape (one shape for the whole listener) or paths (a shape per path prefix), not both' });
export type AuthzHttpSettings = z.output<typeof authzHttpSchema>;

export const serverSchema = z.strictObject({
  grpcPort: z.number().int().min(0).max(65535).default(9001),
  httpPort: z.number().int().min(0).max(65535).default(9002),
  /** Address both ports bind to. */
  bind: z.string().default('0.0.0.0'),
  logLevel: z.enum(LOG_LEVELS).default('info'),
  /**
   * Which decisions get a log line: sample (every denial and failure, plus decisionLogAllowRate of
   * the allows), all, deny (denials only) or none. `all` costs about a quarter of the throughput
   * of a cached check (README: Benchmarks), hence not the default.
   */
  decisionLog: z.enum(['sample', 'all', 'deny', 'none']).default('sample'),
  /** With decisionLog: sample, the share of allows logged (0.01: one in a hundred, evenly spaced). */
  decisionLogAllowRate: z.number().gt(0, 'must be more than 0 and at most 1').max(1, 'must be more than 0 and at most 1').default(0.01),
  /** Label checks_total by tenant as well (off by default: cardinality). */
  tenantMetrics: z.boolean().default(false),
  /** Label checks_total by route name too (bounded by the policy's routes; off by default). */
  routeMetrics: z.boolean().default(false),
  grpc: grpcLimitsSchema.default(() => grpcLimitsSchema.parse({})),
  /**
   * Add the decision's explanation (routes considered, identity source, rule, limits) to each
   * decision log line. Off by default: it costs an allocation per check. Never served on a port.
   */
  explain: z.boolean().default(false),
  tls: tlsSchema.optional(),
  tracing: tracingSchema.optional(),
  /** The HTTP authorization listener; absent = off (unless serve --authz-http-port). */
  authzHttp: authzHttpSchema.optional(),
});

/** How the client IP is picked (src/pipeline/client-ip.ts) and what per-IP limits and bans key on. */
export const clientIpSchema = z.strictObject({
  /**
   * The calling Envoy's use_remote_address: true when it appends the peer to x-forwarded-for (an
   * edge Envoy, an Istio ingress gateway), false when it passes x-forwarded-for through (an Istio
   * sidecar).
   */
  useRemoteAddress: z.boolean().default(true),
  /**
   * The calling Envoy's xff_num_trusted_hops: how many proxies in front of it append to
   * x-forwarded-for and are trusted. 0 (default) with useRemoteAddress: the connecting peer.
   */
  xffTrustedHops: z.number().int().min(0).max(10).default(0),
  /** Per-IP limits, lockouts and bans key on this IPv4 prefix (32: each address). */
  ipv4Prefix: z.number().int().min(8, 'must be between 8 and 32').max(32, 'must be between 8 and 32').default(32),
  /** ... and on this IPv6 prefix (64: one key per /64, what one host or subscriber usually holds). */
  ipv6Prefix: z.number().int().min(16, 'must be between 16 and 128').max(128, 'must be between 16 and 128').default(64),
});
export type ClientIpConfig = z.output<typeof clientIpSchema>;

export const tenantSchema = z.strictObject({
  disabled: z.boolean().default(false),
  limits: tenantLimitsSchema.optional(),
});

export const policySchema = z
  .strictObject({
    version: z.literal(1).default(1),
    mode: z.enum(['enforce', 'dev']).default('enforce'),
    /** Who every request is in dev mode. */
    dev: z
      .strictObject({
        tenant: nonEmpty,
        subject: nonEmpty.default('dev-user'),
        scopes: z.array(nonEmpty).default([]),
      })
      .optional(),
    server: serverSchema.default(() => serverSchema.parse({})),
    /** realm in WWW-Authenticate challenges. */
    realm: z.string().regex(/^[^"\\]*$/, 'must not contain quotes or backslashes').default('portcullis'),
    headers: headerNamesSchema.default(() => headerNamesSchema.parse({})),
    clientIp: clientIpSchema.default(() => clientIpSchema.parse({})),
    /** Non-canonical paths and upstream case (README "Paths, hosts and client addresses"). */
    paths: pathsSchema.default(() => pathsSchema.parse({})),
    /** Whether a caller with no tenant is refused (403 missing_tenant) unless a route says otherwise. */
    requireTenant: z.boolean().default(true),
    /** The caller-resolution chain: tried in order, the first source that finds a credential decides. */
    identity: z.array(identitySourceSchema).default([]),
    issuers: z.record(z.string().regex(/^[A-Za-z0-9_-]+$/, 'issuer names may contain letters, digits, _ and -'), issuerSchema).default({}),
    keyStore: keyStoreSchema.optional(),
    /** Named HTTP/SQL lookups used by session, apiKey, host sources and enrichment (src/lookup). */
    lookups: lookupsSchema.default({}),
    /** Steps after identification that look more up about the caller (src/lookup/enrich.ts). */
    enrich: enrichListSchema.default([]),
    routes: z.array(routeSchema).default([]),
    /**
     * Requests no route matches: deny (401 without a credential, 403 route_not_allowed with one)
     * or authenticated (any identified caller is allowed, with the top-level tenant rule).
     */
    default: z.enum(['deny', 'authenticated']).default('deny'),
    rateLimits: rateLimitsSchema.optional(),
    /**
     * How a dependency failure (any 503: JWKS, key store, Redis, lookups, internal error, overload)
     * is answered on the gRPC port: deny = a 503 denied_response (Envoy counts it as a denial);
     * error = an error_response (Envoy 1.37+ counts ext_authz.error and applies failure_mode_allow
     * and status_on_error).
     */
    dependencyFailure: z.enum(['deny', 'error']).default('deny'),
    tenants: z.record(nonEmpty, tenantSchema).default({}),
    /** The JSON body of denials (README "Deny bodies"); DESIGN.md's body when absent. */
    denyBody: denyBodySchema.optional(),
    /** A signed JWT for upstreams on every allow with a caller (README "Identity token for upstreams"). */
    identityToken: identityTokenSchema.optional(),
  });

export type PolicyDocument = z.output<typeof policySchema>;
