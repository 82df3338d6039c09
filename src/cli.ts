#!/usr/bin/env node
// The `portcullis` command. Each subcommand parses its own flags; exit codes: 0 ok, 1 failure
// (invalid policy, store error), 2 usage error.

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ParseArgsConfig } from 'node:util';
import { AggregatorRegistry } from 'prom-client';
import { PolicyError, PortcullisError, formatPolicyIssue } from './errors.js';
import { parseCommand, usageError } from './cli/args.js';
import { runValidateCommand } from './cli/validate.js';
import { createLogger, serverDestination } from './observability/logger.js';
import { loadPolicyFileWithLocator } from './policy/load.js';
import { DURATION_SYNTAX, parseDuration } from './policy/units.js';
import { authzHttpSchema, LOG_LEVELS, type LogLevel } from './policy/schema.js';
import { ResourcePool, type Runtime } from './runtime.js';
import { isWorker, reportJwks, reportReadiness, runPrimary, type ClusterOptions } from './cluster.js';
import { startServer } from './server.js';
import { PORTCULLIS_VERSION } from './version.js';

export type { CliIo } from './cli/io.js';
import type { CliIo } from './cli/io.js';

const USAGE = `portcullis ${PORTCULLIS_VERSION} — external authorization for Envoy and Istio

Usage:
  portcullis serve --config FILE [--grpc-port N] [--http-port N] [--authz-http-port N] [--bind ADDR] [--workers N]
                   [--drain-delay 10s] [--drain-timeout 10s] [--log-level info] [--reload-settle 1s]
                   [--memory-budget-mb N] [--max-in-flight N]
                   [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
                   (durations: 500ms, 10s, 1m, ...; a bare number is seconds)
  portcullis validate --config FILE [--strict] [--allow-missing-env]
  portcullis check --config FILE [--json] [-H 'name: value']... [--source-ip IP] METHOD URL
                                                    (what would Portcullis answer? with why)
  portcullis test [--config FILE] [--junit FILE] TESTS...   (policy unit tests in YAML)
  portcullis keys <create|list|revoke|rotate|import> ...  (API keys; see portcullis keys --help)
  portcullis migrate --config FILE                    (create/upgrade the PostgreSQL schema)
  portcullis bans <add|list|remove> ...             (rate-limit bans; see portcullis bans --help)
  portcullis version

Every command answers --help.
`;

const SERVE_USAGE = `Usage: portcullis serve --config FILE [options]

Serves ext_authz (gRPC) and the ops port (/healthz, /readyz, /metrics) from one policy file,
reloaded when it changes.

  -c, --config FILE        the policy file (or PORTCULLIS_CONFIG)
      --grpc-port N        overrides server.grpcPort (0: pick a free port)
      --http-port N        overrides server.httpPort
      --bind ADDR          overrides server.bind
      --workers N          processes sharing the ports (1-64, default 1)
      --drain-delay D      keep answering this long after SIGTERM (default 10s)
      --drain-timeout D    longest wait for in-flight checks when stopping
      --log-level L        fatal, error, warn, info, debug, trace, silent (or PORTCULLIS_LOG_LEVEL)
      --reload-settle D    quiet time before a changed file is reloaded (default 1s)
  -h, --help               this help

Durations: 500ms, 10s, 1m, ...; a bare number is seconds.
`;

export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest, io);
    case 'validate':
      return runValidateCommand(rest, io);
    case 'test': {
      const { runTestCommand } = await import('./cli/test.js');
      return runTestCommand(rest, io);
    }
    case 'check': {
      const { runCheckCommand } = await import('./cli/check.js');
      return runCheckCommand(rest, io);
    }
    case 'keys': {
      const { runKeysCommand } = await import('./keys/cli.js');
      return runKeysCommand(rest, io);
    }
    case 'migrate': {
      const { runMigrateCommand } = await import('./keys/cli.js');
      return runMigrateCommand(rest, io);
    }
    case 'bans': {
      const { runBansCommand } = await import('./ratelimit/bans-cli.js');
      return runBansCommand(rest, io);
    }
    case 'version':
    case '--version':
      io.out(`${PORTCULLIS_VERSION}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      io.out(USAGE);
      return command === undefined ? 2 : 0;
    default:
      io.err(`unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

function parse(usage: string, args: string[], options: NonNullable<ParseArgsConfig['options']>, io: CliIo) {
  const parsed = parseCommand(args, options, usage, io);
  return typeof parsed === 'number' ? parsed : (parsed.values as Record<string, string | boolean | undefined>);
}

function port(value: string | boolean | undefined, flag: string, io: CliIo): number | undefined | null {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    io.err(`${flag} must be a port number (0-65535), got "${String(value)}"\n`);
    return null;
  }
  return n;
}

async function serve(args: string[], io: CliIo): Promise<number> {
  const values = parse(
    SERVE_USAGE,
    args,
    {
      config: { type: 'string', short: 'c' },
      'grpc-port': { type: 'string' },
      'http-port': { type: 'string' },
      'authz-http-port': { type: 'string' },
      bind: { type: 'string' },
      'drain-timeout': { type: 'string' },
      'drain-delay': { type: 'string' },
      workers: { type: 'string' },
      'log-level': { type: 'string' },
      'reload-settle': { type: 'string' },
      'memory-budget-mb': { type: 'string' },
      'max-in-flight': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-client-ca': { type: 'string' },
    },
    io,
  );
  if (typeof values === 'number') return values;
  const memoryBudgetMb = wholeNumberFlag(values['memory-budget-mb'], '--memory-budget-mb', 8, 4096, io);
  const maxInFlight = wholeNumberFlag(values['max-in-flight'], '--max-in-flight', 16, 1_000_000, io);
  if (memoryBudgetMb === null || maxInFlight === null) return 2;
  const configFile = (values.config as string | undefined) ?? io.env.PORTCULLIS_CONFIG;
  if (!configFile) {
    return usageError('serve needs --config FILE (or PORTCULLIS_CONFIG)', SERVE_USAGE, io);
  }
  const grpcPort = port(values['grpc-port'], '--grpc-port', io);
  const httpPort = port(values['http-port'], '--http-port', io);
  const authzHttpPort = port(values['authz-http-port'], '--authz-http-port', io);
  if (grpcPort === null || httpPort === null || authzHttpPort === null) return 2;
  const drainTimeoutMs = durationFlag(values['drain-timeout'], '--drain-timeout', io);
  const drainDelayMs = durationFlag(values['drain-delay'] ?? DEFAULT_DRAIN_DELAY, '--drain-delay', io);
  const settleMs = durationFlag(values['reload-settle'], '--reload-settle', io);
  if (drainTimeoutMs === null || drainDelayMs === null || settleMs === null) return 2;
  const levelSetting = logLevelSetting(values['log-level'] as string | undefined, io.env.PORTCULLIS_LOG_LEVEL, io);
  if (levelSetting === null) return 2;

  const tlsCert = values['tls-cert'] as string | undefined;
  const tlsKey = values['tls-key'] as string | undefined;
  const tlsClientCa = values['tls-client-ca'] as string | undefined;
  if ((tlsCert === undefined) !== (tlsKey === undefined) || (tlsClientCa !== undefined && tlsCert === undefined)) {
    io.err('--tls-cert and --tls-key go together (and --tls-client-ca needs both)\n');
    return 2;
  }
  const tls = tlsCert !== undefined && tlsKey !== undefined ? { certFile: tlsCert, keyFile: tlsKey, clientCaFile: tlsClientCa } : undefined;

  const workers = values.workers === undefined ? 1 : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
    io.err(`--workers must be a whole number from 1 to 64, got "${String(values.workers)}"\n`);
    return 2;
  }

  const destination = serverDestination();
  const logger = createLogger({ level: levelSetting ?? 'info', destination });
  if (workers > 1 && !isWorker()) {
    // The primary validates the policy once so a bad file fails fast, then forks the workers.
    const check = await runValidateCommand(['--config', configFile], { ...io, out: () => undefined });
    if (check !== 0) return 1;
    const document = (await loadPolicyFileWithLocator(configFile, io.env)).document;
    const listeners: ClusterOptions['listeners'] = [{ name: 'grpc', port: grpcPort ?? document.server.grpcPort }];
    if (document.server.authzHttp || authzHttpPort !== undefined) listeners.push({ name: 'authz-http', port: authzHttpPort ?? document.server.authzHttp?.port ?? authzHttpSchema.parse({}).port });
    try {
      await runPrimary({ workers, logger, listeners, bind: (values.bind as string | undefined) ?? document.server.bind, httpPort: httpPort ?? document.server.httpPort });
    } catch (err) {
      io.err(`refusing to start: ${(err as Error).message}\n`);
      return 1;
    }
    destination.flushSync();
    return 0;
  }
  let server;
  try {
    server = await startServer({
      configFile,
      grpcPort,
      httpPort,
      authzHttpPort,
      bind: values.bind as string | undefined,
      logger,
      logLevelFromPolicy: levelSetting === undefined,
      drainTimeoutMs,
      drainDelayMs,
      policyStore: settleMs === undefined ? undefined : { settleMs },
      tls,
      grpcLimits: { memoryBudgetBytes: memoryBudgetMb === undefined ? undefined : memoryBudgetMb * 1024 * 1024, maxInFlight },
      env: io.env,
      opsServer: !isWorker(),
      handedConnections: isWorker(),
      onServingChange: reportReadiness,
      onJwksChange: isWorker() ? reportJwks : undefined,
    });
  } catch (err) {
    if (err instanceof PolicyError) {
      for (const issue of err.issues) io.err(`${formatPolicyIssue(issue)}\n`);
      io.err(`refusing to start: ${configFile} has ${err.issues.length} problem${err.issues.length === 1 ? '' : 's'}\n`);
    } else if (err instanceof PortcullisError) {
      io.err(`refusing to start: ${err.message}\n`);
    } else {
      io.err(`failed to start: ${(err as Error).message}\n`);
    }
    return 1;
  }

  const running = server;
  // In a worker, answer the primary's /metrics aggregation from this process' registry.
  // (Constructing an AggregatorRegistry is what installs prom-client's worker-side IPC listener.)
  if (isWorker()) {
    new AggregatorRegistry();
    AggregatorRegistry.setRegistries([running.runtime.metrics.registry]);
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      running.runtime.logger.info({ signal }, 'signal received');
      void running.shutdown().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    // A worker whose primary is gone (even SIGKILLed) drains and exits rather than linger.
    if (isWorker()) process.once('disconnect', () => stop('primary gone'));
  });
  destination.flushSync();
  return 0;
}

/**
 * The default --drain-delay: how long a SIGTERMed server keeps answering (NOT_SERVING in health
 * checks) before it stops accepting connections. It must exceed the time the slowest caller
 * needs to stop sending: Envoy's active health check with the documented settings (interval 2s,
 * unhealthy_threshold 2, timeout 1s: at most 2 × 2s + 1s = 5s) and Kubernetes endpoint removal
 * (a few seconds). The chart and examples/envoy use the same figures.
 */
export const DEFAULT_DRAIN_DELAY = '10s';
function wholeNumberFlag(value: string | boolean | undefined, flag: string, min: number, max: number, io: CliIo): number | undefined | null {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(String(value)) || n < min || n > max) {
    io.err(`${flag} must be a whole number from ${min} to ${max}, got "${String(value)}"\n`);
    return null;
  }
  return n;
}

function durationFlag(value: string | boolean | undefined, flag: string, io: CliIo): number | undefined | null {
  if (value === undefined) return undefined;
  const ms = parseDuration(String(value));
  if (ms === undefined) {
    io.err(`${flag} must be a duration: ${DURATION_SYNTAX}; got "${String(value)}"\n`);
    return null;
  }
  return ms;
}

/** --log-level wins over PORTCULLIS_LOG_LEVEL; neither set: the policy's server.logLevel. null: refused. */
function logLevelSetting(flag: string | undefined, env: string | undefined, io: CliIo): LogLevel | undefined | null {
  const [value, source] = flag !== undefined ? [flag, '--log-level'] : [env, 'PORTCULLIS_LOG_LEVEL'];
  if (value === undefined || value === '') return undefined;
  const level = value.trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    io.err(`${source} must be one of ${LOG_LEVELS.join(', ')}; got "${value.slice(0, 32)}"\n`);
    return null;
  }
  return level as LogLevel;
}

/** True when this file is the program (node dist/cli.js, or the npm bin symlink), not an import. */
function isMain(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isMain()) {
  runCli(process.argv.slice(2), {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    env: process.env,
  }).then(
    (code) => {
      process.exitCode = code;
      // A drained server exits even if a client library left a handle open (and a cluster
      // worker's IPC channel would keep it alive otherwise).
      if (process.argv[2] === 'serve') setImmediate(() => process.exit(code));
    },
    (err: unknown) => {
      process.stderr.write(`portcullis: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
