// Opaque OAuth 2.0 access tokens checked by RFC 7662 token introspection. Bearer values shaped like
// a JWT (two dots) are not ours: the jwt source verifies those. For the others:
//   - POST token=<t>&token_type_hint=access_token to the endpoint, authenticated as the client
//     (client_secret_basic or client_secret_post);
//   - active:false (unknown, revoked, expired at the server) → 401 token_inactive;
//   - exp in the past → token_expired, nbf in the future → token_not_yet_valid, aud not one of
//     `audiences` → invalid_audience, client_id not one of `clientIds` → credential refused;
//   - sub, scope (and whatever `map` says) become the principal, like a JWT issuer's claims;
//   - answers are cached for the positive TTL and never past exp; the endpoint refusing our client
//     credentials (401), failing, or slow is 503 lookup_unavailable.

import { compileTokenPlace, hasJwsShape, MALFORMED } from '../jwt/token-places.js';
import { cachedLookup, clientShareKey, plausibleCredential } from '../lookup/acquire.js';
import { LookupFailure, type Decoded } from '../lookup/cached-lookup.js';
import { HttpTarget, type HttpTargetOptions } from '../lookup/http.js';
import { createHash } from 'node:crypto';
import { compileAnswerMap, toEpochMs, Unusable } from '../lookup/mapping.js';
import type { IntrospectionSourceConfig } from '../lookup/schema.js';
import type { LookupTarget, TargetAnswer } from '../lookup/target.js';
import { clientIp } from '../pipeline/client-ip.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import { isPromise, type Principal, type RequestAttributes } from '../types.js';
import { lookupUnavailable } from './session.js';
import { chainOf, NOT_PRESENT, readsBearerJwt, rejected, type CredentialSource, type IdentifyResult } from './source.js';

const MALFORMED_RESULT = rejected({ reason: 'malformed_credential', credentialPresented: true });
const INACTIVE = rejected({ reason: 'token_inactive', credentialPresented: true });
const EXPIRED = rejected({ reason: 'token_expired', credentialPresented: true });
const NOT_YET = rejected({ reason: 'token_not_yet_valid', credentialPresented: true });
const WRONG_AUDIENCE = rejected({ reason: 'invalid_audience', credentialPresented: true });
const WRONG_CLIENT = rejected({ reason: 'token_inactive', credentialPresented: true, detail: 'token issued to a client this policy does not accept' });

const JWT_WITHOUT_JWT_SOURCE = rejected({ reason: 'invalid_token', credentialPresented: true, detail: 'a JWT, and no jwt source of this identity chain reads Authorization: Bearer' });

export function compileIntrospectionSource(config: IntrospectionSourceConfig, path: PolicyPath, ctx: CompileContext): CredentialSource {
  const place = compileTokenPlace({ header: 'authorization', scheme: 'Bearer' });
  const mapper = compileAnswerMap(config.map, config.scopes, { subject: 'sub', scopes: ['scope'] });
  const audiences = config.audiences ? new Set(config.audiences) : undefined;
  const clientIds = config.clientIds ? new Set(config.clientIds) : undefined;
  const clock = ctx.runtime.clock;

  const basic = `Basic ${Buffer.from(`${encodeURIComponent(config.clientId)}:${encodeURIComponent(config.clientSecret)}`).toString('base64')}`;
  const form: Record<string, string> = { token: '{{credential}}', token_type_hint: 'access_token' };
  if (config.clientAuth === 'post') Object.assign(form, { client_id: config.clientId, client_secret: config.clientSecret });
  const targetOptions: HttpTargetOptions = {
    url: config.endpoint,
    method: 'POST',
    headers: config.clientAuth === 'basic' ? { authorization: basic } : {},
    form,
    notFound: [],
    maxResponseBytes: config.maxResponseBytes,
  };

  const decode = (answer: TargetAnswer): Decoded<IdentifyResult> => {
    if (!answer.found || typeof answer.value !== 'object' || answer.value === null) throw new TypeError('introspection answer is not an object');
    const body = answer.value as Record<string, unknown>;
    if (body.active !== true) return { value: INACTIVE, positive: false };
    const now = clock.now();
    const exp = toEpochMs(body.exp);
    if (exp !== undefined && !(exp > now)) return { value: EXPIRED, positive: false };
    const nbf = toEpochMs(body.nbf);
    if (nbf !== undefined && nbf > now) return { value: NOT_YET, positive: false };
    if (audiences) {
      const aud = typeof body.aud === 'string' ? [body.aud] : Array.isArray(body.aud) ? body.aud : [];
      if (!aud.some((a) => typeof a === 'string' && audiences.has(a))) return { value: WRONG_AUDIENCE, positive: false, expiresAtMs: exp };
    }
    if (clientIds && !(typeof body.client_id === 'string' && clientIds.has(body.client_id))) return { value: WRONG_CLIENT, positive: false, expiresAtMs: exp };
    const mapped = mapper(body);
    if (mapped instanceof Unusable) return { value: rejected({ reason: 'invalid_identity', credentialPresented: true, detail: mapped.detail }), positive: false };
    const principal: Principal = Object.freeze({
      method: 'introspection',
      tenant: mapped.tenant,
      // Client-credentials tokens have no sub: the client is the subject then.
      subject: mapped.subject ?? (config.map.subject === undefined && typeof body.client_id === 'string' && plausibleCredential(body.client_id, 256) ? body.client_id : undefined),
      email: mapped.email,
      scopes: mapped.scopes,
      ...(exp !== undefined ? { expiresAt: Math.floor(exp / 1000) } : {}),
    });
    return { value: Object.freeze({ kind: 'principal', principal }), positive: true, expiresAtMs: exp };
  };

  const runtime = ctx.runtime;
  // Keyed by a digest: resource keys must not hold the client secret.
  const targetKey = `introspection:${createHash('sha256').update(JSON.stringify(targetOptions)).digest('base64url')}`;
  const target = runtime.resources.acquire<LookupTarget>(targetKey, () => new HttpTarget(targetOptions), (t) => t.close());
  const lookup = cachedLookup(runtime, `${targetKey}:${createHash('sha256').update(JSON.stringify(config)).digest('base64url')}`, target, hostOf(config.endpoint), 'introspection', config, decode);
  const ipSettings = ctx.policy.clientIp;
  const jwtElsewhere = chainOf(path, ctx).some(readsBearerJwt);
  const settle = (result: IdentifyResult | LookupFailure): IdentifyResult => (result instanceof LookupFailure ? lookupUnavailable(result) : result);

  return {
    method: 'introspection',
    name: `introspection:${hostOf(config.endpoint)}`,
    identify(request: RequestAttributes) {
      const found = place.find(request.headers);
      if (found === undefined) return NOT_PRESENT;
      if (found === MALFORMED) return MALFORMED_RESULT;
      // A JWT is the chain's jwt source's business. Without one it is refused here (introspection
      // is for opaque tokens; providers answer such a token 400, which is no answer): never a
      // fall-through to a weaker source, as if no credential had been sent.
      if (hasJwsShape(found)) return jwtElsewhere ? NOT_PRESENT : JWT_WITHOUT_JWT_SOURCE;
      if (!plausibleCredential(found) || !place.wellFormed(found)) return MALFORMED_RESULT;
      const result = lookup.resolve(found, clientShareKey(clientIp(request, ipSettings)));
      return isPromise(result) ? result.then(settle) : settle(result);
    },
  };
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'introspection';
  }
}
