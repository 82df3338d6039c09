// `serve --workers N`: the primary accepts every connection on the authorization ports and hands
// each one to a worker over IPC; the worker serves it as if it had accepted it.
//
// Why not node:cluster's own sharing: its round-robin hand-off sends a connection to a worker that
// has just died (SIGKILL, OOM) before the primary notices, and nothing ever closes it: the client
// keeps a TCP connection nobody reads (grpc-js waits 20 s; Envoy sends checks on it until each
// times out). Here the primary keeps its copy of every connection until a worker confirms it took
// it, and the worker confirms in the same tick it receives it, before it reads a byte. So an offer
// still unconfirmed when the worker's IPC channel closes (every message it sent has been read by
// then) was never read by anyone, and goes to another worker as it is. A worker that is shutting
// down declines; one at its connection cap declines that one connection; either way another
// worker is asked. The worker with the fewest connections (taken or being offered) gets the next
// one: Envoy keeps a few long-lived connections, so balancing connections is balancing load.

import type { Worker } from 'node:cluster';
import net, { type Socket } from 'node:net';
import type { Logger } from '../observability/logger.js';
import { listenOn } from './listen.js';

export type ListenerName = 'grpc' | 'authz-http';

/** What a worker's listener says to an offered connection. */
export type Take = 'taken' | 'full' | 'closing';

/** Primary → worker: take this connection (the socket rides along as the message's handle). */
interface OfferMessage {
  portcullis: 'connection';
  listener: ListenerName;
  id: number;
}
/** Worker → primary. */
export type HandoffReply =
  | { portcullis: 'accepting' }
  | { portcullis: 'taken'; id: number; answer: Take }
  | { portcullis: 'connection-closed' };

/** Connections waiting for a worker while none accepts (startup, every worker restarting). */
const MAX_WAITING = 1024;
const MAX_WAIT_MS = 10_000;
/** An offer not answered by then: that worker gets no more connections until it answers one. */
const MAX_OFFER_MS = 5_000;
/**
 * A worker with an offer unanswered this long is stuck (its event loop has not run for that
 * long): it is killed, which ends the connections already in its IPC pipe (the primary cannot
 * close those), and replaced like any worker that dies.
 */
const MAX_STUCK_MS = 15_000;

interface Offer {
  socket: Socket;
  listener: ListenerName;
  /** Workers that declined it and are not asked again. */
  declinedBy: Set<number>;
  workerId: number;
  since: number;
}

interface WorkerState {
  worker: Worker;
  /** Set once the worker's transports are up and it receives connections; cleared when it closes. */
  accepting: boolean;
  ready: boolean;
  /** Connections it took and has not closed, plus those being offered to it. */
  load: number;
  /** An offer to it went unanswered past MAX_OFFER_MS: no more offers until it answers one. */
  stalled: boolean;
}

export class ConnectionDistributor {
  private readonly servers: net.Server[] = [];
  private readonly workers = new Map<number, WorkerState>();
  private readonly offers = new Map<number, Offer>();
  private waiting: { socket: Socket; listener: ListenerName; since: number }[] = [];
  private nextId = 1;
  private draining = false;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly logger: Logger) {
    this.sweeper = setInterval(() => this.expire(), 1000);
    this.sweeper.unref();
  }

  /** Accept connections for `listener` on bind:port (0 = a free port); resolves with the port. */
  listen(listener: ListenerName, bind: string, port: number): Promise<number> {
    // pauseOnConnect: the primary never reads a byte; the worker that takes the socket reads it all.
    const server = net.createServer({ pauseOnConnect: true }, (socket) => {
      // Never read here, so no error is expected; one unhandled would end the primary.
      socket.on('error', ignore);
      this.dispatch(socket, listener, new Set());
    });
    this.servers.push(server);
    return listenOn(server, bind, port, this.logger, `${listener} listener`);
  }

  /** A forked worker: its replies arrive through `onMessage`. */
  add(worker: Worker): void {
    this.workers.set(worker.id, { worker, accepting: false, ready: false, load: 0, stalled: false });
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
        // It answers: offers go to it again if a slow answer had stopped them.
        if (state.stalled) {
          state.stalled = false;
          state.accepting = true;
        }
        const offer = this.offers.get(message.id);
        if (offer === undefined || offer.workerId !== workerId) return;
        this.offers.delete(message.id);
        if (message.answer === 'taken') {
          // The worker holds its own descriptor for the connection: closing ours does not end it.
          offer.socket.destroy();
          return;
        }
        state.load--;
        // Shutting down: that worker takes no more. Full: only this one. Another worker is asked.
        if (message.answer === 'closing') state.accepting = false;
        offer.declinedBy.add(workerId);
        this.dispatch(offer.socket, offer.listener, offer.declinedBy);
        return;
      }
      case 'connection-closed':
        if (state.load > 0) state.load--;
        return;
      default:
        return;
    }
  }

  /**
   * A worker's IPC channel closed (it exited, or is about to): every message it sent has been
   * handled, so an offer it has not confirmed was never read there and goes to another worker.
   */
  remove(workerId: number): void {
    this.workers.delete(workerId);
    for (const [id, offer] of this.offers) if (offer.workerId === workerId) this.reoffer(id);
  }

  /**
   * Shutting down: connections no worker takes any more are closed at once (the client tries
   * another replica) rather than held for a worker that will not come.
   */
  drain(): void {
    this.draining = true;
  }

  /** Stop accepting; connections not yet taken by a worker are closed. */
  close(): void {
    clearInterval(this.sweeper);
    this.stopListening();
    for (const { socket } of this.waiting) socket.destroy();
    this.waiting = [];
    for (const offer of this.offers.values()) offer.socket.destroy();
    this.offers.clear();
  }

  private stopListening(): void {
    // Not awaited: a server whose sockets were sent to workers waits for those workers to report
    // them closed before its callback runs, and after they exited nobody ever does.
    for (const server of this.servers) if (server.listening) server.close();
  }

  private dispatch(socket: Socket, listener: ListenerName, declinedBy: Set<number>): void {
    // Ready workers first, then the least loaded.
    let best: WorkerState | undefined;
    for (const state of this.workers.values()) {
      if (!state.accepting || declinedBy.has(state.worker.id) || !state.worker.isConnected()) continue;
      if (best === undefined || (state.ready && !best.ready) || (state.ready === best.ready && state.load < best.load)) best = state;
    }
    if (best === undefined) {
      // Every worker that takes connections declined this one (full): closed at once, as one
      // process at its connection cap does. Waiting is only for when no worker takes any (start-up).
      const someAccepting = [...this.workers.values()].some((w) => w.accepting);
      if (someAccepting && declinedBy.size > 0) {
        socket.destroy();
        return;
      }
      if (this.draining) {
        socket.destroy();
        if (![...this.workers.values()].some((w) => w.accepting)) this.stopListening();
      } else if (this.waiting.length >= MAX_WAITING) {
        socket.destroy();
      } else {
        this.waiting.push({ socket, listener, since: Date.now() });
      }
      return;
    }
    const id = this.nextId++;
    best.load++;
    this.offers.set(id, { socket, listener, declinedBy, workerId: best.worker.id, since: Date.now() });
    const message: OfferMessage = { portcullis: 'connection', listener, id };
    // keepOpen: the primary's descriptor stays open until the worker confirms (see the top).
    best.worker.send(message, socket, { keepOpen: true }, (err) => {
      // Not sent (the worker is gone, its channel broke): nobody read it; another worker gets it.
      if (err !== null && err !== undefined) this.reoffer(id);
    });
  }

  private reoffer(id: number): void {
    const offer = this.offers.get(id);
    if (offer === undefined) return;
    this.offers.delete(id);
    const state = this.workers.get(offer.workerId);
    if (state !== undefined) state.load--;
    if (offer.socket.destroyed) return;
    offer.declinedBy.add(offer.workerId);
    this.dispatch(offer.socket, offer.listener, offer.declinedBy);
  }

  private expire(): void {
    const now = Date.now();
    if (this.waiting.length > 0) {
      this.waiting = this.waiting.filter(({ socket, since }) => {
        if (now - since < MAX_WAIT_MS && !socket.destroyed) return true;
        socket.destroy();
        return false;
      });
    }
    for (const [id, offer] of this.offers) {
      const age = now - offer.since;
      if (age < MAX_OFFER_MS) continue;
      const state = this.workers.get(offer.workerId);
      if (state !== undefined && !state.stalled) {
        state.stalled = true;
        state.accepting = false;
        this.logger.warn({ worker: offer.workerId, listener: offer.listener }, 'a worker did not answer a connection hand-off within 5 s; no more connections go to it until it does');
      }
      if (age < MAX_STUCK_MS) continue;
      this.offers.delete(id);
      offer.socket.destroy();
      if (state !== undefined && state.worker.isConnected()) {
        this.logger.error({ worker: offer.workerId }, 'a worker has not answered a connection hand-off in 15 s: killed (it is replaced)');
        state.worker.process.kill('SIGKILL');
      }
    }
  }
}

/**
 * In a worker: serve the connections the primary hands over. `take` answers `taken` (it serves
 * the socket), `full` (not this one) or `closing` (no more: shutting down); the primary asks
 * another worker unless taken. Returns a function that stops receiving.
 */
export function receiveConnections(take: Partial<Record<ListenerName, (socket: Socket) => Take>>): () => void {
  const onMessage = (message: OfferMessage, socket: Socket | undefined) => {
    if (message?.portcullis !== 'connection' || typeof message.id !== 'number') return;
    // The message came without its descriptor (this process at its fd limit): nothing was read,
    // the primary offers the connection to another worker.
    if (socket === undefined) return send({ portcullis: 'taken', id: message.id, answer: 'full' });
    const handler = take[message.listener];
    const answer: Take = handler === undefined ? 'full' : handler(socket);
    // Confirmed in this tick, before the socket can be read (see the top). Declining closes only
    // this process' descriptor, before it has read anything: the primary still holds the connection.
    send({ portcullis: 'taken', id: message.id, answer });
    if (answer === 'taken') socket.once('close', () => send({ portcullis: 'connection-closed' }));
    else socket.destroy();
  };
  process.on('message', onMessage);
  send({ portcullis: 'accepting' });
  return () => process.off('message', onMessage);
}

function send(message: HandoffReply): void {
  if (process.connected && process.send) process.send(message);
}

function ignore(): void {
  // see the caller
}
