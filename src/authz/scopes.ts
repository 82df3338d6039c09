/**
 * Scope rule of a route: every scope of `allOf`, and at least one of `anyOf` (when given).
 * Returns the scopes to name in the insufficient_scope challenge, or undefined when satisfied.
 * Routes have a handful of scopes and callers a few dozen, so linear scans beat building sets.
 */
export function missingScopes(granted: readonly string[], allOf: readonly string[], anyOf: readonly string[]): readonly string[] | undefined {
  let missing: string[] | undefined;
  for (let i = 0; i < allOf.length; i++) {
    if (!granted.includes(allOf[i]!)) (missing ??= []).push(allOf[i]!);
  }
  if (missing) return missing;
  if (anyOf.length > 0 && !anyOf.some((scope) => granted.includes(scope))) return anyOf;
  return undefined;
}
