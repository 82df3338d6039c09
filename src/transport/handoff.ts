// `serve --workers N`: the primary accepts every connection on the authorization ports and hands
// each one to a worker over IPC; the worker serves it as if it had accepted it.
//
// Why not node:cluster's own sharing: its round-robin hand-off sends a connection to a worker that
// has just died (SIGKILL, OOM) before the primary notices, and nothing ever closes it: the client
// keeps a TCP connection nobody reads (grpc-js waits 20 s; Envoy sends checks on it until each
// times out). Here the primary keeps its copy of every connection until a worker confirms it
// took it: a worker that dies first makes the primary offer it to another worker (see
// `withdraw`), and a worker that is shutting down declines it, so it goes to another. The worker with
// the fewest open connections gets the next one (Envoy keeps a few long-lived connections, so
// balancing connections is balancing load).

import type { Worker } from 'node:cluster';
import net, { type Socket } from 'node:net';
import type { Logger } from '../observability/logger.js';

export type ListenerName = 'grpc' | 'authz-http';

/** Primary → worker: take this connection (the socket rides along as the message's handle). */
interface OfferMessage {
  portcullis: 'connection';
  listener: ListenerName;
  id: number;
}
/** Worker → primary. */
export type HandoffReply =
  | { portcullis: 'accepting' }
  | { portcullis: 'taken'; id: number; accepted: boolean }
  | { portcullis: 'connection-closed' };

/** Connections waiting for a worker while none accepts (startup, every worker restarting). */
const MAX_WAITING = 1024;
const MAX_WAIT_MS = 10_000;

interface Offer {
  socket: Socket;
  listener: ListenerName;
  /** Workers that declined it (shutting down) and are not asked again. */
  declinedBy: Set<number>;
  workerId: number;
}

interface WorkerState {
  worker: Worker;
  /** Set once the worker's transports are up and it receives connections. */
  accepting: boolean;
  ready: boolean;
  connections: number;
}

export class ConnectionDistributor {
  private readonly servers: net.Server[] = [];
  private readonly workers = new Map<number, WorkerState>();
  private readonly offers = new Map<number, Offer>();
  private waiting: { socket: Socket; listener: ListenerName; since: number }[] = [];
  private nextId = 1;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly logger: Logger) {
    this.sweeper = setInterval(() => this.expireWaiting(), 1000);
    this.sweeper.unref();
  }

  /** Accept connections for `listener` on bind:port (0 = a free port); resolves with the port. */
  listen(listener: ListenerName, bind: string, port: number): Promise<number> {
    // pauseOnConnect: the primary never reads a byte; the worker that takes the socket reads it all.
    const server = net.createServer({ pauseOnConnect: true }, (socket) => this.dispatch(socket, listener, new Set()));
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      // A deep accept queue: a burst of connections is accepted (and judged by the limits) rather
      // than left to the kernel's SYN retries.
      server.listen({ port, host: bind, backlog: 4096 }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.logger.error({ err: err.message, listener }, 'listener error'));
        resolve((server.address() as net.AddressInfo).port);
      });
    });
  }

  /** A forked worker: its replies arrive through `onMessage`. */
  add(worker: Worker): void {
    this.workers.set(worker.id, { worker, accepting: false, ready: false, connections: 0 });
  }

  setReady(workerId: number, ready: boolean): void {
    const state = this.workers.get(workerId);
    if (state) state.ready = ready;
  }

  onMessage(workerId: number, message: HandoffReply): void {
    const state = this.workers.get(workerId);
    if (state === undefined) return;
    switch (message.portcullis) {
      case 'accepting': {
        state.accepting = true;
        const waiting = this.waiting;
        this.waiting = [];
        for (const { socket, listener } of waiting) if (!socket.destroyed) this.dispatch(socket, listener, new Set());
        return;
      }
      case 'taken': {
        const offer = this.offers.get(message.id);
        if (offer === undefined || offer.workerId !== workerId) return;
        this.offers.delete(message.id);
        if (message.accepted) {
          state.connections++;
          // The worker holds its own descriptor for the connection: closing ours does not end it.
          offer.socket.destroy();
        } else {
          // Shutting down: that worker takes no more; another one gets this connection.
          state.accepting = false;
          offer.declinedBy.add(workerId);
          this.dispatch(offer.socket, offer.listener, offer.declinedBy);
        }
        return;
      }
      case 'connection-closed':
        if (state.connections > 0) state.connections--;
        return;
    }
  }

  /** A worker exited: connections offered to it and not confirmed go to another worker, or are closed. */
  remove(workerId: number): void {
    this.workers.delete(workerId);
    for (const [id, offer] of this.offers) if (offer.workerId === workerId) this.withdraw(id);
  }

  /** Stop accepting; connections not yet taken by a worker are closed. */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    for (const { socket } of this.waiting) socket.destroy();
    this.waiting = [];
    for (const offer of this.offers.values()) offer.socket.destroy();
    this.offers.clear();
    await Promise.all(this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }

  private dispatch(socket: Socket, listener: ListenerName, declinedBy: Set<number>): void {
    // Ready workers first, then the fewest open connections.
    let best: WorkerState | undefined;
    for (const state of this.workers.values()) {
      if (!state.accepting || declinedBy.has(state.worker.id) || !state.worker.isConnected()) continue;
      if (best === undefined || (state.ready && !best.ready) || (state.ready === best.ready && state.connections < best.connections)) best = state;
    }
    if (best === undefined) {
      if (this.waiting.length >= MAX_WAITING) {
        socket.destroy();
        return;
      }
      this.waiting.push({ socket, listener, since: Date.now() });
      return;
    }
    const id = this.nextId++;
    this.offers.set(id, { socket, listener, declinedBy, workerId: best.worker.id });
    const message: OfferMessage = { portcullis: 'connection', listener, id };
    // keepOpen: the primary's descriptor stays open until the worker confirms (see the top).
    best.worker.send(message, socket, { keepOpen: true }, (err) => {
      // The worker is gone or its channel broke (`remove` may have withdrawn the offer already).
      if (err !== null && err !== undefined) this.withdraw(id);
    });
  }

  /**
   * An offer whose worker died before confirming it. An HTTP/2 connection goes to another worker:
   * if the dead one read nothing, it is served as new; if it read anything, the next worker finds
   * no connection preface (or no TLS ClientHello) and closes it, so it can never answer a request
   * the dead worker had begun. An HTTP/1 connection is closed instead: after a partly read
   * request, the rest could parse as a request of its own and get the first one's answer.
   */
  private withdraw(id: number): void {
    const offer = this.offers.get(id);
    if (offer === undefined) return;
    this.offers.delete(id);
    if (offer.listener === 'grpc' && !offer.socket.destroyed) {
      offer.declinedBy.add(offer.workerId);
      this.dispatch(offer.socket, offer.listener, offer.declinedBy);
    } else {
      offer.socket.destroy();
    }
  }

  private expireWaiting(): void {
    if (this.waiting.length === 0) return;
    const cutoff = Date.now() - MAX_WAIT_MS;
    this.waiting = this.waiting.filter(({ socket, since }) => {
      if (since >= cutoff && !socket.destroyed) return true;
      socket.destroy();
      return false;
    });
  }
}

/**
 * In a worker: serve the connections the primary hands over. `take` returns false when that
 * listener no longer takes connections (shutting down, at its connection cap): the primary then
 * offers it to another worker. Returns a function that stops receiving.
 */
export function receiveConnections(take: Partial<Record<ListenerName, (socket: Socket) => boolean>>): () => void {
  const onMessage = (message: OfferMessage, socket: Socket | undefined) => {
    if (message?.portcullis !== 'connection' || typeof message.id !== 'number') return;
    if (socket === undefined) return;
    const handler = take[message.listener];
    // Declining closes only this process' descriptor, before it has read anything (same tick):
    // the primary still holds the connection and offers it elsewhere.
    const accepted = handler !== undefined && handler(socket);
    if (accepted) socket.once('close', () => send({ portcullis: 'connection-closed' }));
    else socket.destroy();
    send({ portcullis: 'taken', id: message.id, accepted });
  };
  process.on('message', onMessage);
  send({ portcullis: 'accepting' });
  return () => process.off('message', onMessage);
}

function send(message: HandoffReply): void {
  if (process.connected && process.send) process.send(message);
}
