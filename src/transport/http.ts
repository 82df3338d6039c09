// HTTP port for operators: /healthz (liveness), /readyz (readiness), /metrics (Prometheus), and
// /.well-known/jwks.json (the identity token's public keys, when the policy has identityToken).
// Never on the request path of Envoy; it only reads state.

import http from 'node:http';
/** What /metrics serves: a prom-client Registry, or the cluster aggregator in the primary. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface OpsState {
  /** Policy loaded, dependencies ready, not draining. */
  ready(): boolean;
  /** Why not ready, for humans reading /readyz. */
  readinessDetail(): string;
}

/** The public keys verifiers of the identity token fetch; undefined when the policy issues none. */
export type JwksSource = () => string | undefined;

/** Verifiers may cache the key set this long; a new signing key is published before it is used only if added public-only first (README). */
const JWKS_CACHE_CONTROL = 'public, max-age=300';

export class OpsServer {
  private readonly server: http.Server;
  boundPort = 0;

  constructor(
    private readonly metrics: MetricsSource,
    private readonly state: OpsState,
    private readonly jwks?: JwksSource,
  ) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 10_000;
  }

  start(bind: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, bind, () => {
        this.server.off('error', reject);
        const address = this.server.address();
        this.boundPort = typeof address === 'object' && address ? address.port : port;
        resolve(this.boundPort);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/healthz':
        return send(res, 200, 'text/plain', 'ok\n');
      case '/readyz':
        return this.state.ready() ? send(res, 200, 'text/plain', 'ready\n') : send(res, 503, 'text/plain', `not ready: ${this.state.readinessDetail()}\n`);
      case '/metrics':
        try {
          return send(res, 200, this.metrics.contentType, await this.metrics.metrics());
        } catch (err) {
          return send(res, 500, 'text/plain', `metrics failed: ${(err as Error).message}\n`);
        }
      case '/.well-known/jwks.json': {
        const body = this.jwks?.();
        if (body === undefined) return send(res, 404, 'text/plain', 'not found\n');
        res.writeHead(200, { 'content-type': 'application/jwk-set+json', 'cache-control': JWKS_CACHE_CONTROL });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      default:
        return send(res, 404, 'text/plain', 'not found\n');
    }
  }
}

function send(res: http.ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' });
  res.end(body);
}
