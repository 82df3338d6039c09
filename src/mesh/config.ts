// Policy schema of the identity token for upstreams and the `peer` source (README "Identity token
// for upstreams", "Workload identities (peer)").

import { z } from 'zod';
import { durationSchema, headerNameSchema } from '../policy/units.js';

const nonEmpty = z.string().min(1, 'must not be empty');

export const identityTokenSchema = z.strictObject({
  /** iss of every token (e.g. the URL the JWKS is published under, without the path). */
  issuer: nonEmpty,
  /** aud unless a route names its own. */
  audience: nonEmpty,
  /** Request header the token travels in to the upstream; also removed from client requests. */
  header: headerNameSchema.default('x-portcullis-identity'),
  algorithm: z.enum(['ES256', 'EdDSA']).default('ES256'),
  /** Key files (PEM, JWK or JWK Set), oldest first; relative to the policy file. The last private key signs. */
  keys: z.array(nonEmpty).min(1, 'needs at least one key file'),
  /** Token lifetime (exp - iat); never longer than the credential's own expiry. */
  lifetime: durationSchema.default(300_000),
  /** Fraction of the lifetime during which a token is handed out again as is. */
  reuse: z.number().min(0.05, 'must be between 0.05 and 0.9').max(0.9, 'must be between 0.05 and 0.9').default(0.5),
  /** Callers (principal and audience) whose token is kept. */
  cacheSize: z.number().int().min(1).max(1_000_000).default(10_000),
  /** How often the key files are re-read; 0 = on policy reload only. */
  keyReloadInterval: durationSchema.default(30_000),
  /** Where the JWKS is published for verifiers (documentation; Portcullis serves /.well-known/jwks.json on its ops port). */
  jwksUrl: z.string().url().optional(),
  /**
   * Required with a `peer` source: only the mesh's proxies can reach the gRPC port (a NetworkPolicy,
   * or mTLS client auth on the listener), so the workload identity a CheckRequest names is the
   * proxy's verified peer, not a claim anyone could make and get signed.
   */
  checkCallersAreTheProxies: z.boolean().optional(),
});
export type IdentityTokenConfig = z.output<typeof identityTokenSchema>;

/** A route's own identity token: another audience, or none. */
export const routeIdentityTokenSchema = z.union([z.literal(false), z.strictObject({ audience: nonEmpty })], {
  message: 'must be false or { audience: ... }',
});

/** What a matched workload is: fixed values, or "{segment}" of the principal pattern. */
const peerPrincipalSchema = z
  .strictObject({
    tenant: nonEmpty.optional(),
    /** Default: the principal itself (e.g. spiffe://cluster.local/ns/checkout/sa/payments). */
    subject: nonEmpty.optional(),
    scopes: z.array(nonEmpty).default([]),
    /**
     * Not a caller of its own: try the next source (an ingress gateway forwarding outside callers,
     * whose JWT then decides). Listed before a pattern that would otherwise match it.
     */
    next: z.literal(true).optional(),
  })
  .superRefine((p, ctx) => {
    if (p.next && (p.tenant !== undefined || p.subject !== undefined || p.scopes.length > 0)) {
      ctx.addIssue({ code: 'custom', message: 'next: true takes no tenant, subject or scopes' });
    }
  });

/** The caller's workload identity from Envoy's source.principal (mTLS), never from request headers. */
export const peerSourceSchema = z.strictObject({
  /**
   * Exact principals, or patterns whose whole path segments are {name}:
   * "spiffe://cluster.local/ns/{namespace}/sa/{serviceAccount}". Exact ones win; patterns in order.
   */
  principals: z.record(nonEmpty, peerPrincipalSchema).refine((r) => Object.keys(r).length > 0, { message: 'needs at least one principal' }),
  /** A principal that matches nothing: try the next source (next), or refuse (deny: 403 peer_not_allowed). */
  unmatched: z.enum(['next', 'deny']).default('next'),
  /**
   * Also read the URI of an x-forwarded-client-cert-style header (Envoy's XFCC format), when no
   * source.principal came: only for a proxy in front that terminates mTLS, SETS this header and
   * STRIPS any copy a client sent (Envoy: forward_client_cert_details SANITIZE_SET). Otherwise any
   * client could claim any workload identity, so the policy has to say so explicitly.
   */
  forwardedClientCert: z
    .strictObject({
      header: headerNameSchema.default('x-forwarded-client-cert'),
      proxySetsItAndStripsClientCopies: z.boolean().refine((v) => v, { message: 'must be true: the header is trusted only if the proxy sets it and strips client copies' }),
    })
    .optional(),
});
export type PeerSourceConfig = z.output<typeof peerSourceSchema>;
