// gRPC transport: envoy.service.auth.v3.Authorization/Check and grpc.health.v1.Health on one
// HTTP/2 port. A thin adapter: request frame → decodeCheckRequest → Authorizer →
// encodeCheckResponseFrame. The protocol rules live in protocol.ts (why not grpc-js: see there).

import http2 from 'node:http2';
import type { Socket } from 'node:net';
import { systemClock, type Clock } from '../../clock.js';
import type { Authorizer } from '../../pipeline/authorizer.js';
import { internalError } from '../../pipeline/authorize.js';
import { denyDecision } from '../../pipeline/decision.js';
import type { Logger } from '../../observability/logger.js';
import { listenOn } from '../listen.js';
import { Metrics } from '../../observability/metrics.js';
import { ThrottledLog } from '../../observability/throttled-log.js';
import { isPromise, type Decision, type RequestAttributes } from '../../types.js';
import type { CheckSpan, CheckTracer } from '../../observability/tracing.js';
import { secureServerOptions, watchSecureServer, type TlsReloader, type TlsSettings } from '../tls.js';
import { decodeCheckRequest, NO_HTTP_ATTRIBUTES, WireError } from './decode.js';
import { encodeCheckResponseFrame } from './encode.js';
import { HEALTH_CHECK_PATH, HEALTH_WATCH_PATH, HealthService } from './health.js';
import type { Take } from '../handoff.js';
import { TakeTurns } from './turns.js';
import { ConnectionState, resolveLimits, ResourceGovernor, type TransportLimits } from './limits.js';
import { attachConnection, connectionOf, GRPC_STATUS_NAMES, GrpcStatus, isGrpcRequest, type GrpcErrorSink, RequestReader, sendError, unanswerable } from './protocol.js';

export const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization';
const CHECK_PATH = `/${AUTHORIZATION_SERVICE}/Check`;
const PORTCULLIS = { realm: 'portcullis' };

export interface GrpcServerOptions {
  bind: string;
  port: number;
  /** The port's limits (limits.ts); the ones not given take their defaults. */
  limits?: Partial<TransportLimits>;
  /** Shorthands for limits.maxMessageBytes / readTimeoutMs / memoryBudgetBytes. */
  maxMessageBytes?: number;
  readTimeoutMs?: number;
  maxBufferedBytes?: number;
  metrics?: Metrics;
  clock?: Clock;
  /** Serve TLS (and mTLS with clientCaFile) instead of plaintext h2c; certificates hot-reloaded. */
  tls?: TlsSettings;
  /** Tracing on (observability/tracing.ts): a span per sampled check. Undefined: no tracing work at all. */
  tracer?: CheckTracer;
  /** Answer dependency failures (503s) with error_response rather than denied_response (policy dependencyFailure: error). */
  dependencyErrors?: boolean;
}

/** The answer to a check refused by admission control: prepared once, sent without reading the request. */
const OVERLOADED_DECISION = denyDecision(PORTCULLIS, '', 'none', { reason: 'overloaded' });
const OVERLOADED_FRAMES = [encodeCheckResponseFrame(OVERLOADED_DECISION, false), encodeCheckResponseFrame(OVERLOADED_DECISION, true)] as const;

export class GrpcTransport {
  readonly health = new HealthService([AUTHORIZATION_SERVICE]);
  private readonly server: http2.Http2Server | http2.Http2SecureServer;
  private readonly tlsReloader: TlsReloader | undefined;
  private readonly connections = new Map<http2.ServerHttp2Session, ConnectionState>();
  /** Process-wide request memory and admission; the HTTP authorization listener admits through it too. */
  readonly governor: ResourceGovernor;
  private readonly reader: RequestReader;
  private readonly turns: TakeTurns;
  private readonly clock: Clock;
  /** Closes connections past their preface or idle timeout, refreshes the gauges (every ≤ 1 s). */
  private readonly sweeper: NodeJS.Timeout;
  private readonly refused;
  private readonly closedConnections;
  private readonly gauges;
  private readonly undecodable: ThrottledLog;
  private readonly overloadLog: ThrottledLog;
  private readonly memoryLog: ThrottledLog;
  private readonly countError: GrpcErrorSink;
  private readonly tracer: CheckTracer | undefined;
  /** policy dependencyFailure: error — 503s go out as error_response. */
  dependencyErrors: boolean;
  boundPort = 0;

  constructor(
    private readonly authorizer: Authorizer,
    private readonly logger: Logger,
    private readonly options: GrpcServerOptions,
  ) {
    const limits = resolveLimits({
      maxMessageBytes: options.maxMessageBytes,
      readTimeoutMs: options.readTimeoutMs,
      memoryBudgetBytes: options.maxBufferedBytes,
      ...options.limits,
    });
    const metrics = options.metrics ?? new Metrics({ defaultMetrics: false });
    this.clock = options.clock ?? systemClock;
    this.dependencyErrors = options.dependencyErrors === true;
    this.tracer = options.tracer;
    const errors = metrics.counter('portcullis_grpc_errors_total', 'gRPC calls answered with a non-OK grpc-status, by status name (denials are answers, status OK).', ['code']);
    const byCode = new Map<number, { inc(): void }>();
    this.countError = (code) => {
      let child = byCode.get(code);
      if (child === undefined) byCode.set(code, (child = errors.labels(GRPC_STATUS_NAMES[code] ?? String(code))));
      child.inc();
    };
    const refused = metrics.counter('portcullis_grpc_refused_total', 'gRPC calls refused to protect the process: overloaded (503 overloaded denial), memory (RESOURCE_EXHAUSTED).', ['reason']);
    this.refused = { overloaded: refused.labels('overloaded'), memory: refused.labels('memory') };
    const closed = metrics.counter(
      'portcullis_grpc_connections_closed_total',
      'HTTP/2 connections closed by Portcullis: preface_timeout, idle, connection_limit, stalled (answers not taken within answerTimeout in two sweeps in a row, or within the read timeout).',
      ['reason'],
    );
    this.closedConnections = {
      preface_timeout: closed.labels('preface_timeout'),
      idle: closed.labels('idle'),
      connection_limit: closed.labels('connection_limit'),
      stalled: closed.labels('stalled'),
    };
    this.gauges = {
      inFlight: metrics.gauge('portcullis_grpc_in_flight', 'Checks in flight (admitted, not yet answered and closed).', []),
      buffered: metrics.gauge('portcullis_grpc_request_bytes', 'Request bytes held (being received or inflated), against the memory budget.', []),
      connections: metrics.gauge('portcullis_grpc_connections', 'Open HTTP/2 connections on the gRPC port.', []),
    };
    const throttled = (message: string, counter?: { inc(): void }, level: 'info' | 'warn' = 'warn') => new ThrottledLog({ logger, clock: this.clock, level, message, counter });
    this.undecodable = throttled(
      'rejected undecodable CheckRequests',
      metrics.counter('portcullis_grpc_undecodable_requests_total', 'Check calls whose message is not a CheckRequest (answered INVALID_ARGUMENT).', []),
      'info',
    );
    this.overloadLog = throttled('overloaded: checks refused with 503 overloaded', this.refused.overloaded);
    this.memoryLog = throttled('request memory budget exhausted: requests refused with RESOURCE_EXHAUSTED', this.refused.memory);

    this.governor = new ResourceGovernor(limits);
    this.governor.tick = this.clock.now();
    this.reader = new RequestReader(this.governor, (stream, err) => this.failed(stream, err));
    this.turns = new TakeTurns(this.governor, {
      decide: this.decide,
      refuse: (stream) => {
        this.overloadLog.note(() => ({ inFlight: this.governor.inFlight, maxInFlight: this.governor.limits.maxInFlight, waiting: this.turns.waiting, memory: this.governor.used }));
        this.reader.answer(stream, OVERLOADED_FRAMES[this.dependencyErrors ? 1 : 0]);
      },
      failed: (stream, err) => this.failed(stream, err),
    });
    this.reader.onOverBudget = () => this.memoryLog.note(() => ({ budgetBytes: this.governor.limits.memoryBudgetBytes, heldBytes: this.governor.used, connections: this.connections.size }));
    this.reader.onStalled = () => this.closedConnections.stalled.inc();
    const answersReset = metrics.counter('portcullis_grpc_answers_reset_total', 'Answers (checks, overloaded refusals, health Checks) the client did not take within answerTimeout: their streams were reset.', []);
    this.reader.onAnswerReset = () => answersReset.inc();
    const serverOptions: http2.ServerOptions = {
      // Envoy multiplexes checks on a few connections and opens another at this limit. A client
      // that ignores it gets its excess streams refused by nghttp2, and its session closed after
      // 100 of those.
      settings: { maxConcurrentStreams: limits.maxStreamsPerConnection },
      // Node refuses new streams once a session's nghttp2 memory (including responses waiting to
      // be written) passes this many MB. The governor bounds what matters process-wide; this is
      // the backstop for one connection that stops reading its responses.
      maxSessionMemory: 32,
    };
    if (options.tls) {
      const secure = http2.createSecureServer({
        ...serverOptions,
        ...secureServerOptions(options.tls, ['h2']),
        allowHTTP1: false,
        // A connection that does not finish its handshake is dropped like one without a preface.
        handshakeTimeout: limits.prefaceTimeoutMs,
      });
      this.tlsReloader = watchSecureServer(secure, options.tls, 'grpc', { logger, metrics, clock: this.clock });
      this.server = secure;
    } else {
      this.server = http2.createServer(serverOptions);
    }
    this.server.on('stream', this.onStream);
    this.server.on('session', this.onSession);
    // A peer that went away without a FIN is noticed by TCP keepalive rather than never.
    this.server.on('connection', (socket: Socket) => {
      socket.setKeepAlive(true, 60_000);
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server.on('sessionError', (err: Error) => this.logger.debug({ err: err.message }, 'HTTP/2 session error'));
    const sweepEvery = Math.max(50, Math.min(1000, limits.prefaceTimeoutMs / 2, limits.idleTimeoutMs / 2));
    this.sweeper = setInterval(() => this.sweepConnections(), sweepEvery);
    this.sweeper.unref();
  }

  /** The limits in force. */
  get limits(): TransportLimits {
    return this.governor.limits;
  }

  /** Apply new limits (a policy reload): budgets and timeouts at once, stream settings to new connections. */
  setLimits(limits: Partial<TransportLimits>): void {
    this.governor.limits = resolveLimits({ ...this.governor.limits, maxConnectionBytes: undefined, ...limits });
    this.reader.limitsChanged();
  }

  async start(): Promise<number> {
    this.boundPort = await listenOn(this.server, this.options.bind, this.options.port, this.logger, 'gRPC server');
    return this.boundPort;
  }

  /** Serve a connection the cluster primary accepted (transport/handoff.ts); false once shutting down. */
  adopt(socket: Socket): Take {
    if (this.closing) return 'closing';
    this.server.emit('connection', socket);
    return 'taken';
  }

  private closing = false;
  /** Every TCP connection, preface or not: what a drain that timed out closes for certain. */
  private readonly sockets = new Set<Socket>();

  /** Checks currently being answered (drain waits for zero). */
  get pending(): number {
    return this.governor.inFlight;
  }

  /** Open connections and request bytes held (tests, metrics). */
  get usage(): { connections: number; requestBytes: number; inFlight: number } {
    return { connections: this.connections.size, requestBytes: this.governor.used, inFlight: this.governor.inFlight };
  }

  /**
   * Stop accepting connections, send GOAWAY on every connection so clients move to another
   * replica, let in-flight calls finish, and close what is left after `timeoutMs`.
   */
  async shutdown(timeoutMs: number): Promise<void> {
    this.closing = true;
    this.reader.close();
    this.tlsReloader?.close();
    clearInterval(this.sweeper);
    const closed = Promise.all([
      this.server.listening ? new Promise<void>((resolve) => this.server.close(() => resolve())) : undefined,
      ...[...this.connections.keys()].map((session) => new Promise<void>((resolve) => (session.closed ? resolve() : session.once('close', () => resolve())))),
    ]);
    // A connection that never sent its preface has nothing in flight and would not close on GOAWAY.
    for (const [session, state] of this.connections) state.ready ? session.close() : session.destroy();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs);
    });
    if (await Promise.race([closed.then(() => false), timedOut])) {
      this.logger.warn({ pending: this.governor.inFlight, connections: this.connections.size }, 'drain timeout; closing remaining gRPC connections');
      for (const session of this.connections.keys()) session.destroy();
      // A session's destroy does not always end a socket that never spoke HTTP/2: end them all.
      for (const socket of this.sockets) socket.destroy();
      await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    }
    clearTimeout(timer);
  }

  /**
   * A new connection: at the connection cap the longest-idle connection (no open stream; one that
   * never sent its preface counts as idle since it opened) is closed to make room; when every
   * connection is busy, the least recently active one (a stream opened or closed longest ago).
   * Refusing the newcomer instead let a few slow senders (a stream that trickles its request, a new
   * one after each read timeout) hold the whole cap for ever, and Envoy could never connect; the
   * connections Envoy uses open and close streams all the time and are the last to go.
   */
  private readonly onSession = (session: http2.ServerHttp2Session): void => {
    if (this.connections.size >= this.governor.limits.maxConnections) {
      // Least recently active first; connections that never sent the preface before all others.
      let victim: http2.ServerHttp2Session | undefined;
      let oldest = Infinity;
      let busyVictim: http2.ServerHttp2Session | undefined;
      let oldestBusy = Infinity;
      for (const [s, state] of this.connections) {
        const rank = state.ready ? state.activity : state.activity - 2 ** 52;
        if (state.streams === 0) {
          if (rank < oldest) {
            oldest = rank;
            victim = s;
          }
        } else if (rank < oldestBusy) {
          oldestBusy = rank;
          busyVictim = s;
        }
      }
      this.closedConnections.connection_limit.inc();
      victim ??= busyVictim;
      if (victim === undefined) {
        session.destroy();
        return;
      }
      this.closeConnection(victim);
    }
    const state = new ConnectionState(this.governor.tick, this.governor.limits.maxStreamsPerConnection);
    state.activity = ++this.governor.activity;
    attachConnection(session, state, this.countError);
    this.connections.set(session, state);
    session.once('remoteSettings', () => (state.ready = true));
    session.once('close', () => this.connections.delete(session));
  };

  /** GOAWAY and close (it has no open stream, so it closes at once); one without a preface is just dropped. */
  private closeConnection(session: http2.ServerHttp2Session): void {
    const ready = this.connections.get(session)?.ready === true;
    this.connections.delete(session);
    try {
      if (ready && !session.closed) {
        session.close();
        // A peer that neither closes nor answers the GOAWAY is dropped shortly after.
        setTimeout(() => session.destroyed || session.destroy(), 1000).unref();
      } else if (!session.destroyed) session.destroy();
    } catch {
      session.destroy();
    }
  }

  /** Close connections that never sent the preface, and idle ones; refresh the gauges. */
  private sweepConnections(): void {
    const now = (this.governor.tick = this.clock.now());
    const { prefaceTimeoutMs, idleTimeoutMs } = this.governor.limits;
    for (const [session, state] of this.connections) {
      if (!state.ready) {
        if (now - state.lastActive >= prefaceTimeoutMs) {
          this.closedConnections.preface_timeout.inc();
          this.closeConnection(session);
        }
      } else if (state.streams === 0 && now - state.lastActive >= idleTimeoutMs) {
        this.closedConnections.idle.inc();
        this.closeConnection(session);
      }
    }
    // Load has passed: give throttled connections their streams back, doubling per sweep.
    const { maxInFlight, maxStreamsPerConnection } = this.governor.limits;
    if (this.governor.inFlight < maxInFlight >>> 2) {
      for (const [session, state] of this.connections) {
        if (state.streamLimit < maxStreamsPerConnection) announceStreamLimit(session, state, Math.min(maxStreamsPerConnection, state.streamLimit * 2));
      }
    }
    this.gauges.inFlight.set(this.governor.inFlight);
    this.gauges.buffered.set(this.governor.used);
    this.gauges.connections.set(this.connections.size);
  }

  private readonly onStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void => {
    // A reset stream emits 'error'; unhandled, that would end the process.
    stream.on('error', ignoreStreamError);
    const connection = connectionOf(stream);
    if (connection === undefined) {
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    try {
      if (!isGrpcRequest(stream, headers)) return;
      const path = headers[':path'];
      if (path === CHECK_PATH) {
        if (!this.governor.admit(connection)) return this.overloaded(stream, connection);
        // In flight (and the connection busy) until the stream closes: the reader's close handler.
        this.reader.read(stream, headers, this.check, undefined, true);
        return;
      }
      if (path === HEALTH_CHECK_PATH || path === HEALTH_WATCH_PATH) this.health.serve(this.reader, stream, headers, path);
      else sendError(stream, GrpcStatus.UNIMPLEMENTED, `The server does not implement the method ${String(path).slice(0, 200)}`);
    } catch (err) {
      this.failed(stream, err);
    }
  };

  /**
   * Over maxInFlight: a prepared 503 `overloaded` denial, without reading the request. The
   * connection is also told (SETTINGS_MAX_CONCURRENT_STREAMS) to keep to its fair share, so a
   * flooding client stops opening streams that would only be refused: every stream costs the
   * event loop, and the loop's turn is every other client's latency. The limit is raised again by
   * the sweep once the load has passed.
   */
  private overloaded(stream: http2.ServerHttp2Stream, connection: ConnectionState): void {
    this.overloadLog.note(() => ({ inFlight: this.governor.inFlight, maxInFlight: this.governor.limits.maxInFlight, connectionChecks: connection.checks, connections: this.connections.size }));
    stream.resume(); // the request's bytes are dropped as they arrive
    this.reader.answerUnread(stream, OVERLOADED_FRAMES[this.dependencyErrors ? 1 : 0]);
    const share = this.governor.checkShare();
    if (connection.streamLimit > share) announceStreamLimit(stream.session as http2.ServerHttp2Session | undefined, connection, share);
  }

  /** A check's message is read: decided now, or after the waiting ones if its connection is throttled (turns.ts). */
  private readonly check = (stream: http2.ServerHttp2Stream, message: Buffer): void => {
    const connection = connectionOf(stream);
    if (connection === undefined) this.decide(stream, message);
    else this.turns.check(connection, stream, message);
  };

  private readonly decide = (stream: http2.ServerHttp2Stream, message: Buffer): void => {
    let request: RequestAttributes & { [NO_HTTP_ATTRIBUTES]?: boolean };
    try {
      request = decodeCheckRequest(message);
    } catch (err) {
      // Not a CheckRequest at all: the one case that is an RPC error rather than a denial.
      const details = err instanceof WireError ? `malformed CheckRequest: ${err.message}` : 'malformed CheckRequest';
      this.undecodable.note({ err: details });
      sendError(stream, GrpcStatus.INVALID_ARGUMENT, details);
      return;
    }
    const tracer = this.tracer;
    if (tracer !== undefined) {
      try {
        request.trace = tracer.start(request, AUTHORIZATION_SERVICE, 'Check');
      } catch {
        // tracing never decides anything: the check goes on untraced
      }
    }
    let decision;
    try {
      decision = this.authorizer.check(request, request[NO_HTTP_ATTRIBUTES] === true);
    } catch (err) {
      decision = internalError(PORTCULLIS, request, 'unknown', err);
    }
    if (isPromise(decision)) {
      decision
        .then(
          (d) => this.reply(stream, request, d),
          (err: unknown) => this.reply(stream, request, internalError(PORTCULLIS, request, 'unknown', err)),
        )
        .catch((err: unknown) => this.failed(stream, err));
    } else {
      this.reply(stream, request, decision);
    }
  };

  private reply(stream: http2.ServerHttp2Stream, request: RequestAttributes, decision: Decision): void {
    let frame: Buffer;
    try {
      frame = encodeCheckResponseFrame(decision, this.dependencyErrors);
    } catch (err) {
      this.logger.error({ err: (err as Error)?.message, requestId: request.requestId }, 'failed to encode CheckResponse; answering 503');
      frame = encodeCheckResponseFrame(internalError(PORTCULLIS, request, 'unknown', err), this.dependencyErrors);
    }
    // Nothing is sent when Envoy already gave up on this check (its timeout) and reset the stream.
    // Then the answer deadline: an answer not taken within answerTimeout is reset.
    this.reader.answer(stream, frame);
    if (request.trace !== undefined) {
      try {
        (request.trace as CheckSpan).finish(decision, GrpcStatus.OK);
      } catch {
        // a tracing failure never touches the answer
      }
    }
  }

  /** A failure in the transport itself (never a decision): end that call, never the process. */
  private failed(stream: http2.ServerHttp2Stream, err: unknown): void {
    try {
      this.logger.error({ err: (err as Error)?.message }, 'gRPC transport error');
      if (!unanswerable(stream)) sendError(stream, GrpcStatus.INTERNAL, 'internal error');
      else if (!stream.destroyed && !stream.closed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    } catch {
      stream.destroy();
    }
  }
}

/** Announce a new SETTINGS_MAX_CONCURRENT_STREAMS (one SETTINGS frame awaiting its ACK at a time). */
function announceStreamLimit(session: http2.ServerHttp2Session | undefined, state: ConnectionState, limit: number): void {
  if (session === undefined || session.destroyed || session.closed || session.pendingSettingsAck) return;
  try {
    session.settings({ maxConcurrentStreams: limit });
    state.streamLimit = limit;
  } catch {
    // the session is going away
  }
}

function ignoreStreamError(): void {
  // The stream is gone (client reset, connection closed); its call can no longer be answered.
}
