// PolicyDocument → CompiledPolicy: immutable lookup structures built once per load. Nothing in
// here runs per request; the pipeline only reads what this produces.

import { describeMatch, findOverlaps, RouteTable, templateProblem } from '../authz/routes.js';
import { PolicyError, type PolicyIssue } from '../errors.js';
import { compileRouteConditions, type RouteConditions } from '../expr/route-conditions.js';
import type { ClientIpSettings } from '../pipeline/client-ip.js';
import { compileChain } from '../identity/registry.js';
import { checkLookups } from '../lookup/acquire.js';
import { compileEnrichment, type Enricher } from '../lookup/enrich.js';
import { compileIdentityToken, routeIdentityToken, type CompiledIdentityToken } from '../mesh/compile.js';
import type { RouteIdentityToken } from '../mesh/identity-token.js';
import type { CredentialSource } from '../identity/source.js';
import { compileRateLimits, type RouteRateLimiter } from '../ratelimit/index.js';
import type { Runtime } from '../runtime.js';
import type { AuthMethod, Principal } from '../types.js';
import type { CompileContext, PolicyPath } from './context.js';
import { DenyBodyShaper } from './deny-body.js';
import type { Locator } from './load.js';
import type { HeaderNames, PathSettings, PolicyDocument, RouteConfig } from './schema.js';

export interface CompiledRoute {
  readonly name: string;
  /** What to do with a request routed here. "deny"/"authenticated" only for the default route. */
  readonly kind: 'route' | 'default-deny' | 'default-authenticated';
  readonly public: boolean;
  readonly allOf: readonly string[];
  readonly anyOf: readonly string[];
  readonly credentials: ReadonlySet<AuthMethod> | undefined;
  readonly tenants: ReadonlySet<string> | undefined;
  readonly requireTenant: boolean;
  readonly chain: readonly CredentialSource[];
  /** Route-specific headers to strip upstream, on top of the owned identity headers. */
  readonly removeHeaders: readonly string[];
  /**
   * Runs before identification on protected routes: bans and limits keyed only by request facts
   * (ip, route, ...), so failed authentication attempts count too. Undefined when none apply.
   */
  readonly preIdentityLimiter: RouteRateLimiter | undefined;
  /** Runs after authorization (on public routes: the only limiter, with every policy). */
  readonly rateLimiter: RouteRateLimiter | undefined;
  /** match.schemes/query, when: and rules; undefined for a route without them (the phase is skipped). */
  readonly conditions: RouteConditions | undefined;
  /** The route's own `paths` overrides (undefined when it has none). */
  readonly paths: PathSettings | undefined;
  /**
   * Sources of the route's chain whose credential is found per request (an API key sent as
   * Bearer): on a public route, checked so the credential is stripped anyway. Usually empty.
   */
  readonly carrierSources: readonly CredentialSource[];
  /** The identity token an allow with a caller carries here; undefined when none. */
  readonly identityToken: RouteIdentityToken | undefined;
  /**
   * Its `match.host` is one exact host with a port ("docs.example.com:8080", "[::1]:8443"): a
   * request for that host:port is judged by such routes alone (Envoy per-port virtual hosts).
   * A wildcard with a port ("*.example.com:8443") is not: the exact name's routes still apply.
   */
  readonly hostNamesPort: boolean;
}

/** How paths are matched beyond the plain canonical lower-case case (pipeline/route-candidates.ts). */
export interface PathMatching {
  /** The same routes with host and path patterns in lower case: what a case-insensitive upstream serves. */
  readonly folded: RouteTable<CompiledRoute>;
  /** Some path pattern has an upper-case letter: even a lower-case path needs the folded reading. */
  readonly patternsHaveUpperCase: boolean;
  /** Some exact, template or glob path ends with "/": "/x" needs the reading "/x/" (non-strict routers). */
  readonly patternsEndWithSlash: boolean;
  /** Either of the two: no request can take the one-reading fast path. */
  readonly everyPathHasReadings: boolean;
  /** Some setting (top level, host or route) is strictest: otherwise a non-canonical path is refused at once. */
  readonly anyStrictest: boolean;
  readonly nonCanonical: 'refuse' | 'strictest';
  readonly upstreamCase: 'sensitive' | 'insensitive' | 'unknown';
  readonly exactHosts: ReadonlyMap<string, PathSettings>;
  /** "*.example.com" overrides as suffix ".example.com", longest first. */
  readonly wildcardHosts: readonly { readonly suffix: string; readonly settings: PathSettings }[];
}

export interface CompiledPolicy {
  readonly file: string;
  readonly document: PolicyDocument;
  readonly mode: 'enforce' | 'dev';
  readonly devPrincipal: Principal | undefined;
  readonly routes: RouteTable<CompiledRoute>;
  readonly defaultRoute: CompiledRoute;
  readonly paths: PathMatching;
  readonly headerNames: HeaderNames;
  /** Every identity header Portcullis owns (removed from the request unless it sets it). */
  readonly ownedHeaders: readonly string[];
  readonly realm: string;
  /** Shapes deny bodies (`denyBody:`); undefined: DESIGN.md's body. */
  readonly denyBody: DenyBodyShaper | undefined;
  /** How the client IP is picked (clientIp in the policy). */
  readonly clientIp: ClientIpSettings;
  readonly disabledTenants: ReadonlySet<string>;
  /** The tenants the policy names in `tenants:` (a series each with server.tenantMetrics). */
  readonly listedTenants: ReadonlySet<string>;
  readonly decisionLog: 'sample' | 'all' | 'deny' | 'none';
  /** With decisionLog: sample, the share of allows logged. */
  readonly decisionLogAllowRate: number;
  readonly tenantMetrics: boolean;
  /** server.explain: decision log lines carry the explanation. */
  readonly explain: boolean;
  readonly warnings: readonly string[];
  /** The identityToken section, compiled (keys, issuer); undefined when the policy has none. */
  readonly identityToken: CompiledIdentityToken | undefined;
  /** Resolves when everything readiness must wait for (first JWKS fetches) is in place. */
  readonly ready: Promise<void>;
  /** Enrichment after identification; undefined when the policy has none (no cost). */
  readonly enrich: Enricher | undefined;
}

/**
 * Compile a validated document. Throws PolicyError listing every semantic problem. Long-lived
 * resources the modules acquire go through runtime.resources; the caller commits or rolls back
 * the pool depending on whether the result goes live.
 */
export function compilePolicy(document: PolicyDocument, runtime: Runtime, file: string, locate?: Locator): CompiledPolicy {
  const issues: PolicyIssue[] = [];
  const warnings: string[] = [];
  const readiness: Promise<void>[] = [];
  const ctx: CompileContext = {
    runtime,
    policy: document,
    file,
    error: (path, message) => issues.push({ file, ...locate?.(path), path, message }),
    warn: (path, message) => {
      const at = locate?.(path);
      warnings.push(`${file}${at?.line ? `:${at.line}` : ''}: ${formatAt(path)}${message}`);
    },
    waitFor: (what, ready) =>
      readiness.push(
        ready.catch((err: unknown) => {
          throw new Error(`${what}: ${(err as Error).message}`);
        }),
      ),
  };

  checkMode(document, ctx);
  checkPeerTokens(document, ctx);
  checkLookups(ctx);
  const topChain = compileChain(document.identity, ['identity'], ctx);
  const rateLimits = compileRateLimits(ctx);
  const denyBody = DenyBodyShaper.compile(document.denyBody, ctx);
  const enrich = compileEnrichment(ctx);
  const identityToken = compileIdentityToken(document.identityToken, ctx);

  const routeChains = document.routes.map((route, index) =>
    route.identity ? compileChain(route.identity, ['routes', index, 'identity'], ctx) : topChain,
  );
  // A credential is stripped on every allow, whichever route it was sent to (a webhook secret sent
  // to a public route must not reach that route's upstream either).
  // Authorization is left to the source that finds a credential in it (a JWT there is forwarded by default).
  const stripEverywhere = chainStripHeaders([...new Set([...topChain, ...routeChains.flat()])]).filter((h) => h !== 'authorization');
  const compiledRoutes = document.routes.map((route, index) => {
    const path: PolicyPath = ['routes', index];
    // The configured chain, not what compiled of it: a broken source is reported once, where it is.
    checkRoute(route, path, ctx, document.identity.length);
    const name = route.name ?? describeMatch(route.match);
    const chain = routeChains[index]!;
    const compiled: CompiledRoute = Object.freeze({
      name,
      kind: 'route',
      public: route.public,
      allOf: Object.freeze([...(route.require?.allOf ?? [])]),
      anyOf: Object.freeze([...(route.require?.anyOf ?? [])]),
      credentials: route.credentials ? new Set(route.credentials as AuthMethod[]) : undefined,
      tenants: route.tenants ? new Set(route.tenants) : undefined,
      requireTenant: route.requireTenant ?? document.requireTenant,
      chain,
      removeHeaders: dedupe([...(route.removeHeaders ?? []), ...stripExcept(stripEverywhere, chain)]),
      preIdentityLimiter: route.public ? undefined : rateLimits?.forRoute(name, route, 'before-identity'),
      rateLimiter: rateLimits?.forRoute(name, route, route.public ? 'all' : 'after-identity'),
      conditions: compileRouteConditions(route, name, path, chain, ctx),
      paths: route.paths,
      carrierSources: route.public ? Object.freeze(chain.filter((s) => s.carrier !== undefined)) : NO_SOURCES,
      identityToken: routeIdentityToken(route, path, identityToken, ctx),
      hostNamesPort: exactHostWithPort(route.match.host),
    });
    return { spec: route.match, value: compiled };
  });
  checkDuplicateNames(document.routes, compiledRoutes.map((r) => r.value.name), ctx);
  if (issues.length === 0) checkRouteShapes(document.routes, compiledRoutes.map((r) => r.value), ctx);

  const defaultRoute: CompiledRoute = Object.freeze({
    name: 'default',
    kind: document.default === 'authenticated' ? 'default-authenticated' : 'default-deny',
    public: false,
    allOf: [],
    anyOf: [],
    credentials: undefined,
    tenants: undefined,
    requireTenant: document.requireTenant,
    chain: topChain,
    removeHeaders: dedupe(stripExcept(stripEverywhere, topChain)),
    preIdentityLimiter: rateLimits?.forRoute('default', undefined, 'before-identity'),
    rateLimiter: document.default === 'authenticated' ? rateLimits?.forRoute('default', undefined, 'after-identity') : undefined,
    conditions: undefined,
    paths: undefined,
    carrierSources: NO_SOURCES,
    identityToken: identityToken?.defaults,
    hostNamesPort: false,
  });

  if (issues.length > 0) throw new PolicyError(issues);

  const names = document.headers;
  const ownedHeaders = dedupe([names.tenant, names.subject, names.scopes, names.method, names.keyId, names.email, ...names.alsoRemove, ...(document.identityToken ? [document.identityToken.header] : [])]);
  const devPrincipal: Principal | undefined =
    document.mode === 'dev' && document.dev
      ? Object.freeze({ method: 'dev', tenant: document.dev.tenant, subject: document.dev.subject, scopes: Object.freeze([...document.dev.scopes]) })
      : undefined;
  if (document.mode === 'dev') warnings.push(`${file}: mode is dev: EVERY request is allowed as tenant "${document.dev?.tenant}" — never run this in production`);

  return Object.freeze({
    file,
    document,
    mode: document.mode,
    devPrincipal,
    routes: new RouteTable(compiledRoutes),
    defaultRoute,
    paths: compilePathMatching(document, compiledRoutes),
    headerNames: names,
    ownedHeaders,
    realm: document.realm,
    denyBody,
    clientIp: Object.freeze({ useRemoteAddress: document.clientIp.useRemoteAddress, xffTrustedHops: document.clientIp.xffTrustedHops }),
    disabledTenants: new Set(Object.entries(document.tenants).filter(([, t]) => t.disabled).map(([name]) => name)),
    listedTenants: new Set(Object.keys(document.tenants)),
    decisionLog: document.server.decisionLog,
    decisionLogAllowRate: document.server.decisionLogAllowRate,
    tenantMetrics: document.server.tenantMetrics,
    explain: document.server.explain,
    warnings: Object.freeze(warnings),
    identityToken,
    ready: Promise.all(readiness).then(() => undefined),
    enrich,
  });
}

const NO_SOURCES: readonly CredentialSource[] = Object.freeze([]);

/** Headers every source of a chain strips on every allow (API key headers, shared-secret headers). */
function chainStripHeaders(chain: readonly CredentialSource[]): string[] {
  return chain.flatMap((s) => s.stripHeaders ?? []);
}

/** The headers to strip, minus those a source of this route's chain is told to forward. */
function stripExcept(strip: readonly string[], chain: readonly CredentialSource[]): string[] {
  const forwarded = new Set(chain.flatMap((s) => s.forwardHeaders ?? []));
  return strip.filter((h) => !forwarded.has(h));
}

function compilePathMatching(document: PolicyDocument, routes: readonly { spec: RouteConfig['match']; value: CompiledRoute }[]): PathMatching {
  const lower = (s: string | undefined) => s?.toLowerCase();
  const folded = routes.map(({ spec, value }) => ({
    spec: { ...spec, host: lower(spec.host), path: lower(spec.path), pathPrefix: lower(spec.pathPrefix), pathGlob: lower(spec.pathGlob) },
    value,
  }));
  const patternsHaveUpperCase = routes.some(({ spec }) => /[A-Z]/.test(stripTemplateNames(spec.path ?? spec.pathPrefix ?? spec.pathGlob ?? '')));
  const patternsEndWithSlash = routes.some(({ spec }) => {
    const pattern = spec.path ?? spec.pathGlob;
    return pattern !== undefined && pattern.length > 1 && pattern.endsWith('/');
  });
  const exactHosts = new Map<string, PathSettings>();
  const wildcardHosts: { suffix: string; settings: PathSettings }[] = [];
  for (const [host, settings] of Object.entries(document.paths.hosts)) {
    const name = host.toLowerCase();
    if (name.startsWith('*.')) wildcardHosts.push({ suffix: name.slice(1), settings: Object.freeze({ ...settings }) });
    else exactHosts.set(name, Object.freeze({ ...settings }));
  }
  wildcardHosts.sort((a, b) => b.suffix.length - a.suffix.length);
  return Object.freeze({
    folded: new RouteTable(folded),
    patternsHaveUpperCase,
    patternsEndWithSlash,
    everyPathHasReadings: patternsHaveUpperCase || patternsEndWithSlash,
    anyStrictest:
      document.paths.nonCanonical === 'strictest' ||
      Object.values(document.paths.hosts).some((h) => h.nonCanonical === 'strictest') ||
      routes.some(({ value }) => value.paths?.nonCanonical === 'strictest'),
    nonCanonical: document.paths.nonCanonical,
    upstreamCase: document.paths.upstreamCase,
    exactHosts,
    wildcardHosts: Object.freeze(wildcardHosts),
  });
}

function stripTemplateNames(pattern: string): string {
  return pattern.replace(/\{[A-Za-z_][A-Za-z0-9_]*\}/g, '');
}

function checkMode(document: PolicyDocument, ctx: CompileContext): void {
  if (document.mode !== 'dev') {
    if (document.dev) ctx.warn(['dev'], 'ignored: mode is not dev');
    return;
  }
  if (!document.dev) ctx.error(['dev'], 'mode: dev needs a dev section with at least tenant');
  // Seed 000: dev mode exists only where no real credential is configured, so a forgotten
  // `mode: dev` can never silently disable verification of tokens, API keys, shared secrets or
  // scope rules: each such setting is refused where it stands.
  const refuse = (path: PolicyPath, what: string) =>
    ctx.error(path, `mode: dev is refused while ${what} configured (dev mode allows every request and would silently disable it)`);
  if (Object.keys(document.issuers).length > 0) refuse(['issuers'], 'JWT issuers are');
  if (document.identity.length > 0) refuse(['identity'], 'an identity chain is');
  if (document.keyStore !== undefined) refuse(['keyStore'], 'an API-key store is');
  // Every anonymous request would get a signed token that upstreams accept.
  if (document.identityToken !== undefined) refuse(['identityToken'], 'an identity token for upstreams is');
  document.routes.forEach((route, i) => {
    if (route.identity !== undefined) refuse(['routes', i, 'identity'], 'a route identity chain is');
    if (route.require !== undefined) refuse(['routes', i, 'require'], 'a scope rule is');
    if (route.credentials !== undefined) refuse(['routes', i, 'credentials'], 'a credentials rule is');
    if (route.tenants !== undefined) refuse(['routes', i, 'tenants'], 'a tenants rule is');
  });
}

/**
 * A `peer` source believes the source.principal of the CheckRequest: whoever can call Check can
 * claim any workload, and with an identity token Portcullis would sign that claim for upstreams
 * (attacker review). So the policy has to say that only the mesh's proxies reach the gRPC port.
 */
function checkPeerTokens(document: PolicyDocument, ctx: CompileContext): void {
  if (document.identityToken === undefined || document.identityToken.checkCallersAreTheProxies === true) return;
  const chains = [document.identity, ...document.routes.map((r) => r.identity ?? [])];
  if (!chains.some((chain) => chain.some((entry) => entry.peer !== undefined))) return;
  ctx.error(
    ['identityToken'],
    'a peer source trusts the workload identity the caller of Check sends, and the identity token would be signed for it: only the proxies may be able to call Check (chart networkPolicy.grpcFrom, or mTLS client auth on the gRPC listener); then set identityToken.checkCallersAreTheProxies: true',
  );
}

function checkRoute(route: RouteConfig, path: PolicyPath, ctx: CompileContext, topChainLength: number): void {
  if (route.match.path?.includes('{') || route.match.path?.includes('}')) {
    const problem = templateProblem(route.match.path);
    if (problem) ctx.error([...path, 'match', 'path'], problem);
  }
  if (route.public) {
    for (const key of ['require', 'credentials', 'tenants', 'identity'] as const) {
      if (route[key] !== undefined) ctx.error([...path, key], `has no effect on a public route (public: true skips identification)`);
    }
  } else if (!route.identity && topChainLength === 0 && ctx.policy.mode !== 'dev') {
    ctx.error(path, 'a non-public route needs an identity chain: add a top-level identity section or a route identity');
  }
}

function checkDuplicateNames(routes: readonly RouteConfig[], names: readonly string[], ctx: CompileContext): void {
  const seen = new Map<string, number>();
  names.forEach((name, i) => {
    const first = seen.get(name);
    if (first !== undefined && routes[i]!.name !== undefined) {
      ctx.error(['routes', i, 'name'], `duplicate route name "${name}" (also routes[${first}])`);
    }
    if (first === undefined) seen.set(name, i);
  });
}

/**
 * Warnings (allowed, printed by validate, errors with --strict): patterns written in another
 * framework's syntax, routes that can never match, public routes that take requests a protected
 * route was written for.
 */
function checkRouteShapes(routes: readonly RouteConfig[], compiled: readonly CompiledRoute[], ctx: CompileContext): void {
  routes.forEach((route, i) => {
    const m = route.match;
    const at: PolicyPath = ['routes', i, 'match'];
    if (m.path !== undefined) {
      const colon = m.path.split('/').find((segment) => /^:[A-Za-z_]/.test(segment));
      if (colon) {
        ctx.warn([...at, 'path'], `"${colon}" looks like Express/Rails syntax; here it matches only the literal text "${colon}" (write {${colon.slice(1)}} for a path parameter)`);
      }
      if (m.path.includes('*')) {
        ctx.warn([...at, 'path'], '"*" in path matches only a literal "*"; use pathPrefix, or pathGlob for wildcards');
      }
    }
    if (m.pathPrefix !== undefined && m.pathPrefix.includes('*')) {
      ctx.warn([...at, 'pathPrefix'], '"*" in pathPrefix matches only a literal "*"; a prefix already matches everything below it (or use pathGlob)');
    }
    if (m.pathPrefix !== undefined && /\/:[A-Za-z_]/.test(m.pathPrefix)) {
      ctx.warn([...at, 'pathPrefix'], 'a ":name" segment is literal text here; use pathGlob with "*" for a variable segment');
    }
  });
  for (const overlap of findOverlaps(routes.map((r, i) => ({ spec: r.match, index: i })))) {
    const winner = compiled[overlap.winner]!;
    const loser = compiled[overlap.loser]!;
    if (overlap.full) {
      ctx.warn(['routes', overlap.loser], `can never match: routes[${overlap.winner}] (${winner.name}) matches every request it would, first`);
    } else if (winner.public && !loser.public) {
      ctx.warn(
        ['routes', overlap.winner],
        `public route ${winner.name} takes requests protected route routes[${overlap.loser}] (${loser.name}) also matches, e.g. ${overlap.example}: they are not authenticated`,
      );
    }
  }
}

function dedupe(values: readonly string[]): readonly string[] {
  return Object.freeze([...new Set(values)]);
}

function formatAt(path: PolicyPath): string {
  if (path.length === 0) return '';
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('').replace(/^\./, '') + ': ';
}

/** "docs.example.com:8080", "[2001:db8::1]:8443" — not "*.example.com:8443", not "[2001:db8::1]". */
function exactHostWithPort(host: string | undefined): boolean {
  if (host === undefined || host.startsWith('*.')) return false;
  return /:\d+$/.test(host) && (!host.startsWith('[') || host.includes(']:'));
}
