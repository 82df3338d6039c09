// identityToken section → the issuer every allow with a principal asks for a token. The keyring and
// the issuer (with its token cache) live in the runtime's resource pool: a policy reload that keeps
// the same settings keeps the cached tokens, and re-reads the key files.

import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { RouteConfig } from '../policy/schema.js';
import type { IdentityTokenConfig } from './config.js';
import { IdentityTokenIssuer, type RouteIdentityToken } from './identity-token.js';
import { KeyFileError, resolveKeyFile, SigningKeyring } from './signing-keys.js';

export interface CompiledIdentityToken {
  readonly issuer: IdentityTokenIssuer;
  readonly keyring: SigningKeyring;
  /** What routes without their own identityToken setting do. */
  readonly defaults: RouteIdentityToken;
  readonly jwksUrl: string | undefined;
}

const MIN_LIFETIME_MS = 10_000;
const MAX_LIFETIME_MS = 3_600_000;

export function compileIdentityToken(config: IdentityTokenConfig | undefined, ctx: CompileContext): CompiledIdentityToken | undefined {
  if (config === undefined) return undefined;
  const at: PolicyPath = ['identityToken'];
  if (config.lifetime < MIN_LIFETIME_MS || config.lifetime > MAX_LIFETIME_MS) {
    ctx.error([...at, 'lifetime'], 'must be between 10s and 1h (the token stands in for a credential; keep it short)');
    return undefined;
  }
  const files = config.keys.map((f) => resolveKeyFile(ctx.file, f));
  const { runtime } = ctx;
  const keyringKey = `identity-keys:${config.algorithm}:${files.join('\u0000')}`;
  let keyring: SigningKeyring;
  let created = false;
  try {
    keyring = runtime.resources.acquire(
      keyringKey,
      () => {
        created = true;
        return new SigningKeyring({ files, algorithm: config.algorithm, logger: runtime.logger, reloadIntervalMs: runtime.offline ? 0 : config.keyReloadInterval, metrics: runtime.metrics });
      },
      (k) => k.close(),
    );
  } catch (err) {
    if (!(err instanceof KeyFileError)) throw err;
    ctx.error([...at, 'keys'], err.message);
    return undefined;
  }
  // A policy reload re-reads the keys too (a bad file keeps the last good set).
  if (!created) keyring.reload();
  const settings = {
    issuer: config.issuer,
    algorithm: config.algorithm,
    lifetimeMs: config.lifetime,
    reuse: config.reuse,
    cacheSize: config.cacheSize,
  };
  const issuer = runtime.resources.acquire(`identity-token:${keyringKey}:${JSON.stringify(settings)}`, () => new IdentityTokenIssuer(settings, keyring, runtime.clock, runtime.logger, runtime.metrics));
  return Object.freeze({
    issuer,
    keyring,
    defaults: Object.freeze({ issuer, audience: config.audience, header: config.header }),
    jwksUrl: config.jwksUrl,
  });
}

/** A route's identity token: the policy's, its own audience, or none. */
export function routeIdentityToken(
  route: RouteConfig,
  path: PolicyPath,
  compiled: CompiledIdentityToken | undefined,
  ctx: CompileContext,
): RouteIdentityToken | undefined {
  const own = route.identityToken;
  if (own !== undefined && compiled === undefined && ctx.policy.identityToken === undefined) {
    ctx.error([...path, 'identityToken'], 'needs a top-level identityToken section (issuer, keys)');
    return undefined;
  }
  if (compiled === undefined || own === false || route.public) return undefined;
  if (own === undefined) return compiled.defaults;
  return Object.freeze({ ...compiled.defaults, audience: own.audience });
}
