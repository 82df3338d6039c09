// How long an identity value may be. Tenant, subject, email, key id and scopes become upstream
// headers, metric labels, rate-limit keys and log fields, and principals are cached by count
// (verified tokens, computed principals, encoded allow headers): without a bound on each value, a
// caller who chooses a claim (a self-service IdP's metadata), a header a `compute:` reads or a
// lookup row could make each cached entry kilobytes and a 256 MB pod run out of memory. Values are
// refused where they are made (claims, lookup answers, computed values) and once more before an
// allow (pipeline/decision.ts), as 403 invalid_identity.

/** Tenant, subject, key id, and each scope. */
export const MAX_IDENTITY_CHARS = 256;
/** RFC 5321's limit on a path (address) is 256 octets; 320 is the common bound with the local part. */
export const MAX_EMAIL_CHARS = 320;
/** Scopes one principal may carry. */
export const MAX_SCOPES = 256;

/** The field's bound. */
export function maxCharsOf(what: string): number {
  return what === 'email' ? MAX_EMAIL_CHARS : MAX_IDENTITY_CHARS;
}
