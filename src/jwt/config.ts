// Policy schema of JWT issuers (top-level `issuers:` map) and of the `- jwt: {...}` identity source.
// Cross-field rules (exactly one key source, HS only with a secret, audiences for JWKS issuers)
// are checked here so they are reported with their document path like any other schema error.

import { z } from 'zod';
import { durationSchema, headerNameSchema } from '../policy/units.js';

/** Algorithms verified with keys from a JWKS (public keys). */
export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
/** Algorithms verified with a shared secret. */
export const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;

export type AsymmetricAlgorithm = (typeof ASYMMETRIC_ALGORITHMS)[number];
export type HmacAlgorithm = (typeof HMAC_ALGORITHMS)[number];
export type JwsAlgorithm = AsymmetricAlgorithm | HmacAlgorithm;

/** RFC 7518 §3.2: an HMAC key must be at least as long as the hash output. */
export const HMAC_MIN_SECRET_BYTES: Readonly<Record<HmacAlgorithm, number>> = { HS256: 32, HS384: 48, HS512: 64 };

const nonEmpty = z.string().min(1, 'must not be empty');
/** A claim name or dot path: a literal key wins, otherwise `a.b.c` walks nested objects. */
const claimPath = nonEmpty;

const algorithmSchema = z.enum([...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS], {
  message: `must be one of ${[...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS].join(', ')} ("none" is never accepted)`,
});

const httpUrl = z.url({ protocol: /^https?$/, message: 'must be an absolute http(s) URL' });

const roleScopesSchema = z.record(nonEmpty, z.array(nonEmpty));

/** Roles claim → scopes, either one map for every token or one map per application (seed 004). */
export const rolesSchema = z
  .strictObject({
    /** Claim holding the roles: an array of strings or a space-delimited string. */
    claim: claimPath.default('roles'),
    /** Claim naming the application the roles belong to; required with `apps`. */
    appClaim: claimPath.optional(),
    /** Application id → role → scopes. */
    apps: z.record(nonEmpty, roleScopesSchema).optional(),
    /** Role → scopes, for issuers without applications. */
    map: roleScopesSchema.optional(),
  })
  .superRefine((roles, ctx) => {
    if ((roles.apps === undefined) === (roles.map === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'roles needs exactly one of apps (with appClaim) or map' });
    }
    if (roles.apps !== undefined && roles.appClaim === undefined) {
      ctx.addIssue({ code: 'custom', path: ['appClaim'], message: 'roles.apps needs appClaim (the claim naming the application)' });
    }
    if (roles.map !== undefined && roles.appClaim !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['appClaim'], message: 'appClaim only applies to roles.apps' });
    }
  });
export type RolesConfig = z.output<typeof rolesSchema>;

export const claimsSchema = z.strictObject({
  /** Tenant claim path; absent → the principal has no tenant (the route decides missing_tenant). */
  tenant: claimPath.optional(),
  subject: claimPath.default('sub'),
  email: claimPath.default('email'),
  /** Scope claims: arrays of strings (`permissions`) or space-delimited strings (`scope`, `scp`). */
  scopes: z.array(claimPath).default(['scope', 'scp', 'permissions']),
  roles: rolesSchema.optional(),
});
export type ClaimsConfig = z.output<typeof claimsSchema>;

/** One entry of the top-level `issuers:` map (keyed by issuer name). */
export const issuerSchema = z
  .strictObject({
    /**
     * Exact `iss` of the tokens. Required for JWKS issuers. A secret issuer without it accepts
     * tokens that carry no `iss` at all (seed 004's tokens have none).
     */
    issuer: nonEmpty.optional(),
    /** Tokens must carry one of these in `aud`. Required for JWKS issuers. */
    audiences: z.array(nonEmpty).min(1).optional(),
    /** Keys from `<issuer>/.well-known/openid-configuration` → jwks_uri. */
    discovery: z.boolean().optional(),
    jwksUri: httpUrl.optional(),
    /** Shared secret for HS256/384/512 (normally "${ENV_VAR}"). */
    secret: z.string().optional(),
    secretEncoding: z.enum(['utf8', 'base64', 'base64url']).default('utf8'),
    /** Allow-list; default: every asymmetric algorithm for JWKS issuers, HS256 for secret issuers. */
    algorithms: z.array(algorithmSchema).min(1).optional(),
    clockTolerance: durationSchema.default(30_000),
    /** Maximum age from `iat` (tokens without iat are then refused). */
    maxTokenAge: durationSchema.optional(),
    /** Claims (paths) every token must carry, on top of exp. */
    requiredClaims: z.array(claimPath).default([]),
    claims: claimsSchema.default(() => claimsSchema.parse({})),
    /** Scopes every token of this issuer gets. */
    scopes: z.array(nonEmpty).default([]),
    /** Readiness waits for the first successful JWKS fetch (default true). */
    waitForKeys: z.boolean().default(true),
    /** Background JWKS refresh period. */
    jwksRefreshInterval: durationSchema.default(600_000),
    /**
     * Unknown kids may cause 3 refetches at once, then one per cooldown; a kid a refetch proved
     * unknown is answered without a fetch for one cooldown.
     */
    jwksCooldown: durationSchema.default(10_000),
    /** Timeout of one JWKS or discovery request. */
    jwksTimeout: durationSchema.default(2_000),
    /** How long a check with an unknown kid waits for the refetch (then 503 jwks_unavailable). */
    jwksRefetchWait: durationSchema.default(100),
  })
  .superRefine((issuer, ctx) => {
    const sources = [issuer.secret !== undefined, issuer.jwksUri !== undefined, issuer.discovery === true].filter(Boolean).length;
    if (sources !== 1) {
      ctx.addIssue({ code: 'custom', message: 'an issuer needs exactly one of secret, jwksUri or discovery: true' });
      return;
    }
    if (issuer.secret !== undefined) checkSecretIssuer(issuer, ctx);
    else checkJwksIssuer(issuer, ctx);
    if (issuer.jwksRefreshInterval < 1_000) ctx.addIssue({ code: 'custom', path: ['jwksRefreshInterval'], message: 'must be at least 1s' });
    if (issuer.jwksTimeout < 1 || issuer.jwksTimeout > 60_000) ctx.addIssue({ code: 'custom', path: ['jwksTimeout'], message: 'must be between 1ms and 60s' });
    if (issuer.jwksCooldown < 1_000) ctx.addIssue({ code: 'custom', path: ['jwksCooldown'], message: 'must be at least 1s (it bounds the fetches unknown kids can cause)' });
    if (issuer.jwksRefetchWait > 10_000) ctx.addIssue({ code: 'custom', path: ['jwksRefetchWait'], message: 'must be at most 10s (Envoy gives a check about 200ms)' });
  });
export type IssuerConfig = z.output<typeof issuerSchema>;

function checkSecretIssuer(issuer: z.output<typeof issuerSchema>, ctx: z.RefinementCtx): void {
  const algorithms = issuer.algorithms ?? ['HS256'];
  for (const [i, alg] of algorithms.entries()) {
    if (!(HMAC_ALGORITHMS as readonly string[]).includes(alg)) {
      ctx.addIssue({ code: 'custom', path: ['algorithms', i], message: `${alg} needs a public key: a secret issuer accepts only HS256, HS384, HS512` });
    }
  }
  if (!isWellFormedSecret(issuer.secret!, issuer.secretEncoding)) {
    ctx.addIssue({ code: 'custom', path: ['secret'], message: `is not valid ${issuer.secretEncoding}` });
    return;
  }
  const bytes = secretBytes(issuer.secret!, issuer.secretEncoding).length;
  for (const alg of algorithms) {
    const min = HMAC_MIN_SECRET_BYTES[alg as HmacAlgorithm];
    // Never echo the secret: only its length.
    if (min !== undefined && bytes < min) ctx.addIssue({ code: 'custom', path: ['secret'], message: `is ${bytes} bytes; ${alg} needs at least ${min}` });
  }
}

function checkJwksIssuer(issuer: z.output<typeof issuerSchema>, ctx: z.RefinementCtx): void {
  if (issuer.issuer === undefined) ctx.addIssue({ code: 'custom', path: ['issuer'], message: 'is required for a JWKS issuer' });
  else if (issuer.discovery && !/^https?:\/\/[^/]/.test(issuer.issuer)) {
    ctx.addIssue({ code: 'custom', path: ['issuer'], message: 'must be an http(s) URL for discovery' });
  }
  if (issuer.audiences === undefined) {
    ctx.addIssue({ code: 'custom', path: ['audiences'], message: 'is required for a JWKS issuer (a token for another API of the same issuer must not pass)' });
  }
  for (const [i, alg] of (issuer.algorithms ?? []).entries()) {
    if ((HMAC_ALGORITHMS as readonly string[]).includes(alg)) {
      ctx.addIssue({ code: 'custom', path: ['algorithms', i], message: `${alg} is never accepted for a JWKS issuer (key confusion); use secret: for HS issuers` });
    }
  }
  if (issuer.secretEncoding !== 'utf8') ctx.addIssue({ code: 'custom', path: ['secretEncoding'], message: 'only applies with secret' });
}

function isWellFormedSecret(secret: string, encoding: 'utf8' | 'base64' | 'base64url'): boolean {
  if (encoding === 'base64') return /^[A-Za-z0-9+/]*={0,2}$/.test(secret);
  if (encoding === 'base64url') return /^[A-Za-z0-9_-]*$/.test(secret);
  return true;
}

export function secretBytes(secret: string, encoding: 'utf8' | 'base64' | 'base64url'): Buffer {
  return Buffer.from(secret, encoding);
}

/**
 * The session cookie of Supabase's SSR helpers (@supabase/ssr): `sb-<projectRef>-auth-token`, or
 * the cookie name the application set (cookieOptions.name), possibly split into `.0`, `.1`, … chunks.
 */
const supabaseCookieSchema = z
  .strictObject({
    /** The project reference: the first label of https://<projectRef>.supabase.co. */
    projectRef: z.string().regex(/^[A-Za-z0-9-]{1,63}$/, 'must be a Supabase project reference (the first label of <ref>.supabase.co)').optional(),
    /** The whole cookie name, for applications that changed it (cookieOptions.name / storageKey). */
    name: z.string().regex(/^[A-Za-z0-9!#$%&'*+^_`|~-]+$/, 'must be a cookie name without dots').optional(),
  })
  .superRefine((value, ctx) => {
    if ((value.projectRef === undefined) === (value.name === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'supabaseCookie needs exactly one of projectRef or name' });
    }
  });

/** Where the source looks for a token; tried in order, the first one present decides. */
export const tokenPlaceSchema = z.union([
  z.strictObject({
    header: headerNameSchema,
    /** "Bearer": the value must be `<scheme> <token>` (scheme case-insensitive). Absent: the raw value. */
    scheme: z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be an auth scheme token such as Bearer').optional(),
  }),
  z.strictObject({ cookie: z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a cookie name') }),
  z.strictObject({ supabaseCookie: supabaseCookieSchema }),
]);
export type TokenPlaceConfig = z.output<typeof tokenPlaceSchema>;

/** The value of an identity chain entry `- jwt: {...}`. */
export const jwtSourceSchema = z.strictObject({
  /** Issuer names from the top-level `issuers:` map; each token is matched by its `iss`. */
  issuers: z.array(nonEmpty).min(1),
  from: z.array(tokenPlaceSchema).min(1).default(() => [{ header: 'authorization', scheme: 'Bearer' }]),
  /** Forward the token upstream (default). false strips the header (or the whole Cookie header) it came in. */
  forward: z.boolean().default(true),
  /** Tokens longer than this are refused (token_too_large) before any parsing. */
  maxTokenSize: z.number().int().min(256).max(65_536).default(8_192),
  /** Verified tokens kept in memory (0 disables the cache). */
  cacheSize: z.number().int().min(0).max(10_000_000).default(10_000),
  /**
   * A value after the scheme (Bearer) that is not a compact JWS (e.g. an API key): `pass` lets the
   * next source of the chain look at it, `reject` answers invalid_token. Default: pass only to a
   * source of the same chain that claims it (identity/jwt.ts nonJwtBearerRule), reject otherwise.
   */
  nonJwtBearer: z.enum(['pass', 'reject']).optional(),
});
export type JwtSourceConfig = z.output<typeof jwtSourceSchema>;
