// The HTTP authorization listener: node:http on its own port for proxies that ask over plain HTTP
// (Envoy http_service, nginx auth_request, Traefik forwardAuth, Caddy forward_auth). A thin adapter
// like the gRPC one: request → the configured shape's RequestAttributes → the same Authorizer
// (policy in force, caches, limits, metrics) → the shape's answer.
//
// Which shape a request has comes from configuration only — the listener's `shape`, or the path
// prefix it arrived on (`paths`) — never from a header a client could set.

import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Take } from '../handoff.js';
import { systemClock, type Clock } from '../../clock.js';
import type { Logger } from '../../observability/logger.js';
import { listenOn } from '../listen.js';
import type { Metrics } from '../../observability/metrics.js';
import { ThrottledLog } from '../../observability/throttled-log.js';
import { internalError } from '../../pipeline/authorize.js';
import type { Authorizer } from '../../pipeline/authorizer.js';
import { denyDecision } from '../../pipeline/decision.js';
import { MAX_HEADER_ENTRIES } from '../grpc/decode.js';
import { ConnectionState, DEFAULT_LIMITS, ResourceGovernor } from '../grpc/limits.js';
import { DEFAULT_AUTHZ_HTTP_PATHS, type AuthzHttpSettings, type AuthzHttpShape } from '../../policy/schema.js';
import { isPromise, type Decision, type RequestAttributes } from '../../types.js';
import { envoyShape } from './envoy.js';
import { forwardAuthShape } from './forward-auth.js';
import { nginxShape } from './nginx.js';
import { NodeHeaders, refusedRequest, send, ShapeProblem, type ProxyShape } from './shape.js';
import { secureServerOptions, watchSecureServer, type TlsReloader, type TlsSettings } from '../tls.js';

const TOO_MANY_HEADERS = new ShapeProblem(`more than ${MAX_HEADER_ENTRIES} header fields`);

const SHAPES: Readonly<Record<AuthzHttpShape, ProxyShape>> = { envoy: envoyShape, nginx: nginxShape, 'forward-auth': forwardAuthShape };
const PORTCULLIS = { realm: 'portcullis' };

export type AuthzHttpOptions = Pick<AuthzHttpSettings, 'shape' | 'paths' | 'maxHeaderBytes' | 'maxConnections' | 'headersTimeout' | 'keepAliveTimeout'> & {
  readonly bind: string;
  readonly port: number;
  /**
   * The process's admission control (the gRPC transport's): checks in flight on both listeners
   * count against one maxInFlight, and a check over it is answered 503 `overloaded` at once.
   */
  readonly governor?: ResourceGovernor;
  readonly metrics?: Metrics;
  readonly clock?: Clock;
  /** Serve HTTPS (the same certificate, client CA and hot reload as the gRPC port; ALPN http/1.1). */
  readonly tls?: TlsSettings;
};

/** One keep-alive connection's share of admission (HTTP/1.1: one request at a time). */
const STATE = Symbol('admission');
type AdmittedSocket = Socket & { [STATE]?: ConnectionState };

interface Mount {
  readonly prefix: string;
  readonly shape: ProxyShape;
}

export class AuthzHttpListener {
  private readonly server: http.Server | https.Server;
  private readonly tlsReloader: TlsReloader | undefined;
  /** Longest prefix first; empty when one shape serves the whole listener. */
  private readonly mounts: readonly Mount[];
  private readonly wholeListener: ProxyShape | undefined;
  private inFlight = 0;
  private draining = false;
  private readonly governor: ResourceGovernor;
  private readonly overloadLog: ThrottledLog;
  boundPort = 0;

  constructor(
    private readonly authorizer: Authorizer,
    private readonly logger: Logger,
    private readonly options: AuthzHttpOptions,
  ) {
    this.governor = options.governor ?? new ResourceGovernor(DEFAULT_LIMITS);
    const clock = options.clock ?? systemClock;
    const refused = options.metrics?.counter('portcullis_authz_http_refused_total', 'HTTP authorization requests refused to protect the process: overloaded (503 overloaded).', ['reason']);
    this.overloadLog = new ThrottledLog({ logger, clock, level: 'warn', message: 'overloaded: HTTP authorization requests refused with 503 overloaded', counter: refused?.labels('overloaded') });
    this.wholeListener = options.shape === undefined ? undefined : SHAPES[options.shape];
    const paths = options.shape === undefined ? (options.paths ?? DEFAULT_AUTHZ_HTTP_PATHS) : {};
    this.mounts = Object.entries(paths)
      .map(([prefix, shape]) => ({ prefix, shape: SHAPES[shape] }))
      .sort((a, b) => b.prefix.length - a.prefix.length);
    const serverOptions: http.ServerOptions = {
      // Request line + headers; beyond it node:http answers 431 and closes the connection.
      maxHeaderSize: options.maxHeaderBytes,
      // A client trickling its request head (or body) is answered 408 and closed.
      headersTimeout: options.headersTimeout,
      requestTimeout: options.headersTimeout,
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(options.headersTimeout / 2))),
      keepAliveTimeout: options.keepAliveTimeout,
      noDelay: true,
    };
    if (options.tls) {
      // A client without a certificate from the client CA (mTLS) never finishes the handshake.
      const secure = https.createServer({ ...serverOptions, ...secureServerOptions(options.tls, ['http/1.1']) }, this.onRequest);
      this.tlsReloader = options.metrics ? watchSecureServer(secure, options.tls, 'authz-http', { logger, metrics: options.metrics, clock }) : undefined;
      this.server = secure;
    } else {
      this.server = http.createServer(serverOptions, this.onRequest);
    }
    this.server.maxConnections = options.maxConnections;
    this.server.maxRequestsPerSocket = 0;
    // node:http silently drops header fields past maxHeadersCount (2,000 by default): rules would
    // judge fewer headers than the upstream reads. It keeps one more than the bound, and a request
    // over the bound is refused (onRequest), as over gRPC; the bytes stay bounded by maxHeaderSize.
    this.server.maxHeadersCount = MAX_HEADER_ENTRIES + 1;
    // A peer that vanished without a FIN is noticed by TCP keepalive rather than never.
    this.server.on('connection', (socket: Socket) => socket.setKeepAlive(true, 60_000));
  }

  async start(): Promise<number> {
    this.boundPort = await listenOn(this.server, this.options.bind, this.options.port, this.logger, 'HTTP authorization listener');
    return this.boundPort;
  }

  /**
   * Cluster worker: connections come from the primary (transport/handoff.ts) instead of a listening
   * socket. node:http arms its request/headers timeouts and its connection list (what
   * closeIdleConnections walks) on 'listening', so that is announced here.
   */
  serveHanded(port: number): number {
    this.server.emit('listening');
    return (this.boundPort = port);
  }

  /**
   * Serve a connection the cluster primary accepted: `closing` while draining, `full` at
   * maxConnections (net.Server counts only the connections it accepted itself); then the primary
   * offers it to another worker.
   */
  adopt(socket: Socket): Take {
    if (this.draining) return 'closing';
    if (this.handedConnections >= this.options.maxConnections) return 'full';
    this.handedConnections++;
    socket.once('close', () => this.handedConnections--);
    this.server.emit('connection', socket);
    return 'taken';
  }

  private handedConnections = 0;

  /** Checks currently being answered. */
  get pending(): number {
    return this.inFlight;
  }

  /**
   * Stop accepting, answer what is in flight (with `connection: close`), close idle keep-alive
   * connections, and close whatever is left after `timeoutMs`.
   */
  async shutdown(timeoutMs: number): Promise<void> {
    this.draining = true;
    this.tlsReloader?.close();
    // Also when never listening (a cluster worker): close() stops node:http's timeout checks.
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const deadline = Date.now() + timeoutMs;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (this.inFlight > 0) this.logger.warn({ pending: this.inFlight }, 'drain timeout; closing remaining HTTP authorization connections');
    this.server.closeAllConnections();
    await closed;
  }

  private readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    try {
      if (this.draining) res.shouldKeepAlive = false;
      const url = req.url ?? '';
      const headers = new NodeHeaders(req.rawHeaders);
      let shape = this.wholeListener;
      let rest = url;
      if (shape === undefined) {
        const mount = this.mountOf(url);
        if (mount === undefined) {
          send(res, 404, ['content-type', 'text/plain'], 'not found: this port answers authorization requests under its configured path prefixes\n');
          return;
        }
        shape = mount.shape;
        rest = url.slice(mount.prefix.length);
      }
      if (!this.admit(req, res)) {
        const refused = refusedRequest(headers, req);
        this.reply(res, shape, refused, denyDecision(PORTCULLIS, refused.requestId, 'none', { reason: 'overloaded' }), false);
        return;
      }
      const request = req.rawHeaders.length > 2 * MAX_HEADER_ENTRIES ? TOO_MANY_HEADERS : shape.read(req, headers, rest);
      if (request instanceof ShapeProblem) {
        const refused = refusedRequest(headers, req);
        this.reply(res, shape, refused, this.authorizer.refuse(refused, { reason: 'invalid_proxy_request', detail: request.detail }));
        return;
      }
      this.decide(res, shape, request);
    } catch (err) {
      this.failed(res, err);
    }
  };

  private decide(res: http.ServerResponse, shape: ProxyShape, request: RequestAttributes): void {
    let decision;
    try {
      decision = this.authorizer.check(request);
    } catch (err) {
      decision = internalError(PORTCULLIS, request, 'unknown', err);
    }
    if (isPromise(decision)) {
      decision
        .then(
          (d) => this.reply(res, shape, request, d),
          (err: unknown) => this.reply(res, shape, request, internalError(PORTCULLIS, request, 'unknown', err)),
        )
        .catch((err: unknown) => this.failed(res, err));
    } else this.reply(res, shape, request, decision);
  }

  /**
   * Admit a check through the process's governor, released when its response is closed; false:
   * answer 503 `overloaded` without deciding.
   */
  private admit(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const socket = req.socket as AdmittedSocket;
    const governor = this.governor;
    let state = socket[STATE];
    if (state === undefined) state = socket[STATE] = new ConnectionState(governor.tick, 1);
    governor.opened(state);
    if (!governor.admit(state)) {
      governor.closed(state, false);
      this.overloadLog.note(() => ({ inFlight: governor.inFlight, maxInFlight: governor.limits.maxInFlight }));
      return false;
    }
    this.inFlight++;
    const admitted = state;
    res.once('close', () => governor.closed(admitted, true));
    return true;
  }

  /** The mount whose prefix is `url`'s first path segments ("/nginx" serves "/nginx" and "/nginx/…"). */
  private mountOf(url: string): Mount | undefined {
    for (const mount of this.mounts) {
      const p = mount.prefix;
      if (!url.startsWith(p)) continue;
      const next = url.charCodeAt(p.length);
      if (Number.isNaN(next) || next === 47 /* / */ || next === 63 /* ? */) return mount;
    }
    return undefined;
  }

  private reply(res: http.ServerResponse, shape: ProxyShape, request: RequestAttributes, decision: Decision, admitted = true): void {
    if (admitted) this.inFlight--;
    // The proxy gave up (its timeout) and closed the connection: nothing to answer.
    if (res.destroyed || res.writableEnded) return;
    try {
      shape.write(res, decision);
    } catch (err) {
      this.logger.error({ err: (err as Error)?.message, requestId: request.requestId }, 'failed to encode an HTTP authorization answer; answering 503');
      if (res.headersSent) res.destroy();
      else shape.write(res, internalError(PORTCULLIS, request, 'unknown', err));
    }
  }

  /** A failure in the listener itself (never a decision): a 503 denial when still possible, never a crash. */
  private failed(res: http.ServerResponse, err: unknown): void {
    try {
      this.logger.error({ err: (err as Error)?.message }, 'HTTP authorization listener error');
      if (res.headersSent || res.destroyed) res.destroy();
      else send(res, 503, ['content-type', 'application/json', 'retry-after', '1'], '{"error":"Service Unavailable","code":"UNAVAILABLE","status":503,"reason":"internal_error"}');
    } catch {
      res.destroy();
    }
  }
}
