// Plain types the whole pipeline works on. Transports decode into RequestAttributes and encode
// a Decision; nothing below the transport layer ever sees a protobuf object.

import type { ReasonCode } from './reasons.js';

export type AuthMethod = 'jwt' | 'api-key' | 'host' | 'shared-secret' | 'dev' | 'session' | 'introspection' | 'peer';

export const AUTH_METHODS: readonly AuthMethod[] = ['jwt', 'api-key', 'host', 'shared-secret', 'dev', 'session', 'introspection', 'peer'];

/**
 * Request headers by lower-case name. Only lookups: the gRPC decoder turns a header's bytes into
 * a string the first time it is asked for (most headers never are). A Map satisfies it.
 */
export interface RequestHeaders {
  get(name: string): string | undefined;
  /**
   * Names that contain "_" (lower-case), or undefined when there are none: an upstream may read
   * x_tenant_id as x-tenant-id, so such variants of owned headers are removed on allow. Transports
   * must fill it (a Map, as in unit tests, has none).
   */
  readonly underscored?: readonly string[];
}

/** One HTTP request as Envoy described it, normalised. */
export interface RequestAttributes {
  /** Envoy's request id (x-request-id); generated when Envoy sent none. */
  readonly requestId: string;
  /** Upper-case HTTP method ("GET"). */
  readonly method: string;
  /**
   * Lower-cased ":authority" / "host" as sent, port and trailing dot included; the pipeline reads it
   * through authz/host.ts (default port dropped, trailing dot refused) before anything matches on it.
   */
  readonly host: string;
  /** Path without the query string, as sent (no percent-decoding). */
  readonly path: string;
  /** Query string without the leading "?" ("" when absent). */
  readonly query: string;
  readonly scheme: string;
  readonly protocol: string;
  /**
   * Lower-cased header names. Duplicate headers are joined with "," (cookies with "; "), exactly
   * as Envoy does for the `headers` map, so both encodings look the same to the pipeline.
   */
  readonly headers: RequestHeaders;
  /** Address of the peer that connected to Envoy ("" for pipes or when Envoy sent none). */
  readonly sourceAddress: string;
  /** Envoy's per-route context_extensions (never sent by clients). */
  readonly contextExtensions: ReadonlyMap<string, string>;
  /**
   * The connecting workload as the proxy verified it (mTLS), never from request headers; undefined
   * when the proxy sent neither field (plain TLS, no TLS, or a transport that does not know).
   */
  readonly peer?: PeerAttributes;
  /** The span of this check when it is traced and sampled (observability/tracing.ts); else undefined. */
  trace?: CheckTrace;
  /**
   * Set only while one request is judged by several routes (pipeline decideOnAll): the rate-limit
   * counters already charged for it and by how much, so a limit those routes share counts the
   * request once, at the highest cost any of them gives it.
   */
  readonly chargedLimits?: Map<string, number>;
}

/** Envoy's AttributeContext.source principal (4) and certificate (5). Read lazily by the gRPC decoder. */
export interface PeerAttributes {
  /** URI SAN (else DNS SAN, else Subject) of the verified client certificate, e.g. a SPIFFE ID; "" when none. */
  readonly principal: string;
  /** The client certificate, URL-encoded PEM, when Envoy's include_peer_certificate is on; "" otherwise. */
  readonly certificate: string;
}

/** A sampled check's span, as the pipeline sees it: its ids, and child spans around waits on I/O. */
export interface CheckTrace {
  readonly traceId: string;
  readonly spanId: string;
  /** A child span around one wait (JWKS, key store, lookup, Redis); `end` it when the wait is over. */
  child(name: string, attributes?: Readonly<Record<string, string>>): { end(failed?: boolean): void };
}

/** Who is calling, once a credential source has recognised a credential. */
export interface Principal {
  readonly method: AuthMethod;
  readonly tenant?: string;
  readonly subject?: string;
  readonly scopes: readonly string[];
  readonly email?: string;
  /** API key id (never the key). */
  readonly keyId?: string;
  /** Policy name of the JWT issuer. */
  readonly issuer?: string;
  /** Epoch seconds after which this principal must not be used (token/key expiry). */
  readonly expiresAt?: number;
  /** Claims `enrich:` steps added (expressions see them as auth.enriched, never mixed with a token's). */
  readonly enriched?: Readonly<Record<string, unknown>>;
}

export interface HeaderPair {
  readonly name: string;
  readonly value: string;
}

/** A denial is data: the pipeline returns it, transports encode it. */
export interface Denial {
  readonly reason: ReasonCode;
  /** Extra headers for the client (RateLimit-*, Retry-After). WWW-Authenticate is derived. */
  readonly headers?: readonly HeaderPair[];
  /** Seconds; becomes Retry-After. */
  readonly retryAfter?: number;
  /** True when a credential was presented (adds error="invalid_token" on 401). */
  readonly credentialPresented?: boolean;
  /** Internal detail for the decision log only; never sent to the client. */
  readonly detail?: string;
  /**
   * A policy rule's own denial (routes[].rules): its status, reason code and message replace the
   * built-in row of `reason` (which is then condition_failed) in the response.
   */
  readonly rule?: PolicyDenial;
}

/** A denial a policy rule defines: status 400/401/403/404, a reason code, an optional message. */
export interface PolicyDenial {
  readonly status: 400 | 401 | 403 | 404;
  readonly reason: string;
  readonly message?: string;
}

/**
 * Memo a transport may fill with the encoded form of the parts of a decision that do not change
 * from request to request. Decisions built from the same principal, route and credential share
 * one, so a repeated caller costs a copy instead of an encoding. Create with newEncodeCache().
 */
export interface EncodeCache {
  /** The fixed response part followed by the fixed metadata entries, in one allocation. */
  bytes: Uint8Array | undefined;
  /** Where the metadata entries start in `bytes`. */
  split: number;
  /** Set on first use; `bytes` is filled on the second (a caller seen once is not worth a copy). */
  seen: boolean;
}

export function newEncodeCache(): EncodeCache {
  return { bytes: undefined, split: 0, seen: false };
}

export interface AllowDecision {
  readonly allowed: true;
  readonly requestId: string;
  readonly route: string;
  readonly principal: Principal | undefined;
  /** Identity headers to set upstream (OVERWRITE_IF_EXISTS_OR_ADD). */
  readonly upstreamHeaders: readonly HeaderPair[];
  /** Headers to strip before the request goes upstream. */
  readonly removeHeaders: readonly string[];
  /** Headers for the client on the response (rate-limit quota). */
  readonly responseHeaders: readonly HeaderPair[];
  /** A shadow-mode or fail-open note for logs and metrics ("" when none). */
  readonly note?: string;
  readonly encodeCache?: EncodeCache;
}

export interface DenyDecision {
  readonly allowed: false;
  readonly requestId: string;
  readonly route: string;
  readonly principal: Principal | undefined;
  readonly status: number;
  readonly code: string;
  /** A built-in reason code, or the reason a policy rule defines (routes[].rules[].deny.reason). */
  readonly reason: ReasonCode | (string & {});
  /** Headers for the client: WWW-Authenticate, Retry-After, RateLimit, content-type. */
  readonly headers: readonly HeaderPair[];
  /** JSON body. */
  readonly body: string;
  readonly detail?: string;
  readonly encodeCache?: EncodeCache;
}

export type Decision = AllowDecision | DenyDecision;

/** Something that may or may not finish synchronously; the hot path stays synchronous when it can. */
export type MaybePromise<T> = T | Promise<T>;

export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}
