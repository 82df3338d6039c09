// Policy issuer → CompiledIssuer: everything verification needs, computed once per policy load.
// JWKS issuers get their key-set manager from the runtime resource pool, so keys survive reloads.

import type { CompileContext, PolicyPath } from '../policy/context.js';
import { compileClaimMapper, compileClaimPath, type ClaimMapper, type ClaimReader } from './claims.js';
import { ASYMMETRIC_ALGORITHMS, secretBytes, type IssuerConfig, type JwsAlgorithm } from './config.js';
import { JwksManager, jwksResourceKey, type JwksSettings, type KeyLookup } from './jwks.js';
import { SecretRecord } from './keys.js';

export interface CompiledIssuer {
  /** Policy name (principal.issuer, metrics, details). */
  readonly name: string;
  /** Exact `iss`; undefined for a secret issuer that accepts tokens without iss. */
  readonly iss: string | undefined;
  readonly algorithms: ReadonlySet<string>;
  readonly audiences: ReadonlySet<string> | undefined;
  readonly clockToleranceSec: number;
  readonly maxTokenAgeSec: number | undefined;
  readonly requiredClaims: readonly { readonly name: string; readonly read: ClaimReader }[];
  readonly mapClaims: ClaimMapper;
  /** The key for a token header: synchronous when cached. */
  keyFor(kid: string | undefined, alg: string): KeyLookup | Promise<KeyLookup>;
}

const compiledPerContext = new WeakMap<CompileContext, Map<string, CompiledIssuer>>();

/** Compile the policy issuer `name` once per compile (several jwt sources may share it). */
export function compileIssuer(name: string, config: IssuerConfig, ctx: CompileContext): CompiledIssuer {
  let compiled = compiledPerContext.get(ctx);
  if (!compiled) compiledPerContext.set(ctx, (compiled = new Map()));
  let issuer = compiled.get(name);
  if (!issuer) {
    issuer = build(name, config, ['issuers', name], ctx);
    compiled.set(name, issuer);
  }
  return issuer;
}

function build(name: string, config: IssuerConfig, path: PolicyPath, ctx: CompileContext): CompiledIssuer {
  const base = {
    name,
    iss: config.issuer,
    audiences: config.audiences ? new Set(config.audiences) : undefined,
    clockToleranceSec: config.clockTolerance / 1000,
    maxTokenAgeSec: config.maxTokenAge === undefined ? undefined : config.maxTokenAge / 1000,
    requiredClaims: config.requiredClaims.map((claim) => ({ name: claim, read: compileClaimPath(claim) })),
    mapClaims: compileClaimMapper(config.claims, config.scopes),
  };

  if (config.secret !== undefined) {
    const secret: KeyLookup = Object.freeze({ kind: 'key', record: new SecretRecord(new Uint8Array(secretBytes(config.secret, config.secretEncoding))) });
    return Object.freeze({ ...base, algorithms: new Set<string>(config.algorithms ?? ['HS256']), keyFor: () => secret });
  }

  const settings: JwksSettings = {
    issuerName: name,
    issuer: config.issuer,
    jwksUri: config.jwksUri,
    discovery: config.discovery === true,
    refreshIntervalMs: config.jwksRefreshInterval,
    cooldownMs: config.jwksCooldown,
    timeoutMs: config.jwksTimeout,
  };
  warnPlainHttp(config.jwksUri ?? config.issuer!, [...path, config.jwksUri ? 'jwksUri' : 'issuer'], ctx);
  const manager = ctx.runtime.resources.acquire(
    jwksResourceKey(settings),
    () => {
      const created = new JwksManager(settings, ctx.runtime);
      created.start();
      return created;
    },
    (m) => m.dispose(),
  );
  if (config.waitForKeys) ctx.waitFor(`JWKS of issuer ${name}`, manager.ready);
  const algorithms = new Set<string>(config.algorithms ?? (ASYMMETRIC_ALGORITHMS as readonly JwsAlgorithm[]));
  const waitMs = config.jwksRefetchWait;
  return Object.freeze({ ...base, algorithms, keyFor: (kid: string | undefined, alg: string) => manager.resolve(kid, alg, waitMs) });
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

function warnPlainHttp(url: string, path: PolicyPath, ctx: CompileContext): void {
  if (!URL.canParse(url)) return;
  const { protocol, hostname } = new URL(url);
  if (protocol === 'http:' && !LOOPBACK.has(hostname)) {
    ctx.warn(path, 'keys are fetched over plain http: anyone on the path can substitute them (use https)');
  }
}
