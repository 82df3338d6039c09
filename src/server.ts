// Composition root: reads settings, builds the runtime, loads the policy, starts the transports,
// and owns the lifecycle (readiness, reload, graceful shutdown). The only place that wires
// concrete collaborators together.

import { systemClock, type Clock } from './clock.js';
import { createLogger, droppedLinesOf, type Logger } from './observability/logger.js';
import { Metrics } from './observability/metrics.js';
import { Authorizer } from './pipeline/authorizer.js';
import { PolicyStore, type PolicyStoreOptions } from './policy/store.js';
import { ResourcePool, type Runtime } from './runtime.js';
import { GrpcTransport } from './transport/grpc/server.js';
import { MIB, type TransportLimits } from './transport/grpc/limits.js';
import type { PolicyDocument } from './policy/schema.js';
import { ServingStatus } from './transport/grpc/health.js';
import { OpsServer } from './transport/http.js';
import type { TlsSettings } from './transport/tls.js';
import { createTracer, tracingSettings } from './observability/tracing.js';
import { PORTCULLIS_VERSION } from './version.js';
import { AuthzHttpListener } from './transport/http/listener.js';
import { authzHttpSchema } from './policy/schema.js';
import { receiveConnections } from './transport/handoff.js';

export interface ServeOptions {
  configFile: string;
  /** Override the policy's server.grpcPort / httpPort / bind (0 = pick a free port). */
  grpcPort?: number;
  httpPort?: number;
  /** Open the HTTP authorization listener on this port (overrides server.authzHttp.port; 0 = pick a free port). */
  authzHttpPort?: number;
  bind?: string;
  logger?: Logger;
  /** Set the logger's level from the policy's server.logLevel (default: only when no logger is given). */
  logLevelFromPolicy?: boolean;
  clock?: Clock;
  env?: Readonly<Record<string, string | undefined>>;
  /** Watch the policy file for changes (default true). */
  watch?: boolean;
  policyStore?: PolicyStoreOptions;
  /** How long a SIGTERM-initiated drain waits for in-flight checks, ms (default 10 s). */
  drainTimeoutMs?: number;
  /** Delay between turning NOT_SERVING and closing the listener, so Envoy/kube stop sending (default 0). */
  drainDelayMs?: number;
  /** Register Node's default process metrics (default true). */
  defaultMetrics?: boolean;
  /**
   * Cluster worker: the primary accepts on the authorization ports and hands each connection over
   * (transport/handoff.ts); this process does not listen on them.
   */
  handedConnections?: boolean;
  /** Open the ops HTTP port (default true; cluster workers leave it to the primary). */
  opsServer?: boolean;
  /** Override the policy's server.grpc limits (CLI flags; the chart sets them). */
  grpcLimits?: Partial<Pick<TransportLimits, 'memoryBudgetBytes' | 'maxInFlight'>>;
  /** TLS for the gRPC listener (CLI --tls-cert/--tls-key/--tls-client-ca); wins over the policy's server.tls. */
  tls?: TlsSettings;
  /** Told whenever health flips (cluster workers report it to the primary). */
  onServingChange?: (serving: boolean) => void;
  /**
   * Told the identity token's JWKS whenever it changes (policy swap, key reload), undefined when the
   * policy issues no token: cluster workers report it to the primary, which owns the ops port.
   */
  onJwksChange?: (jwks: string | undefined) => void;
}

export interface RunningServer {
  readonly grpcPort: number;
  readonly httpPort: number;
  /** The HTTP authorization listener's port, undefined when it is off. */
  readonly authzHttpPort: number | undefined;
  readonly runtime: Runtime;
  readonly policies: PolicyStore;
  readonly authorizer: Authorizer;
  /** Resolves when the first policy's dependencies are ready and health says SERVING. */
  readonly ready: Promise<void>;
  /** Graceful: NOT_SERVING, wait drainDelay, drain in-flight checks (bounded), close everything. */
  shutdown(): Promise<void>;
}

export async function startServer(options: ServeOptions): Promise<RunningServer> {
  const env = options.env ?? process.env;
  const metrics = new Metrics({ defaultMetrics: options.defaultMetrics });
  const bootstrapLogger = options.logger ?? createLogger({ level: 'info' });
  metrics.observeLogDrops(() => droppedLinesOf(bootstrapLogger));
  const runtime: Runtime = {
    clock: options.clock ?? systemClock,
    logger: bootstrapLogger,
    metrics,
    resources: new ResourcePool(),
    env,
  };

  const policies = new PolicyStore(options.configFile, runtime, options.policyStore);
  const first = await policies.load();
  const levelFromPolicy = options.logLevelFromPolicy ?? !options.logger;
  if (levelFromPolicy) bootstrapLogger.level = first.document.server.logLevel;
  const logger = runtime.logger;

  const authorizer = new Authorizer(policies, logger, metrics);
  // Tracing: settings once at start; the SDK is loaded only when it is on.
  const tracing = tracingSettings(first.document.server.tracing, env, logger);
  const tracer = tracing ? await createTracer(tracing, logger, PORTCULLIS_VERSION) : undefined;
  const bind = options.bind ?? first.document.server.bind;
  const grpcLimits = (document: PolicyDocument): Partial<TransportLimits> => transportLimits(document.server.grpc, options.grpcLimits);
  // One certificate (and client CA) for both authorization listeners; the ops port stays plain.
  const listenerTls = options.tls ?? tlsSettings(first.document.server.tls);
  const grpcTransport = new GrpcTransport(authorizer, logger, {
    bind,
    port: options.grpcPort ?? first.document.server.grpcPort,
    limits: grpcLimits(first.document),
    dependencyErrors: first.document.dependencyFailure === 'error',
    tls: listenerTls,
    tracer,
    metrics,
    clock: runtime.clock,
  });
  const ops = new OpsServer(metrics.registry, {
    ready: () => grpcTransport.health.current === ServingStatus.SERVING,
    readinessDetail: () => (draining ? 'shutting down' : dependenciesReady ? 'starting' : 'waiting for dependencies (JWKS, stores)'),
  }, () => policies.current()?.identityToken?.keyring.current.jwksJson);

  let draining = false;
  let dependenciesReady = false;
  const setServing = (serving: boolean) => {
    grpcTransport.health.set(serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
    metrics.ready.set(serving ? 1 : 0);
    options.onServingChange?.(serving);
  };

  const handed = options.handedConnections === true;
  const grpcPort = handed ? (options.grpcPort ?? first.document.server.grpcPort) : await grpcTransport.start();
  let httpPort = 0;
  // server.authzHttp, or --authz-http-port alone (then with the default path prefixes).
  const authzSettings = first.document.server.authzHttp ?? (options.authzHttpPort !== undefined ? authzHttpSchema.parse({}) : undefined);
  const authzHttp = authzSettings && new AuthzHttpListener(authorizer, logger, {
      ...authzSettings,
      bind,
      port: options.authzHttpPort ?? authzSettings.port,
      governor: grpcTransport.governor,
      metrics,
      clock: runtime.clock,
      tls: listenerTls,
    });
  let authzHttpPort: number | undefined;
  try {
    if (authzHttp) authzHttpPort = handed ? authzHttp.serveHanded(options.authzHttpPort ?? authzSettings.port) : await authzHttp.start();
    if (options.opsServer !== false) httpPort = await ops.start(bind, options.httpPort ?? first.document.server.httpPort);
  } catch (err) {
    await grpcTransport.shutdown(0);
    await authzHttp?.shutdown(0);
    throw err;
  }

  const ready = first.ready.then(
    () => {
      dependenciesReady = true;
      if (!draining) setServing(true);
      logger.info({ grpcPort, httpPort, authzHttpPort, file: options.configFile }, 'portcullis ready');
    },
    (err: unknown) => {
      // Readiness stays false; checks that need the missing dependency deny with 503 meanwhile.
      logger.error({ err: (err as Error).message }, 'a dependency did not become ready; health stays NOT_SERVING until the policy reloads');
      throw err;
    },
  );
  ready.catch(() => undefined);

  // The JWKS follows the live policy's keyring, reloads of its key files included.
  let jwksSent: string | undefined;
  let watchedKeyring: { keyring: object; stop: () => void } | undefined;
  const reportJwks = () => {
    const jwks = policies.current()?.identityToken?.keyring.current.jwksJson;
    if (jwks !== jwksSent) options.onJwksChange?.((jwksSent = jwks));
  };
  const followKeyring = (policy: typeof first) => {
    const keyring = policy.identityToken?.keyring;
    if (watchedKeyring?.keyring !== keyring) {
      watchedKeyring?.stop();
      watchedKeyring = keyring ? { keyring, stop: keyring.onChange(reportJwks) } : undefined;
    }
    reportJwks();
  };
  if (options.onJwksChange) followKeyring(first);

  policies.onSwap((policy) => {
    if (options.onJwksChange) followKeyring(policy);
    const s = policy.document.server;
    if (JSON.stringify(s.tracing) !== JSON.stringify(first.document.server.tracing)) {
      logger.warn('server.tracing changed in the policy: it takes effect on restart');
    }
    if (JSON.stringify(s.tls) !== JSON.stringify(first.document.server.tls)) {
      logger.warn('server.tls changed in the policy: it takes effect on restart (the certificate files themselves are reloaded when they change)');
    }
    if (
      s.grpcPort !== first.document.server.grpcPort ||
      s.httpPort !== first.document.server.httpPort ||
      s.bind !== first.document.server.bind ||
      JSON.stringify(s.authzHttp) !== JSON.stringify(first.document.server.authzHttp)
    ) {
      logger.warn('server ports/bind/authzHttp changed in the policy: they take effect on restart only');
    }
    if (levelFromPolicy) logger.level = s.logLevel;
    grpcTransport.setLimits(grpcLimits(policy.document));
    grpcTransport.dependencyErrors = policy.document.dependencyFailure === 'error';
    policy.ready.then(
      () => {
        dependenciesReady = true;
        if (!draining) setServing(true);
      },
      () => undefined,
    );
  });
  if (options.watch !== false) policies.watch();
  if (handed) {
    const take: Parameters<typeof receiveConnections>[0] = { grpc: (socket) => grpcTransport.adopt(socket) };
    if (authzHttp) take['authz-http'] = (socket) => authzHttp.adopt(socket);
    receiveConnections(take);
  }

  logger.info({ grpcPort, httpPort, authzHttpPort, mode: first.mode, routes: first.document.routes.length }, 'portcullis listening');

  let shuttingDown: Promise<void> | undefined;
  const shutdown = (): Promise<void> =>
    (shuttingDown ??= (async () => {
      draining = true;
      setServing(false);
      logger.info({ pending: grpcTransport.pending }, 'shutting down: NOT_SERVING, draining in-flight checks');
      if (options.drainDelayMs) await new Promise((r) => setTimeout(r, options.drainDelayMs));
      grpcTransport.health.closeWatchers();
      policies.close();
      await Promise.all([grpcTransport.shutdown(options.drainTimeoutMs ?? 10_000), authzHttp?.shutdown(options.drainTimeoutMs ?? 10_000)]);
      // The spans of the last checks are exported; a collector that does not answer holds the exit
      // for at most 5 s.
      if (tracer) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          tracer.shutdown().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'trace export at shutdown failed')),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, 5000))),
        ]);
        clearTimeout(timer);
      }
      if (options.opsServer !== false) await ops.close();
      await runtime.resources.closeAll();
      logger.info('shutdown complete');
    })());

  return { grpcPort, httpPort, authzHttpPort, runtime, policies, authorizer, ready, shutdown };
}

function tlsSettings(tls: PolicyDocument['server']['tls']): TlsSettings | undefined {
  if (!tls) return undefined;
  return { certFile: tls.certFile, keyFile: tls.keyFile, clientCaFile: tls.clientCaFile, minVersion: tls.minVersion, reloadIntervalMs: tls.reloadInterval };
}

/** The policy's server.grpc section as transport limits; CLI flags win. */
function transportLimits(grpc: PolicyDocument['server']['grpc'], overrides: ServeOptions['grpcLimits'] = {}): Partial<TransportLimits> {
  return {
    memoryBudgetBytes: overrides.memoryBudgetBytes ?? grpc.memoryBudgetMb * MIB,
    maxInFlight: overrides.maxInFlight ?? grpc.maxInFlight,
    maxConnections: grpc.maxConnections,
    maxStreamsPerConnection: grpc.maxStreamsPerConnection,
    readTimeoutMs: grpc.readTimeout,
    answerTimeoutMs: grpc.answerTimeout,
    prefaceTimeoutMs: grpc.prefaceTimeout,
    idleTimeoutMs: grpc.idleTimeout,
  };
}
