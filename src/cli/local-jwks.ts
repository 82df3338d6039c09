// Key sets served on 127.0.0.1 for the duration of one `portcullis check` or `portcullis test`
// run, so JWKS issuers are verified by the real pipeline (real fetch, real key-set parsing) with
// keys the run controls: keys from a file (check --jwks), test keys (test), or none (check
// --offline: the issuer answers 503, so its tokens are refused as jwks_unavailable).

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export class LocalJwks {
  private readonly sets = new Map<string, string | undefined>();
  private server: Server | undefined;
  private port = 0;

  /** Serve `jwks` (a JWKS JSON text) for issuer `name`; undefined: answer 503 (offline). */
  set(name: string, jwks: string | undefined): void {
    this.sets.set(name, jwks);
  }

  async start(): Promise<void> {
    if (this.server || this.sets.size === 0) return;
    const server = createServer((req, res) => {
      const name = decodeURIComponent((req.url ?? '').replace(/^\/+/, '').replace(/\/jwks\.json$/, ''));
      const body = this.sets.get(name);
      if (body === undefined) {
        res.writeHead(503, { 'content-type': 'text/plain' }).end('offline');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(body);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    server.unref();
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  url(name: string): string {
    return `http://127.0.0.1:${this.port}/${encodeURIComponent(name)}/jwks.json`;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
