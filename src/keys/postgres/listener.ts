// LISTEN on the key-change channel over a dedicated connection, so a key revoked on one replica
// (or by the CLI) is dropped from every replica's cache within milliseconds. The connection is
// re-established with backoff when it fails; since notifications may have been missed meanwhile,
// every (re)connect is reported as a resync. A heartbeat (SELECT 1 on this same connection) every
// HEARTBEAT_INTERVAL_MS, given up after HEARTBEAT_TIMEOUT_MS, detects a connection that died
// silently within 2.5 s; `trusted` says whether notifications can be relied on right now (an
// answered heartbeat sent less than TRUST_HORIZON_MS ago; see ../revalidation.ts for what the
// verifier does when they cannot).

import pg from 'pg';
import { systemClock } from '../../clock.js';
import type { Logger } from '../../observability/logger.js';
import { ThrottledLog } from '../../observability/throttled-log.js';
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, TRUST_HORIZON_MS } from '../revalidation.js';

export interface ListenerOptions {
  readonly url: string;
  readonly channel: string;
  readonly connectTimeoutMs: number;
  readonly logger: Logger;
  readonly onNotify: (payload: string) => void;
  /** Connected (again): anything cached may have missed a change. */
  readonly onResync: () => void;
  readonly onStateChange?: (connected: boolean) => void;
}

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2000;

export class ChangeListener {
  private client: pg.Client | undefined;
  private closed = false;
  private backoffMs = MIN_BACKOFF_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly heartbeatTimer: NodeJS.Timeout;
  private connected = false;
  /** performance.now() when the last answered heartbeat (or the LISTEN itself) was sent. */
  private confirmedAt = Number.NEGATIVE_INFINITY;
  private heartbeatInFlight = false;
  /** Disconnect warnings: the first, then at most one per interval (with the count left out). */
  private readonly disconnects: ThrottledLog;

  constructor(private readonly options: ListenerOptions) {
    this.disconnects = new ThrottledLog({
      logger: options.logger,
      clock: systemClock,
      level: 'warn',
      message: 'key change listener disconnected; reconnecting (cached keys are revalidated meanwhile)',
    });
    this.heartbeatTimer = setInterval(() => this.heartbeat(), HEARTBEAT_INTERVAL_MS);
    this.heartbeatTimer.unref();
    void this.connect();
  }

  get isConnected(): boolean {
    return this.connected;
  }

  /** Whether every change committed up to a moment ago has been (or is being) delivered. */
  get trusted(): boolean {
    return this.connected && performance.now() - this.confirmedAt < TRUST_HORIZON_MS;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeatTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = undefined;
    this.setConnected(false);
    if (client) await endOrDestroy(client);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({
      connectionString: this.options.url,
      connectionTimeoutMillis: this.options.connectTimeoutMs,
      keepAlive: true,
      keepAliveInitialDelayMillis: 5000,
      application_name: `portcullis-key-listener:${this.options.channel}`,
    });
    this.client = client;
    let failed = false;
    const fail = (err: Error | undefined) => {
      if (failed || this.client !== client) return;
      failed = true;
      this.client = undefined;
      this.heartbeatInFlight = false;
      this.setConnected(false);
      client.removeAllListeners('notification');
      void endOrDestroy(client);
      if (this.closed) return;
      this.warnDisconnected(err);
      this.scheduleReconnect();
    };
    client.on('error', fail);
    client.on('end', () => fail(undefined));
    client.on('notification', (message) => {
      if (message.channel === this.options.channel && message.payload) this.options.onNotify(message.payload);
    });
    let sentAt: number;
    try {
      await client.connect();
      sentAt = performance.now();
      await client.query(`LISTEN "${this.options.channel}"`);
    } catch (err) {
      fail(err as Error);
      return;
    }
    if (this.client !== client) return;
    this.backoffMs = MIN_BACKOFF_MS;
    this.confirmedAt = sentAt;
    this.setConnected(true);
    this.options.onResync();
  }

  private warnDisconnected(err: Error | undefined): void {
    this.disconnects.note({ err: err?.message, retryInMs: this.backoffMs });
  }

  private scheduleReconnect(): void {
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
    this.retryTimer.unref();
  }

  private heartbeat(): void {
    const client = this.client;
    if (!client || !this.connected || this.heartbeatInFlight) return;
    this.heartbeatInFlight = true;
    const sentAt = performance.now();
    const timer = setTimeout(() => client.emit('error', new Error('heartbeat timed out')), HEARTBEAT_TIMEOUT_MS);
    client.query('SELECT 1').then(
      () => {
        clearTimeout(timer);
        if (this.client !== client) return;
        this.heartbeatInFlight = false;
        this.confirmedAt = sentAt;
      },
      (err: Error) => {
        clearTimeout(timer);
        client.emit('error', err);
      },
    );
  }

  private setConnected(connected: boolean): void {
    if (this.connected === connected) return;
    this.connected = connected;
    this.options.onStateChange?.(connected);
  }
}

/**
 * End the connection politely, or destroy its socket when that does not finish at once: on a
 * silently dead connection end() would wait forever and keep the socket open.
 */
async function endOrDestroy(client: pg.Client): Promise<void> {
  const stream = (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
  const timer = setTimeout(() => stream?.destroy(), 200);
  try {
    await client.end();
  } catch {
    // already broken
  } finally {
    clearTimeout(timer);
  }
}
