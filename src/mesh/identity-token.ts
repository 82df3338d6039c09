// The identity token for upstreams (README "Identity token for upstreams"): a short-lived JWT
// Portcullis signs on allow so that a service can verify who is calling instead of trusting
// x-tenant-id because it is told to.
//
// Never one signature per request: a token is cached per (principal, audience) and handed out
// again until `reuse` of its lifetime has passed; then the next request gets the old (still valid)
// token while a new one is signed in the background. Each token has its own jti, so the jti
// identifies a token, not a request. Concurrent misses share one signature.

import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { MaybePromise, Principal } from '../types.js';
import type { IdentityTokenAlgorithm, SigningKeyring } from './signing-keys.js';

/** The `typ` header of every identity token (RFC 8725 §3.11): verifiers should require it. */
export const IDENTITY_TOKEN_TYPE = 'portcullis-identity+jwt';

export interface IdentityTokenSettings {
  readonly issuer: string;
  readonly algorithm: IdentityTokenAlgorithm;
  readonly lifetimeMs: number;
  /** Fraction of a token's lifetime during which it is handed out again as is. */
  readonly reuse: number;
  readonly cacheSize: number;
}

export interface IssuedToken {
  readonly value: string;
  readonly kid: string;
  /** Keyring generation it was signed in. */
  readonly generation: number;
  /** ms: from then on a new token is signed. */
  readonly refreshAt: number;
  /** ms: the token's exp. */
  readonly expiresAt: number;
}

interface Entry {
  token: IssuedToken | undefined;
  pending: Promise<IssuedToken> | undefined;
}

export class IdentityTokenIssuer {
  private readonly cache: LRUCache<string, Entry>;
  private readonly signed: { inc(labels: { result: 'ok' | 'error' }): void } | undefined;

  constructor(
    readonly settings: IdentityTokenSettings,
    readonly keyring: SigningKeyring,
    private readonly clock: Clock,
    private readonly logger: Logger,
    metrics?: Metrics,
  ) {
    this.cache = new LRUCache({ max: settings.cacheSize });
    this.signed = metrics?.counter('portcullis_identity_tokens_signed_total', 'Identity tokens signed for upstreams (one per caller, audience and reuse window, not per request).', ['result']);
  }

  /** Whether a token handed out before may be handed out again as is (no cache lookup). */
  reusable(token: IssuedToken): boolean {
    return this.clock.now() < token.refreshAt && token.generation === this.keyring.generation;
  }

  /** The token for this caller and audience: cached, or signed (a promise) when there is none usable. */
  tokenFor(principal: Principal, audience: string): MaybePromise<IssuedToken> {
    const key = cacheKey(principal, audience);
    let entry = this.cache.get(key);
    if (entry === undefined) this.cache.set(key, (entry = { token: undefined, pending: undefined }));
    const now = this.clock.now();
    const token = entry.token;
    if (token !== undefined && fitsCredential(token, principal)) {
      const sameKeys = token.generation === this.keyring.generation;
      if (now < token.refreshAt && sameKeys) return token;
      // Past its reuse window but valid for a while yet, and its key still published: hand it out
      // while the next one is signed. After a key change the next token is awaited, so new tokens
      // use the new signing key at once.
      if (sameKeys && now < token.expiresAt - 1000) {
        if (entry.pending === undefined) {
          const pending = this.sign(entry, principal, audience);
          pending.catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'identity token: background signing failed'));
        }
        return token;
      }
    }
    const pending = entry.pending ?? this.sign(entry, principal, audience);
    return pending.then((t) => (fitsCredential(t, principal) ? t : this.sign({ token: undefined, pending: undefined }, principal, audience)));
  }

  private sign(entry: Entry, principal: Principal, audience: string): Promise<IssuedToken> {
    const promise = this.signNow(principal, audience).then(
      (token) => {
        if (entry.pending === promise) {
          entry.pending = undefined;
          entry.token = token;
        }
        return token;
      },
      (err: unknown) => {
        if (entry.pending === promise) entry.pending = undefined;
        throw err;
      },
    );
    entry.pending = promise;
    return promise;
  }

  private async signNow(principal: Principal, audience: string): Promise<IssuedToken> {
    const generation = this.keyring.generation;
    const signer = this.keyring.current.signer;
    const nowMs = this.clock.now();
    const iat = Math.floor(nowMs / 1000);
    let exp = iat + Math.max(1, Math.floor(this.settings.lifetimeMs / 1000));
    // Never outlive the credential it stands for.
    if (principal.expiresAt !== undefined && principal.expiresAt < exp) exp = Math.max(iat + 1, principal.expiresAt);
    const claims: Record<string, unknown> = { tenant: principal.tenant, scopes: principal.scopes, method: principal.method };
    if (principal.keyId !== undefined) claims.key_id = principal.keyId;
    if (principal.email !== undefined) claims.email = principal.email;
    const jwt = new SignJWT(claims)
      .setProtectedHeader({ alg: this.settings.algorithm, kid: signer.kid, typ: IDENTITY_TOKEN_TYPE })
      .setIssuer(this.settings.issuer)
      .setAudience(audience)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(randomBytes(16).toString('base64url'));
    if (principal.subject !== undefined) jwt.setSubject(principal.subject);
    let value: string;
    try {
      value = await jwt.sign(signer.privateKey!);
    } catch (err) {
      this.signed?.inc({ result: 'error' });
      throw err;
    }
    this.signed?.inc({ result: 'ok' });
    const expiresAt = exp * 1000;
    return Object.freeze({ value, kid: signer.kid, generation, refreshAt: nowMs + Math.floor((expiresAt - nowMs) * this.settings.reuse), expiresAt });
  }
}

function fitsCredential(token: IssuedToken, principal: Principal): boolean {
  return principal.expiresAt === undefined || token.expiresAt <= principal.expiresAt * 1000;
}

function cacheKey(p: Principal, audience: string): string {
  return JSON.stringify([audience, p.method, p.tenant ?? null, p.subject ?? null, p.scopes, p.keyId ?? null, p.email ?? null, p.issuer ?? null]);
}

/** What a route does: sign for this audience (undefined on routes with identityToken: false). */
export interface RouteIdentityToken {
  readonly issuer: IdentityTokenIssuer;
  readonly audience: string;
  readonly header: string;
}
