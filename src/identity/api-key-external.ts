// API keys kept by another system (seed 002: Better Auth's apiKey() plugin), verified by a lookup:
// an HTTP verify endpoint, or an SQL query on the app's own table by the key's SHA-256. Same rules
// as the built-in stores: found in the same headers (or as Bearer with a prefix), the same key
// twice in different places refused, the key stripped upstream unless `forward`, answers cached
// by the key's digest (positive TTL, negative TTL, never past the key's expiresAt), a junk-key
// spray shed per client, a sick store → 503 lookup_unavailable.

import type { ApiKeySourceConfig } from '../keys/config.js';
import { clientShareKey, namedLookup, plausibleCredential } from '../lookup/acquire.js';
import { LookupFailure, type Decoded } from '../lookup/cached-lookup.js';
import { compileAnswerMap, Unusable } from '../lookup/mapping.js';
import type { TargetAnswer } from '../lookup/target.js';
import { clientIp } from '../pipeline/client-ip.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import { isPromise, type Principal, type RequestAttributes } from '../types.js';
import { findApiKey, keyRemoval, newFoundKey } from './api-key-carrier.js';
import { lookupUnavailable } from './session.js';
import { NOT_PRESENT, rejected, type CredentialSource, type IdentifyResult } from './source.js';

const MALFORMED = rejected({ reason: 'malformed_credential', credentialPresented: true, detail: 'more than one API key, or an empty one' });
const UNKNOWN = rejected({ reason: 'invalid_api_key', credentialPresented: true, detail: 'unknown key (external store)' });
const EXPIRED = rejected({ reason: 'key_expired', credentialPresented: true });

export function compileExternalKeySource(config: ApiKeySourceConfig, path: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  const external = config.external!;
  const headers = Object.freeze([...config.headers]);
  const bearerPrefixes = Object.freeze([...config.bearerPrefixes]);
  const prefixes = config.prefixes;
  const mapper = compileAnswerMap(external.map, external.scopes);
  const clock = ctx.runtime.clock;

  const decode = (answer: TargetAnswer): Decoded<Principal | typeof UNKNOWN | typeof EXPIRED> => {
    if (!answer.found) return { value: UNKNOWN, positive: false };
    const mapped = mapper(answer.value);
    if (mapped instanceof Unusable) return { value: UNKNOWN, positive: false };
    const expiresAtMs = mapped.expiresAtMs;
    if (expiresAtMs !== undefined && !(expiresAtMs > clock.now())) return { value: EXPIRED, positive: false };
    const principal: Principal = Object.freeze({
      method: 'api-key',
      tenant: mapped.tenant,
      subject: mapped.subject,
      email: mapped.email,
      keyId: mapped.keyId,
      scopes: mapped.scopes,
      ...(expiresAtMs !== undefined ? { expiresAt: Math.floor(expiresAtMs / 1000) } : {}),
    });
    return { value: principal, positive: true, expiresAtMs };
  };
  const lookup = namedLookup(external.lookup, [...path, 'external', 'lookup'], 'api-key', JSON.stringify(external), decode, ctx);
  if (!lookup) return undefined;
  const ipSettings = ctx.policy.clientIp;

  const removal = keyRemoval(headers, bearerPrefixes, config.forward);
  // Identified results per (principal, slot the key was found in), so a cached key allocates
  // nothing; a key sent in two places (rare) gets its own result removing both.
  const bySlot = [...headers, 'authorization'].map(() => new WeakMap<Principal, IdentifyResult>());
  /** `slot` -1: not memoised (the key was in several places). */
  const settle = (result: Principal | IdentifyResult | LookupFailure, slot: number, removeHeaders: readonly string[] | undefined): IdentifyResult => {
    if (result instanceof LookupFailure) return lookupUnavailable(result);
    if ('kind' in result) return result;
    if (slot < 0) return Object.freeze({ kind: 'principal', principal: result, removeHeaders });
    const memo = bySlot[slot]!;
    let identified = memo.get(result);
    if (identified === undefined) {
      identified = Object.freeze({ kind: 'principal', principal: result, removeHeaders });
      memo.set(result, identified);
    }
    return identified;
  };

  const carried = newFoundKey();
  return {
    method: 'api-key',
    name: `api-key:${[...headers, ...(bearerPrefixes.length > 0 ? ['bearer'] : [])].join(',')}:external`,
    stripHeaders: removal.stripHeaders,
    forwardHeaders: removal.forwardHeaders,
    carrier: removal.carrier,
    identify(request: RequestAttributes) {
      const found = findApiKey(request, headers, bearerPrefixes, carried);
      if (found === 'malformed') return MALFORMED;
      if (found === 'none') return NOT_PRESENT;
      const key = carried.key;
      if (!plausibleCredential(key, 1024) || (prefixes !== undefined && !prefixes.some((p) => key.startsWith(p)))) return UNKNOWN;
      const slot = carried.extraSlots === undefined ? carried.slot : -1;
      const removeHeaders = removal.removeFor(carried);
      const result = lookup.resolve(key, clientShareKey(clientIp(request, ipSettings)));
      return isPromise(result) ? result.then((r) => settle(r, slot, removeHeaders)) : settle(result, slot, removeHeaders);
    },
  };
}
