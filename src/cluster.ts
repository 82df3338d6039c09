// `serve --workers N`: N worker processes serve the authorization ports; the primary accepts the
// connections and hands each to a worker (transport/handoff.ts: why not node:cluster's sharing;
// Envoy keeps a few long-lived HTTP/2 connections, so size N to cores).
// The primary owns the ops port: /metrics aggregates every worker's registry, /readyz is ready
// while at least one worker serves (the pod can serve: new connections go only to live workers),
// so one worker dying while the others serve does not take the pod out of its Service. Workers
// that die unexpectedly are replaced; SIGTERM drains them all.

import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import type { Logger } from './observability/logger.js';
import { ConnectionDistributor, type HandoffReply, type ListenerName } from './transport/handoff.js';
import { OpsServer } from './transport/http.js';

export interface ClusterOptions {
  workers: number;
  httpPort: number;
  /** The authorization ports the primary accepts on and hands to workers. */
  listeners: { name: ListenerName; port: number }[];
  bind: string;
  logger: Logger;
}

type WorkerMessage = { portcullis: 'ready' | 'not-ready' } | { portcullis: 'jwks'; jwks: string | undefined };

export async function runPrimary(options: ClusterOptions): Promise<void> {
  const { logger } = options;
  const ready = new Map<number, boolean>();
  // Each worker's identity token JWKS; the ops port publishes their union (workers may briefly
  // differ while they reload rotated key files).
  const jwksByWorker = new Map<number, string>();
  let jwksMerged: string | undefined;
  const jwksChanged = () => (jwksMerged = mergeJwks([...jwksByWorker.values()]));
  let stopping = false;
  const distributor = new ConnectionDistributor(logger);
  const ports: Partial<Record<ListenerName, number>> = {};
  for (const { name, port } of options.listeners) ports[name] = await distributor.listen(name, options.bind, port);

  const fork = (): Worker => {
    const worker = cluster.fork({ PORTCULLIS_WORKER: '1' });
    ready.set(worker.id, false);
    distributor.add(worker);
    worker.on('message', (message: WorkerMessage | HandoffReply) => {
      if (message?.portcullis === 'ready' || message?.portcullis === 'not-ready') {
        ready.set(worker.id, message.portcullis === 'ready');
        distributor.setReady(worker.id, message.portcullis === 'ready');
      } else if (message?.portcullis === 'accepting' || message?.portcullis === 'taken' || message?.portcullis === 'connection-closed') {
        distributor.onMessage(worker.id, message);
      }
      if (message?.portcullis === 'jwks') {
        if (typeof message.jwks === 'string' && message.jwks.length <= MAX_JWKS_BYTES) jwksByWorker.set(worker.id, message.jwks);
        else jwksByWorker.delete(worker.id);
        jwksChanged();
      }
    });
    return worker;
  };

  // Connections offered to a worker that is gone go to another once its channel is closed: not at
  // 'exit' alone, which can come before the last messages on the channel are read. Node emits no
  // 'disconnect' when the channel closes while a handle is waiting for the dead worker's ACK, but
  // marks it disconnected: so after 'exit', wait for that (bounded).
  cluster.on('disconnect', (worker) => distributor.remove(worker.id));
  const removeOnceDisconnected = (worker: Worker, waitedMs = 0): void => {
    if (!worker.isConnected() || waitedMs >= 2000) distributor.remove(worker.id);
    else setTimeout(() => removeOnceDisconnected(worker, waitedMs + 10), 10).unref();
  };
  cluster.on('exit', (worker, code, signal) => {
    removeOnceDisconnected(worker);
    ready.delete(worker.id);
    if (jwksByWorker.delete(worker.id)) jwksChanged();
    if (stopping) return;
    logger.error({ worker: worker.id, code, signal }, 'worker exited unexpectedly; starting a replacement');
    setTimeout(() => stopping || fork(), 500).unref();
  });

  for (let i = 0; i < options.workers; i++) fork();

  // Each worker registers its metrics in its own process; the aggregator asks them over IPC.
  const aggregator = new AggregatorRegistry();
  const metrics = { contentType: aggregator.contentType, metrics: () => aggregator.clusterMetrics() };
  const canServe = () => !stopping && [...ready.values()].some(Boolean);
  const ops = new OpsServer(metrics, {
    ready: canServe,
    readinessDetail: () => (stopping ? 'shutting down' : `${[...ready.values()].filter(Boolean).length}/${options.workers} workers ready`),
  }, () => jwksMerged);
  const httpPort = await ops.start(options.bind, options.httpPort);
  logger.info({ workers: options.workers, httpPort, ...Object.fromEntries(Object.entries(ports).map(([name, port]) => [name === 'grpc' ? 'grpcPort' : 'authzHttpPort', port])) }, 'portcullis primary started');

  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      distributor.drain();
      logger.info({ signal }, 'draining workers');
      const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
      let remaining = workers.length;
      if (remaining === 0) return resolve();
      for (const worker of workers) {
        worker.once('exit', () => {
          if (--remaining === 0) resolve();
        });
        worker.process.kill('SIGTERM');
      }
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  distributor.close();
  await ops.close();
  logger.info('shutdown complete');
}

export function isWorker(): boolean {
  return cluster.isWorker && process.env.PORTCULLIS_WORKER === '1';
}

const MAX_JWKS_BYTES = 1 << 20;

/** The union of JWK Sets (by kid, first seen wins); undefined when there is none. */
export function mergeJwks(documents: readonly string[]): string | undefined {
  if (documents.length === 0) return undefined;
  const keys = new Map<string, unknown>();
  for (const doc of documents) {
    try {
      for (const key of (JSON.parse(doc) as { keys: { kid: string }[] }).keys) if (!keys.has(key.kid)) keys.set(key.kid, key);
    } catch {
      // A worker's message is our own JSON; a broken one is skipped rather than served.
    }
  }
  return JSON.stringify({ keys: [...keys.values()] });
}

/** Tell the primary the identity token's public keys this worker signs with (cluster mode). */
export function reportJwks(jwks: string | undefined): void {
  if (isWorker() && process.send) process.send({ portcullis: 'jwks', jwks } satisfies WorkerMessage);
}

/** Tell the primary whether this worker is serving. */
export function reportReadiness(ready: boolean): void {
  if (isWorker() && process.send) process.send({ portcullis: ready ? 'ready' : 'not-ready' } satisfies WorkerMessage);
}
