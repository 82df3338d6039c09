// request.headers never shows a credential. Every header a credential source anywhere in the
// policy reads (Authorization, API-key headers, the Cookie header when tokens come from cookies,
// shared-secret and session headers), plus Authorization, Proxy-Authorization and Cookie always,
// is hidden: an expression that names one is refused at load, so no rule can copy a secret into a
// decision; nor can a rate-limit key (ratelimit/compile.ts).

import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { IdentitySourceConfig, PolicyDocument } from '../policy/schema.js';
import type { CompiledExpression } from './compile.js';

const ALWAYS_HIDDEN = ['authorization', 'proxy-authorization', 'cookie'];

const cache = new WeakMap<PolicyDocument, ReadonlySet<string>>();

export function credentialHeaderNames(policy: PolicyDocument): ReadonlySet<string> {
  let names = cache.get(policy);
  if (names) return names;
  const set = new Set<string>(ALWAYS_HIDDEN);
  const chains: (readonly IdentitySourceConfig[])[] = [policy.identity, ...policy.routes.map((r) => r.identity ?? [])];
  for (const chain of chains) {
    for (const entry of chain) {
      if (entry.sharedSecret) set.add(entry.sharedSecret.header.toLowerCase());
      if (entry.session?.header) set.add(entry.session.header.toLowerCase());
      if (entry.session?.cookie) set.add('cookie');
      if (entry.apiKey) for (const h of entry.apiKey.headers) set.add(h.toLowerCase());
      if (entry.jwt) {
        for (const place of entry.jwt.from) {
          if ('cookie' in place || 'supabaseCookie' in place) set.add('cookie');
          else set.add(place.header.toLowerCase());
        }
      }
    }
  }
  names = set;
  cache.set(policy, names);
  return names;
}

/** Refuses (ctx.error) an expression that reads a hidden header; true when it reads none. */
export function checkHeaderNames(expression: CompiledExpression, hidden: ReadonlySet<string>, at: PolicyPath, ctx: CompileContext): boolean {
  const refused = expression.headerNames.filter((h) => hidden.has(h));
  if (refused.length === 0) return true;
  ctx.error(at, `expression ${JSON.stringify(expression.text)}: request.headers["${refused[0]}"] carries a credential of the identity chain and is never visible to expressions`);
  return false;
}
