// A request target ("/v1/items?id=1") split the way every transport splits it: the pipeline's path
// and query rules (authz/path.ts) then apply to the same strings whichever transport carried the
// request.

export interface RequestTarget {
  /** Path without the query string, as sent (no percent-decoding). */
  readonly path: string;
  /** Query string without the leading "?" ("" when absent). */
  readonly query: string;
}

/**
 * Split at the first "?"; a fragment after it is dropped from the query. A "#" before any "?" stays
 * in the path, which is then refused (authz/path.ts): upstreams disagree on it, and cutting it off
 * would judge "/health#/../admin" as "/health".
 */
export function splitRequestTarget(target: string): RequestTarget {
  const q = target.indexOf('?');
  if (q < 0) return { path: target, query: '' };
  const query = target.slice(q + 1);
  const hash = query.indexOf('#');
  return { path: target.slice(0, q), query: hash >= 0 ? query.slice(0, hash) : query };
}
