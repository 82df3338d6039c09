// Host header → tenant with fixed scopes (seed 002: storefronts resolve their tenant from the
// domain they are served on and get the storefront scope only). Weak by nature — any client can
// set Host — so give such tenants only scopes that are safe for anonymous shoppers.
//
// Order: static exact domains, static wildcards (longest first), subdomain patterns (the tenant is
// the host's first label), then the store: a lookup by host name (e.g. `select tenant, scopes
// from tenant_domains where domain = $1`), cached; unknown hosts are remembered for the negative
// TTL and pass to the next source. A store that cannot answer is 503 lookup_unavailable.

import { clientShareKey, namedLookup } from '../lookup/acquire.js';
import { LookupFailure, type Decoded } from '../lookup/cached-lookup.js';
import { compileAnswerMap, Unusable } from '../lookup/mapping.js';
import type { TargetAnswer } from '../lookup/target.js';
import { clientIp } from '../pipeline/client-ip.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { HostSourceConfig } from '../policy/schema.js';
import { isPromise, type MaybePromise, type Principal, type RequestAttributes } from '../types.js';
import { lookupUnavailable } from './session.js';
import { NOT_PRESENT, type CredentialSource, type IdentifyResult } from './source.js';

const HOST_NAME = /^[a-z0-9](?:[a-z0-9-]{0,62})(?:\.[a-z0-9](?:[a-z0-9-]{0,62}))*$/;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,62})$/;

export function compileHostSource(config: HostSourceConfig, path: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  const exact = new Map<string, IdentifyResult>();
  const wildcards: { suffix: string; result: IdentifyResult }[] = [];
  for (const [domain, entry] of Object.entries(config.domains)) {
    const principal: Principal = Object.freeze({
      method: 'host',
      tenant: entry.tenant,
      subject: entry.subject ?? `host:${domain.toLowerCase()}`,
      scopes: Object.freeze([...entry.scopes]),
    });
    const result: IdentifyResult = Object.freeze({ kind: 'principal', principal });
    const name = domain.toLowerCase();
    if (name.startsWith('*.')) wildcards.push({ suffix: name.slice(1), result });
    else exact.set(name, result);
  }
  // Longest suffix first so "*.eu.shop.example" beats "*.shop.example".
  wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
  const patterns = config.patterns.map((p) => ({ suffix: p.pattern.slice('{tenant}'.length).toLowerCase(), tenant: p.tenant.split('{tenant}'), scopes: Object.freeze([...p.scopes]) }));
  patterns.sort((a, b) => b.suffix.length - a.suffix.length);
  // Principals computed from patterns, one per host seen (bounded: the oldest go first).
  const patternResults = new Map<string, IdentifyResult>();

  let store: ((host: string, request: RequestAttributes) => MaybePromise<IdentifyResult>) | undefined;
  if (config.store) {
    const mapper = compileAnswerMap(config.store.map, config.store.scopes);
    const decode = (answer: TargetAnswer, host: string): Decoded<IdentifyResult> => {
      if (!answer.found) return { value: NOT_PRESENT, positive: false };
      const mapped = mapper(answer.value);
      if (mapped instanceof Unusable || mapped.tenant === undefined) return { value: NOT_PRESENT, positive: false };
      return { value: Object.freeze({ kind: 'principal', principal: Object.freeze({ method: 'host', tenant: mapped.tenant, subject: mapped.subject ?? `host:${host}`, scopes: mapped.scopes }) }), positive: true, expiresAtMs: mapped.expiresAtMs };
    };
    const lookup = namedLookup(config.store.lookup, [...path, 'store', 'lookup'], 'host', JSON.stringify(config.store), decode, ctx);
    if (!lookup) return undefined;
    const ipSettings = ctx.policy.clientIp;
    const settle = (result: IdentifyResult | LookupFailure): IdentifyResult => (result instanceof LookupFailure ? lookupUnavailable(result) : result);
    store = (host, request) => {
      const result = lookup.resolve(host, clientShareKey(clientIp(request, ipSettings)));
      return isPromise(result) ? result.then(settle) : settle(result);
    };
  }

  return {
    method: 'host',
    name: 'host',
    identify(request: RequestAttributes): MaybePromise<IdentifyResult> {
      const host = request.host;
      const hit = exact.get(host);
      if (hit) return hit;
      for (const { suffix, result } of wildcards) {
        if (host.length > suffix.length && host.endsWith(suffix)) return result;
      }
      if (patterns.length === 0 && store === undefined) return NOT_PRESENT;
      if (host.length > 253 || !HOST_NAME.test(host)) return NOT_PRESENT;
      for (const { suffix, tenant, scopes } of patterns) {
        if (host.length <= suffix.length || !host.endsWith(suffix)) continue;
        const label = host.slice(0, host.length - suffix.length);
        if (!LABEL.test(label)) continue;
        let result = patternResults.get(host);
        if (result === undefined) {
          result = Object.freeze({ kind: 'principal', principal: Object.freeze({ method: 'host', tenant: tenant.join(label), subject: `host:${host}`, scopes }) });
          if (patternResults.size >= 10_000) patternResults.delete(patternResults.keys().next().value!);
          patternResults.set(host, result);
        }
        return result;
      }
      return store ? store(host, request) : NOT_PRESENT;
    },
  };
}
