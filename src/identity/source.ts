// The contract every credential source implements (one file per source in this folder).
// The caller-resolution chain tries sources in policy order; the first that FINDS a credential
// decides: it either proves a principal or denies. A source that finds nothing passes.

import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { Denial, MaybePromise, Principal, RequestAttributes } from '../types.js';

export interface Identified {
  readonly kind: 'principal';
  readonly principal: Principal;
  /** Request headers carrying the credential that the policy says to strip upstream. */
  readonly removeHeaders?: readonly string[];
}

export interface Rejected {
  readonly kind: 'deny';
  readonly denial: Denial;
}

export interface NotPresent {
  readonly kind: 'none';
}

export type IdentifyResult = Identified | Rejected | NotPresent;

/** Shared singleton so passing sources allocate nothing. */
export const NOT_PRESENT: NotPresent = Object.freeze({ kind: 'none' });

export function rejected(denial: Denial): Rejected {
  return { kind: 'deny', denial };
}

export interface CredentialSource {
  /** The auth method this source proves (what x-auth-method will say). */
  readonly method: Principal['method'];
  /** Short label for logs: "jwt", "api-key:x-api-key", "host", "shared-secret:x-checkout-secret". */
  readonly name: string;
  /**
   * Look for this source's credential in the request. Must not throw for bad input (return a
   * denial); a thrown error is treated as internal_error (503). Return synchronously when the
   * answer is cached: the hot path stays free of promises.
   */
  identify(request: RequestAttributes): MaybePromise<IdentifyResult>;
  /**
   * JWT sources: the claims of the token this source would identify the request by (already
   * verified when identify() accepted it), for policy expressions (auth.claims). Undefined when
   * the source finds no token. Only called for routes whose expressions read claims.
   */
  claimsOf?(request: RequestAttributes): Readonly<Record<string, unknown>> | undefined;
  /**
   * Headers carrying this source's credential that are stripped on EVERY allow, whoever was
   * identified and on public routes too (the policy's removal rule: an API key header unless
   * forward, a shared-secret header unless removeHeader: false).
   */
  readonly stripHeaders?: readonly string[];
  /** Headers this source is told to forward (API key `forward: true`, `removeHeader: false`): kept on its routes. */
  readonly forwardHeaders?: readonly string[];
  /**
   * For a credential found by inspecting a shared header (an API key sent as Bearer): the headers
   * to strip when this request carries one, else undefined. Used on public routes, where
   * identify() does not run. Must be cheap and must not throw.
   */
  readonly carrier?: (request: RequestAttributes) => readonly string[] | undefined;
}

/**
 * The entries (`{ jwt: … }`, `{ apiKey: … }`, …) of the identity chain the source compiled at
 * `path` (`[…, 'identity', i, kind]`) belongs to: the policy's or a route's. For sources whose
 * answer depends on what else the chain can claim.
 */
export function chainOf(path: PolicyPath, ctx: CompileContext): readonly Record<string, unknown>[] {
  let node: unknown = ctx.policy;
  for (const part of path.slice(0, -2)) node = (node as Record<string | number, unknown> | undefined)?.[part];
  return Array.isArray(node) ? node.filter((entry): entry is Record<string, unknown> => typeof entry === 'object' && entry !== null) : [];
}

/** The headers a chain entry takes whole as its credential (a shared secret, session or API key header). */
export function headersClaimedWhole(entry: Record<string, unknown>): string[] {
  const single = (entry.sharedSecret ?? entry.session) as { header?: string } | undefined;
  const apiKey = entry.apiKey as { headers?: string[] } | undefined;
  return [...(single?.header !== undefined ? [single.header] : []), ...(apiKey?.headers ?? [])];
}

/** `Authorization: Bearer`, the place introspection and API keys with bearerPrefixes read. */
export function isBearerAuthorization(place: { readonly carrier: string; readonly label: string }): boolean {
  return place.carrier === 'authorization' && place.label.toLowerCase() === 'authorization bearer';
}

/** Whether a chain entry is a jwt source reading `Authorization: Bearer` (its default place). */
export function readsBearerJwt(entry: Record<string, unknown>): boolean {
  const jwt = entry.jwt as { from?: { header?: string; scheme?: string }[] } | undefined;
  if (jwt === undefined) return false;
  return (jwt.from ?? [{ header: 'authorization', scheme: 'Bearer' }]).some((place) => place.header === 'authorization' && place.scheme?.toLowerCase() === 'bearer');
}
