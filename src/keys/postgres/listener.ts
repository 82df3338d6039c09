// LISTEN on the key-change channel over a dedicated connection, so a key revoked on one replica
// (or by the CLI) is dropped from every replica's cache within milliseconds. The connection is
// re-established with backoff when it fails; since notifications may have been missed meanwhile,
// every (re)connect is reported as a resync. A periodic ping detects connections that died
// silently.

import pg from 'pg';
import type { Logger } from '../../observability/logger.js';

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
const MAX_BACKOFF_MS = 5000;
const PING_INTERVAL_MS = 15_000;

export class ChangeListener {
  private client: pg.Client | undefined;
  private closed = false;
  private backoffMs = MIN_BACKOFF_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly pingTimer: NodeJS.Timeout;
  private connected = false;

  constructor(private readonly options: ListenerOptions) {
    this.pingTimer = setInterval(() => this.ping(), PING_INTERVAL_MS);
    this.pingTimer.unref();
    void this.connect();
  }

  get isConnected(): boolean {
    return this.connected;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.pingTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = undefined;
    this.setConnected(false);
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({
      connectionString: this.options.url,
      connectionTimeoutMillis: this.options.connectTimeoutMs,
      keepAlive: true,
      application_name: `portcullis-key-listener:${this.options.channel}`,
    });
    this.client = client;
    let failed = false;
    const fail = (err: Error | undefined) => {
      if (failed || this.client !== client) return;
      failed = true;
      this.client = undefined;
      this.setConnected(false);
      client.removeAllListeners('notification');
      client.end().catch(() => undefined);
      if (this.closed) return;
      this.options.logger.warn({ err: err?.message, retryInMs: this.backoffMs }, 'key change listener disconnected; reconnecting');
      this.scheduleReconnect();
    };
    client.on('error', fail);
    client.on('end', () => fail(undefined));
    client.on('notification', (message) => {
      if (message.channel === this.options.channel && message.payload) this.options.onNotify(message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.options.channel}"`);
    } catch (err) {
      fail(err as Error);
      return;
    }
    if (this.client !== client) return;
    this.backoffMs = MIN_BACKOFF_MS;
    this.setConnected(true);
    this.options.onResync();
  }

  private scheduleReconnect(): void {
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
    this.retryTimer.unref();
  }

  private ping(): void {
    const client = this.client;
    if (!client || !this.connected) return;
    const timer = setTimeout(() => client.emit('error', new Error('ping timed out')), this.options.connectTimeoutMs);
    client.query('SELECT 1').then(
      () => clearTimeout(timer),
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
