// Host header → tenant with fixed scopes (seed 002: storefronts resolve their tenant from the
// domain they are served on and get the storefront scope only). Weak by nature — any client can
// set Host — so give such tenants only scopes that are safe for anonymous shoppers.

import type { HostSourceConfig } from '../policy/schema.js';
import type { Principal, RequestAttributes } from '../types.js';
import { NOT_PRESENT, type CredentialSource, type IdentifyResult } from './source.js';

export function compileHostSource(config: HostSourceConfig): CredentialSource {
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

  return {
    method: 'host',
    name: 'host',
    identify(request: RequestAttributes): IdentifyResult {
      const host = request.host;
      const hit = exact.get(host);
      if (hit) return hit;
      for (const { suffix, result } of wildcards) {
        if (host.length > suffix.length && host.endsWith(suffix)) return result;
      }
      return NOT_PRESENT;
    },
  };
}
