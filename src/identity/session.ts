// Opaque sessions (seed 002 dashboards): a session cookie or header whose value means nothing to
// Portcullis, resolved by a lookup (Better Auth's /api/auth/get-session, Ory Kratos'
// /sessions/whoami, a sessions table) into tenant, subject, email and scopes.
//   - not found / signed out / expired → 401 session_invalid (remembered for the negative TTL);
//   - a found session is used for at most the positive TTL (default 30 s) and never past the
//     expiry its answer carries: a signed-out session is refused at the latest one TTL later;
//   - the target down, slow, sick or the lookup shed → 503 lookup_unavailable, never an allow.

import { compileTokenPlace, MALFORMED } from '../jwt/token-places.js';
import { clientShareKey, namedLookup, plausibleCredential } from '../lookup/acquire.js';
import { LookupFailure, type Decoded } from '../lookup/cached-lookup.js';
import { compileAnswerMap, Unusable } from '../lookup/mapping.js';
import type { SessionSourceConfig } from '../lookup/schema.js';
import type { TargetAnswer } from '../lookup/target.js';
import { clientIp } from '../pipeline/client-ip.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import { isPromise, type Principal, type RequestAttributes } from '../types.js';
import { NOT_PRESENT, rejected, type CredentialSource, type IdentifyResult, type Rejected } from './source.js';

const MALFORMED_RESULT = rejected({ reason: 'malformed_credential', credentialPresented: true, detail: 'session credential sent twice or not visible ASCII' });
const INVALID = rejected({ reason: 'session_invalid', credentialPresented: true });

export function lookupUnavailable(failure: LookupFailure): Rejected {
  return rejected({ reason: 'lookup_unavailable', credentialPresented: true, retryAfter: failure.retryAfter, detail: failure.detail });
}

export function compileSessionSource(config: SessionSourceConfig, path: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  const place = compileTokenPlace(config.cookie !== undefined ? { cookie: config.cookie } : { header: config.header! });
  const removeHeaders = config.removeCredential ? Object.freeze([place.carrier]) : undefined;
  const mapper = compileAnswerMap(config.map, config.scopes);
  const clock = ctx.runtime.clock;

  const decode = (answer: TargetAnswer): Decoded<IdentifyResult> => {
    if (!answer.found) return { value: INVALID, positive: false };
    const mapped = mapper(answer.value);
    if (mapped instanceof Unusable) return { value: rejected({ reason: 'session_invalid', credentialPresented: true, detail: mapped.detail }), positive: false };
    const expiresAtMs = mapped.expiresAtMs;
    if (expiresAtMs !== undefined && !(expiresAtMs > clock.now())) return { value: INVALID, positive: false };
    const principal: Principal = Object.freeze({
      method: 'session',
      tenant: mapped.tenant,
      subject: mapped.subject,
      email: mapped.email,
      scopes: mapped.scopes,
      ...(expiresAtMs !== undefined ? { expiresAt: Math.floor(expiresAtMs / 1000) } : {}),
    });
    return { value: Object.freeze({ kind: 'principal', principal, removeHeaders }), positive: true, expiresAtMs };
  };

  const lookup = namedLookup(config.lookup, [...path, 'lookup'], 'session', JSON.stringify(config), decode, ctx);
  if (!lookup) return undefined;
  const ipSettings = ctx.policy.clientIp;
  const settle = (result: IdentifyResult | LookupFailure): IdentifyResult => (result instanceof LookupFailure ? lookupUnavailable(result) : result);

  return {
    method: 'session',
    name: `session:${place.label}`,
    identify(request: RequestAttributes) {
      const found = place.find(request.headers);
      if (found === undefined) return NOT_PRESENT;
      if (found === MALFORMED || !place.wellFormed(found) || !plausibleCredential(found)) return MALFORMED_RESULT;
      const result = lookup.resolve(found, clientShareKey(clientIp(request, ipSettings)));
      return isPromise(result) ? result.then(settle) : settle(result);
    },
  };
}
