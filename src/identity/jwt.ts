// JWT bearer credentials (issue 3). Finds a token in the configured places, answers from the
// verified-token cache when it can (synchronously), and otherwise verifies it against the
// source's issuers (src/jwt/verifier.ts).

import { VerifiedTokenCache } from '../jwt/cache.js';
import type { JwtSourceConfig } from '../jwt/config.js';
import { compileIssuer, type CompiledIssuer } from '../jwt/issuer.js';
import { compileTokenPlace, hasJwsShape, isCompactJws, MALFORMED, type TokenPlace } from '../jwt/token-places.js';
import { deny, isDenial, JwtVerifier, timeViolation, type Verification, type VerifiedToken } from '../jwt/verifier.js';
import type { Clock } from '../clock.js';
import { Interner } from '../intern.js';
import type { Logger } from '../observability/logger.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import { closest } from '../policy/suggest.js';
import { isPromise, type Denial, type MaybePromise, type RequestAttributes } from '../types.js';
import { chainOf, headersClaimedWhole, isBearerAuthorization, NOT_PRESENT, rejected, type CredentialSource, type IdentifyResult } from './source.js';

export function compileJwtSource(config: JwtSourceConfig, path: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  const issuers = resolveIssuers(config, path, ctx);
  if (!issuers) return undefined;
  return new JwtSource(config, issuers, nonJwtBearerRule(config.nonJwtBearer, path, ctx), ctx);
}

/**
 * Whether a value after a scheme (Bearer) that is not a JWT goes on to the next source (true) or
 * is answered invalid_token (false), for the place it was found in. Unset, it goes on only to a
 * source of this chain that reads that very place: one taking the whole header (a shared secret,
 * session or API key header of that name), or, for `Authorization: Bearer`, introspection or an
 * API key source whose bearerPrefixes the value starts with. Anything else would fall through to
 * a weaker source (a Host mapping) and be allowed as if no credential had been sent: a bad token
 * is a 401.
 */
function nonJwtBearerRule(setting: 'pass' | 'reject' | undefined, path: PolicyPath, ctx: CompileContext): (token: string, place: TokenPlace) => boolean {
  if (setting !== undefined) return setting === 'pass' ? () => true : () => false;
  const chain = chainOf(path, ctx);
  const wholeHeaders = new Set(chain.flatMap(headersClaimedWhole));
  const introspection = chain.some((entry) => entry.introspection !== undefined);
  const prefixes = chain.flatMap((entry) => (entry.apiKey as { bearerPrefixes?: string[] } | undefined)?.bearerPrefixes ?? []);
  return (token, place) => {
    if (wholeHeaders.has(place.carrier)) return true;
    if (!isBearerAuthorization(place)) return false;
    return introspection || prefixes.some((p) => token.startsWith(p));
  };
}

function resolveIssuers(config: JwtSourceConfig, path: PolicyPath, ctx: CompileContext): CompiledIssuer[] | undefined {
  const issuers: CompiledIssuer[] = [];
  const byIss = new Map<string | undefined, string>();
  let ok = true;
  config.issuers.forEach((name, i) => {
    const at = [...path, 'issuers', i];
    const issuerConfig = Object.hasOwn(ctx.policy.issuers, name) ? ctx.policy.issuers[name] : undefined;
    if (!issuerConfig) {
      const known = Object.keys(ctx.policy.issuers);
      const hint = closest(name, known);
      ctx.error(at, `unknown issuer "${name}" (${hint !== undefined ? `did you mean "${hint}"? ` : ''}${known.length > 0 ? `issuers defines ${known.join(', ')}` : 'the policy has no issuers section'})`);
      ok = false;
      return;
    }
    const other = byIss.get(issuerConfig.issuer);
    if (other !== undefined) {
      const what = issuerConfig.issuer === undefined ? 'both accept tokens without iss' : `have the same issuer ${issuerConfig.issuer}`;
      ctx.error(at, `issuers ${other} and ${name} ${what}: a token could not be told apart`);
      ok = false;
      return;
    }
    byIss.set(issuerConfig.issuer, name);
    issuers.push(compileIssuer(name, issuerConfig, ctx));
  });
  return ok ? issuers : undefined;
}

const MALFORMED_RESULT = rejected({ reason: 'malformed_credential', credentialPresented: true });
const NOT_A_JWT = rejected(deny('invalid_token', 'not a compact JWS'));

class JwtSource implements CredentialSource {
  readonly method = 'jwt' as const;
  readonly name: string;
  private readonly places: readonly TokenPlace[];
  private readonly removeByPlace: ReadonlyMap<TokenPlace, readonly string[]> | undefined;
  private readonly verifier: JwtVerifier;
  private readonly cache: VerifiedTokenCache | undefined;
  private readonly maxTokenSize: number;
  private readonly tooLarge: IdentifyResult;
  private readonly clock: Clock;
  private readonly logger: Logger;

  constructor(
    config: JwtSourceConfig,
    issuers: readonly CompiledIssuer[],
    private readonly passNonJwtBearer: (token: string, place: TokenPlace) => boolean,
    ctx: CompileContext,
  ) {
    this.name = `jwt:${config.issuers.join(',')}`;
    this.places = config.from.map(compileTokenPlace);
    this.removeByPlace = config.forward ? undefined : new Map(this.places.map((place) => [place, Object.freeze([place.carrier])]));
    this.clock = ctx.runtime.clock;
    this.logger = ctx.runtime.logger.child({ source: this.name });
    const interner = new Interner();
    this.verifier = new JwtVerifier(issuers, this.clock, interner);
    this.cache = config.cacheSize > 0 ? new VerifiedTokenCache(config.cacheSize, issuers, interner, ctx.runtime.metrics) : undefined;
    this.maxTokenSize = config.maxTokenSize;
    this.tooLarge = rejected(deny('token_too_large', `longer than ${config.maxTokenSize} bytes`));
  }

  identify(request: RequestAttributes): MaybePromise<IdentifyResult> {
    try {
      for (const place of this.places) {
        const found = place.find(request.headers);
        if (found === undefined) continue;
        if (found === MALFORMED) return MALFORMED_RESULT;
        return this.identifyToken(found, place);
      }
      return NOT_PRESENT;
    } catch (err) {
      return this.internalError(err);
    }
  }

  /**
   * The payload of the token identify() found in this request. Expressions run only after
   * identify() accepted the very same token (the places are read in the same order), so this
   * decodes, it does not verify again. Undefined when no token is there or it does not decode.
   */
  claimsOf(request: RequestAttributes): Readonly<Record<string, unknown>> | undefined {
    try {
      for (const place of this.places) {
        const found = place.find(request.headers);
        if (found === undefined) continue;
        if (found === MALFORMED || !hasJwsShape(found)) return undefined;
        const first = found.indexOf('.');
        const second = found.indexOf('.', first + 1);
        const value: unknown = JSON.parse(Buffer.from(found.slice(first + 1, second), 'base64url').toString('utf8'));
        return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
      }
    } catch {
      return undefined;
    }
    return undefined;
  }

  private identifyToken(token: string, place: TokenPlace): MaybePromise<IdentifyResult> {
    if (place.shared && !hasJwsShape(token)) {
      // Not a JWT after "Bearer": an API key, say. Another source may own it.
      if (!place.wellFormed(token)) return MALFORMED_RESULT;
      return this.passNonJwtBearer(token, place) ? NOT_PRESENT : NOT_A_JWT;
    }
    if (token.length > this.maxTokenSize) return this.tooLarge;

    const cacheKey = this.cache?.keyOf(token);
    if (cacheKey !== undefined) {
      const hit = this.cache!.get(cacheKey);
      if (hit !== undefined) {
        const late = timeViolation(hit.exp, hit.nbf, hit.iat, this.clock.now() / 1000, hit.issuer);
        if (late === undefined && !hit.key.retired) return this.resultFor(hit, place);
        this.cache!.delete(cacheKey);
        if (late !== undefined) return rejected(deny(late));
        // Its key was rotated out: verify again, which now fails (or finds the key re-added).
      }
    }

    // A cached token passed these once already, hence their place after the lookup.
    if (!place.wellFormed(token)) return MALFORMED_RESULT;
    if (!isCompactJws(token)) return NOT_A_JWT;

    const outcome = this.verifier.verify(token);
    if (isPromise(outcome)) {
      return outcome.then(
        (resolved) => this.settle(resolved, cacheKey, place),
        (err: unknown) => this.internalError(err),
      );
    }
    return this.settle(outcome, cacheKey, place);
  }

  private settle(outcome: Verification, cacheKey: string | undefined, place: TokenPlace): IdentifyResult {
    if (isDenial(outcome)) return rejected(outcome);
    if (cacheKey !== undefined) this.cache!.set(cacheKey, outcome);
    return this.resultFor(outcome, place);
  }

  private resultFor(entry: VerifiedToken, place: TokenPlace): IdentifyResult {
    if (this.removeByPlace === undefined) return entry;
    return { kind: 'principal', principal: entry.principal, removeHeaders: this.removeByPlace.get(place) };
  }

  private internalError(err: unknown): IdentifyResult {
    this.logger.error({ err }, 'JWT verification failed unexpectedly');
    const denial: Denial = { reason: 'internal_error', detail: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
    return rejected(denial);
  }
}
