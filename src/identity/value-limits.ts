// How long an identity value may be. Tenant, subject, email, key id and scopes become upstream
// headers, metric labels, rate-limit keys and log fields, and principals are cached by count
// (verified tokens, computed principals, encoded allow headers): without a bound on each value, a
// caller who chooses a claim (a self-service IdP's metadata), a header a `compute:` reads or a
// lookup row could make each cached entry kilobytes and a 256 MB pod run out of memory. Values are
// refused where they are made (claims, lookup answers, computed values) and once more before an
// allow (pipeline/decision.ts), as 403 invalid_identity.

/** Tenant, key id, and each scope. */
export const MAX_IDENTITY_CHARS = 256;
/** A subject may be a SPIFFE ID, which the SPIFFE spec allows up to 2,048 bytes. */
export const MAX_SUBJECT_CHARS = 2048;
/** RFC 5321's limit on a path (address) is 256 octets; 320 is the common bound with the local part. */
export const MAX_EMAIL_CHARS = 320;
/** Scopes one principal may carry. */
export const MAX_SCOPES = 256;

/** The field's bound. */
export function maxCharsOf(what: string): number {
  return what === 'email' ? MAX_EMAIL_CHARS : what === 'subject' ? MAX_SUBJECT_CHARS : MAX_IDENTITY_CHARS;
}

/** Scopes as read from a claim or an answer: a scope longer than the bound is not one (dropped, as
 * any value that is not a scope token); past MAX_SCOPES + 1 nothing more is read (then refused). */
export function scopeFits(into: ReadonlySet<string>, scope: string): boolean {
  return scope.length <= MAX_IDENTITY_CHARS && into.size <= MAX_SCOPES;
}
