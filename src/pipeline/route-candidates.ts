// Which routes a request can reach, given that the upstream may read its path differently from
// Portcullis (authz/path.ts) and may or may not ignore case. The pipeline then evaluates every
// candidate and allows only if every one allows ("the strictest route decides").
//
// Hot path: a plain canonical lower-case path without trailing slash, in a policy whose path
// patterns are lower-case, has exactly one reading: the caller matches it directly and never gets
// here (authorize.ts).

import { classifyPath, hasUpperCase, PathShape, pathReadings } from '../authz/path.js';
import type { CompiledPolicy, CompiledRoute } from '../policy/compile.js';
import type { PathSettings } from '../policy/schema.js';
import type { Denial, RequestAttributes } from '../types.js';

/** One route (the common case, no allocation), several (every one must allow), or a refusal. */
export type Candidates = CompiledRoute | readonly CompiledRoute[] | Denial;

const NOT_CANONICAL: Denial = Object.freeze({
  reason: 'invalid_path',
  detail: 'path is not canonical (dot segments, ";" parameters, encoded separators or unreserved characters, "\\", "//"); policy paths.nonCanonical is refuse',
});
const INVALID: Denial = Object.freeze({
  reason: 'invalid_path',
  detail: 'path is not a valid absolute path (bad or control escape, raw non-ASCII, not UTF-8, or a character that case-folds to ASCII)',
});
const TOO_MANY: Denial = Object.freeze({ reason: 'invalid_path', detail: 'path has too many possible readings' });

export function routeCandidates(policy: CompiledPolicy, request: RequestAttributes): Candidates {
  const raw = request.path;
  const shape = classifyPath(raw);
  if (shape === PathShape.Invalid) return INVALID;
  const { host, method } = request;
  const matching = policy.paths;

  // Canonical, one spelling: at most a case-folded second match, usually to the same route.
  if (shape === PathShape.Canonical && !matching.patternsEndWithSlash && !(raw.length > 1 && raw.endsWith('/'))) {
    const exact = policy.routes.match(host, method, raw) ?? policy.defaultRoute;
    const lower = raw.toLowerCase();
    if (lower === raw && !matching.patternsHaveUpperCase) return exact;
    const folded = matching.folded.match(host, method, lower) ?? policy.defaultRoute;
    if (folded === exact) return exact;
  }

  let readings: string[];
  if (shape === PathShape.Canonical) {
    readings = raw.length > 1 && raw.endsWith('/') ? [raw, raw.slice(0, -1)] : [raw];
  } else {
    if (!matching.anyStrictest) return NOT_CANONICAL;
    const all = pathReadings(raw);
    if (all === undefined) return TOO_MANY;
    readings = all;
  }
  if (policy.paths.patternsEndWithSlash) {
    // Non-strict routers also serve "/x" from a route written "/x/".
    for (const r of [...readings]) if (!r.endsWith('/')) readings.push(r + '/');
  }

  const exact = new Set<CompiledRoute>();
  for (const r of readings) exact.add(policy.routes.match(host, method, r) ?? policy.defaultRoute);
  const folded = new Set<CompiledRoute>();
  const foldMatters = matching.patternsHaveUpperCase || readings.some(hasUpperCase);
  if (foldMatters) {
    for (const r of readings) folded.add(matching.folded.match(host, method, r.toLowerCase()) ?? policy.defaultRoute);
  }

  const hostSettings = settingsForHost(policy, host);
  const union = new Set([...exact, ...folded]);
  let candidates: Set<CompiledRoute> = union;
  if (foldMatters) {
    const upstreamCase = agreed(union, 'upstreamCase') ?? hostSettings?.upstreamCase ?? matching.upstreamCase;
    if (upstreamCase === 'sensitive') candidates = exact;
    else if (upstreamCase === 'insensitive') candidates = folded;
  }

  if (shape === PathShape.NonCanonical) {
    const fallback = hostSettings?.nonCanonical ?? matching.nonCanonical;
    for (const route of union) {
      if ((route.paths?.nonCanonical ?? fallback) !== 'strictest') return NOT_CANONICAL;
    }
  }
  if (candidates.size === 1) return candidates.values().next().value!;
  return [...candidates];
}

/** The value every route declares for `key`, when they all declare the same one. */
function agreed<K extends keyof PathSettings>(routes: ReadonlySet<CompiledRoute>, key: K): PathSettings[K] | undefined {
  let value: PathSettings[K] | undefined;
  for (const route of routes) {
    const v = route.paths?.[key];
    if (v === undefined) return undefined;
    if (value === undefined) value = v;
    else if (v !== value) return undefined;
  }
  return value;
}

function settingsForHost(policy: CompiledPolicy, host: string): PathSettings | undefined {
  const m = policy.paths;
  if (m.exactHosts.size > 0) {
    const hit = m.exactHosts.get(host);
    if (hit) return hit;
  }
  for (const { suffix, settings } of m.wildcardHosts) {
    if (host.length > suffix.length && host.endsWith(suffix)) return settings;
  }
  return undefined;
}
