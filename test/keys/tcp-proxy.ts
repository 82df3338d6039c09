// A loopback TCP proxy in front of PostgreSQL that tests can take down (connections refused),
// turn into a black hole (accepted, never answered), slow down (latency per chunk, each way),
// silently stall chosen connections (bytes stop flowing, nothing is closed) and bring back, to
// stage store outages.
import net from 'node:net';

export type ProxyMode = 'forward' | 'blackhole';

interface Link {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  /** The first bytes the client sent (a PostgreSQL startup message names application_name). */
  hello: string;
  stalled: boolean;
}

export class TcpProxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private readonly links = new Set<Link>();
  private mode: ProxyMode = 'forward';
  port = 0;
  /** Added to every chunk in each direction (order kept: equal delays fire in order). */
  latencyMs = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  async start(): Promise<number> {
    const server = net.createServer((client) => this.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Stop listening and cut every connection: new connections are refused. */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.cutAll();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Cut every connection; new ones are accepted but nothing is ever forwarded. */
  blackhole(): void {
    this.mode = 'blackhole';
    this.cutAll();
  }

  /** Forward again (listening on the same port when it was down). */
  async up(): Promise<void> {
    this.mode = 'forward';
    if (!this.server) await this.start();
  }

  /**
   * Silently stall the open connections whose first client bytes contain `marker` (e.g. an
   * application_name): nothing is forwarded either way any more and nothing is closed, like a
   * peer that vanished behind a NAT. Returns how many connections were stalled.
   */
  stall(marker: string): number {
    let n = 0;
    for (const link of this.links) {
      if (!link.stalled && link.hello.includes(marker)) {
        link.stalled = true;
        n++;
      }
    }
    return n;
  }

  private cutAll(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    this.links.clear();
  }

  private accept(client: net.Socket): void {
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => client.destroy());
    if (this.mode === 'blackhole') return;
    const upstream = net.connect(this.targetPort, this.targetHost);
    const link: Link = { client, upstream, hello: '', stalled: false };
    this.links.add(link);
    this.sockets.add(upstream);
    upstream.on('close', () => {
      this.sockets.delete(upstream);
      this.links.delete(link);
      client.destroy();
    });
    upstream.on('error', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
    client.on('data', (chunk: Buffer) => {
      if (link.hello.length < 512) link.hello += chunk.toString('latin1');
      this.forward(link, upstream, chunk);
    });
    upstream.on('data', (chunk: Buffer) => this.forward(link, client, chunk));
  }

  private forward(link: Link, to: net.Socket, chunk: Buffer): void {
    if (link.stalled) return;
    if (this.latencyMs <= 0) {
      to.write(chunk);
      return;
    }
    setTimeout(() => {
      if (!link.stalled && !to.destroyed) to.write(chunk);
    }, this.latencyMs);
  }
}
