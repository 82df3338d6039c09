// The one table of denial reasons. Every denial Portcullis can return is a row here: its HTTP
// status, and from that the body `code`, the `error` label and the gRPC status of the Check
// response. Reason codes are a stable, documented API (README "Reason codes"): add, never rename.

export type HttpDenyStatus = 400 | 401 | 403 | 404 | 429 | 503;

interface ReasonRow {
  readonly status: HttpDenyStatus;
  /** One line for README and logs. */
  readonly description: string;
  /** RFC 6750 error for WWW-Authenticate where it applies. */
  readonly bearerError?: 'invalid_token' | 'insufficient_scope' | 'invalid_request';
}

export const REASONS = {
  // 400: the request lacks something the route requires (policy expressions, README "Expressions (CEL)").
  missing_query_parameter: { status: 400, description: 'a query parameter the route requires (match.query) is absent' },
  invalid_query_parameter: { status: 400, description: "a query parameter's match.query expression is false" },

  // 400: the request is not one Portcullis can judge the way the upstream will read it.
  invalid_path: { status: 400, description: 'the path is not canonical (dot segments, ";" parameters, encoded "/" "\\" "." or unreserved characters, "\\", "//", bad escapes, control or raw non-ASCII bytes) and the policy refuses such paths' },
  invalid_host: { status: 400, description: 'the host is not a name Envoy would route as written: a trailing dot, an empty label, a bad port or character' },
  invalid_proxy_request: { status: 400, description: 'HTTP authorization listener: the request lacks the headers its proxy shape needs (X-Original-URI, X-Forwarded-*) or they are malformed; the proxy is misconfigured' },

  // 401: who is calling is unknown or not proven.
  missing_credential: { status: 401, description: 'no credential was presented' },
  malformed_credential: { status: 401, description: 'the credential header is not well-formed (e.g. two Authorization headers, a bad Bearer value)', bearerError: 'invalid_request' },
  invalid_token: { status: 401, description: 'the bearer token is not a valid JWT', bearerError: 'invalid_token' },
  token_too_large: { status: 401, description: 'the token is larger than the configured limit; rejected before parsing', bearerError: 'invalid_token' },
  unknown_issuer: { status: 401, description: 'the token was issued by an issuer this policy does not trust', bearerError: 'invalid_token' },
  unsupported_algorithm: { status: 401, description: "the token's alg is not allowed for its issuer (never none, never HS for a JWKS issuer)", bearerError: 'invalid_token' },
  forbidden_header: { status: 401, description: 'the token header carries jwk, jku, x5u, x5c or an unknown crit parameter', bearerError: 'invalid_token' },
  unknown_key: { status: 401, description: "no key of the issuer matches the token's kid", bearerError: 'invalid_token' },
  refused_key: { status: 401, description: "the token's kid names a key the issuer publishes but Portcullis refuses (weak RSA, private material, not a signature key)", bearerError: 'invalid_token' },
  invalid_signature: { status: 401, description: 'the token signature does not verify', bearerError: 'invalid_token' },
  token_expired: { status: 401, description: 'the token is past its exp', bearerError: 'invalid_token' },
  token_not_yet_valid: { status: 401, description: 'the token is before its nbf (or iat is in the future)', bearerError: 'invalid_token' },
  token_too_old: { status: 401, description: 'the token is older than the maximum token age', bearerError: 'invalid_token' },
  missing_claim: { status: 401, description: 'a required claim (exp, or one the issuer requires) is missing or wrong', bearerError: 'invalid_token' },
  invalid_audience: { status: 401, description: 'the token audience is not one of the issuer audiences', bearerError: 'invalid_token' },
  invalid_api_key: { status: 401, description: 'the API key is malformed, fails its checksum or is unknown', bearerError: 'invalid_token' },
  key_revoked: { status: 401, description: 'the API key was revoked', bearerError: 'invalid_token' },
  key_expired: { status: 401, description: 'the API key is past its expiry', bearerError: 'invalid_token' },
  invalid_shared_secret: { status: 401, description: 'the shared-secret header does not match', bearerError: 'invalid_token' },
  identity_error: { status: 401, description: "an identity source's compute expression failed to evaluate (e.g. a missing query parameter or claim)" },
  invalid_computed_identity: { status: 401, description: 'a compute expression gave no usable value: tenant/subject not a non-empty string, scopes not a list of strings' },
  session_invalid: { status: 401, description: 'the session is unknown, signed out or expired (answered by the session lookup; cached at most one positive TTL)', bearerError: 'invalid_token' },
  token_inactive: { status: 401, description: 'the introspection endpoint says the opaque token is not active (unknown, revoked or expired)', bearerError: 'invalid_token' },

  // 403: the caller is known but may not do this.
  insufficient_scope: { status: 403, description: 'the caller lacks a scope the route requires', bearerError: 'insufficient_scope' },
  missing_tenant: { status: 403, description: 'the credential carries no tenant and the route requires one' },
  tenant_not_allowed: { status: 403, description: "the caller's tenant may not use this route" },
  tenant_disabled: { status: 403, description: "the caller's tenant is disabled in the policy" },
  credential_not_allowed: { status: 403, description: 'this kind of credential is not accepted on this route' },
  route_not_allowed: { status: 403, description: 'no route matches and the policy default is deny' },
  scheme_not_allowed: { status: 403, description: 'the request scheme is not one of the route\'s match.schemes (e.g. http on an https-only route)' },
  condition_failed: { status: 403, description: "the route's when: expression is false" },
  condition_error: { status: 403, description: 'a route expression (when, rules, match.query) failed to evaluate; never an allow' },
  invalid_request: { status: 403, description: 'the Check request is malformed: no HTTP request attributes' },
  peer_not_allowed: { status: 403, description: "the caller's workload identity (mTLS source.principal) matches no principal of a peer source whose policy denies unmatched peers" },
  invalid_identity: { status: 403, description: "the credential's tenant, subject, email, key id or scopes contain characters that cannot travel in a header (control characters, a TAB) or whitespace at either end, which the upstream would trim, or are too long (256 characters each, 2,048 for a subject, 320 for an email, 256 scopes)" },

  // 429: too many requests.
  rate_limited: { status: 429, description: 'a rate limit is exhausted; Retry-After says when to retry' },
  key_lookup_limited: { status: 429, description: "the API key is not cached and this client already has its share of key lookups pending, or failed bcrypt comparisons of this client or key prefix are over budget" },
  locked_out: { status: 429, description: 'too many rate-limit violations; the key is locked out for a while' },
  banned: { status: 429, description: 'the caller is banned' },

  // 503: Portcullis cannot decide safely (fail closed).
  jwks_unavailable: { status: 503, description: "the issuer's keys could not be fetched (down, or slower than the refetch wait) and the token's key is not cached" },
  store_unavailable: { status: 503, description: 'the API key store is unreachable and the key is not cached' },
  lookup_unavailable: { status: 503, description: 'a lookup target (session, introspection, external key or domain store, enrichment) is down, slow, answered garbage, or the lookup was shed; the answer is not cached' },
  ratelimit_unavailable: { status: 503, description: 'the rate-limit backend is unreachable and the policy fails closed' },
  internal_error: { status: 503, description: 'an unexpected error inside Portcullis (logged); never an allow' },
  not_ready: { status: 503, description: 'Portcullis has no policy loaded yet or is shutting down' },
  overloaded: { status: 503, description: 'too many checks in flight on this replica; refused at once without reading the request (Retry-After: 1)' },
} as const satisfies Record<string, ReasonRow>;

export type ReasonCode = keyof typeof REASONS;

export function reasonRow(reason: ReasonCode): ReasonRow {
  return REASONS[reason];
}

/** Body `code` and `error` label per HTTP status (DESIGN.md response contract). */
export const STATUS_LABELS: Readonly<Record<HttpDenyStatus, { code: string; error: string; grpc: number }>> = {
  400: { code: 'BAD_REQUEST', error: 'Bad Request', grpc: 3 /* INVALID_ARGUMENT */ },
  401: { code: 'UNAUTHORIZED', error: 'Unauthorized', grpc: 16 /* UNAUTHENTICATED */ },
  403: { code: 'FORBIDDEN', error: 'Forbidden', grpc: 7 /* PERMISSION_DENIED */ },
  404: { code: 'NOT_FOUND', error: 'Not Found', grpc: 5 /* NOT_FOUND */ },
  429: { code: 'RATE_LIMITED', error: 'Too Many Requests', grpc: 8 /* RESOURCE_EXHAUSTED */ },
  503: { code: 'UNAVAILABLE', error: 'Service Unavailable', grpc: 14 /* UNAVAILABLE */ },
};
