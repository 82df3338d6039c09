// The HTTP authorization listener's own rules: shape from configuration only, 400 for a request
// without its proxy's headers, bounded heads, slow clients, connection cap, keep-alive, the client
// address from x-forwarded-for, off unless configured.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/observability/logger.js';
import { resolveLimits, ResourceGovernor } from '../../../src/transport/grpc/limits.js';
import { AuthzHttpListener } from '../../../src/transport/http/listener.js';
import { askShape, closeAgent, rawRequest, shapeRequest } from '../../support/authz-http.js';
import { startTestServer, type TestServer } from '../../support/server.js';

const BASE = `
realm: listener
identity:
  - sharedSecret: { header: x-secret, secret: "0123456789abcdef0123456789abcdef", tenant: t1 }
routes:
  - { name: health, match: { path: /health }, public: true, rateLimits: { exempt: true } }
  - { name: login, match: { path: /login }, public: true }
  - { name: api, match: { pathPrefix: /api/ }, rateLimits: { exempt: true } }
default: deny
rateLimits:
  backend: memory
  policies:
    - { name: per-ip, key: [ip], window: 60s, limit: 2 }
`;

let dir: string;
const servers: TestServer[] = [];

async function serve(server: string, options: { authzHttpPort?: number } = {}): Promise<TestServer> {
  const file = path.join(dir, `policy-${servers.length}.yaml`);
  writeFileSync(file, `${server}\n${BASE}`);
  const s = await startTestServer(file, {}, options);
  servers.push(s);
  return s;
}

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'portcullis-authz-http-'));
});

afterAll(async () => {
  closeAgent();
  for (const s of servers) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Send raw bytes on a fresh connection; resolves with everything received until the server closes. */
function rawExchange(port: number, bytes: string, { end = false } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (d) => (received += d.toString('latin1')));
    socket.on('close', () => resolve(received));
    socket.on('error', reject);
    socket.write(bytes);
    if (end) socket.end();
  });
}

describe('HTTP authorization listener', () => {
  let s: TestServer;
  let port: number;
  beforeAll(async () => {
    s = await serve('server: { authzHttp: { port: 0, maxHeaderBytes: 4096, headersTimeout: 0.5, maxConnections: 8 } }');
    port = s.server.authzHttpPort!;
  });

  it('answers each shape on its default prefix', async () => {
    for (const shape of ['envoy', 'nginx', 'forward-auth'] as const) {
      const r = await askShape(port, shape, { path: '/health' });
      expect(r.status, shape).toBe(200);
      const denied = await askShape(port, shape, { path: '/api/x' });
      expect(denied.status, shape).toBe(401);
    }
  });

  it('a request without its proxy headers is a 400 invalid_proxy_request (nginx: 403 carrying 400)', async () => {
    const bare = { 'x-forwarded-for': '198.51.100.1', 'x-forwarded-proto': 'https' };
    const envoy = await rawRequest(port, 'GET', '/envoy', { host: 'api.example.com', ...bare });
    expect(envoy.status).toBe(400);
    expect(JSON.parse(envoy.body)).toMatchObject({ code: 'BAD_REQUEST', status: 400, reason: 'invalid_proxy_request' });
    const fa = await rawRequest(port, 'GET', '/forward-auth', { host: 'portcullis', ...bare });
    expect(fa.status).toBe(400);
    const nginx = await rawRequest(port, 'GET', '/nginx', { host: 'portcullis', ...bare });
    expect(nginx.status).toBe(403);
    expect(nginx.headers['x-portcullis-status']).toBe('400');
    expect(JSON.parse(String(nginx.headers['x-portcullis-body']))).toMatchObject({ reason: 'invalid_proxy_request' });
  });

  it('absent or garbage forwarded headers are refused, never guessed', async () => {
    const cases: [string, Record<string, string | undefined>][] = [
      ['no x-forwarded-for', { 'x-forwarded-for': undefined }],
      ['x-forwarded-for not an address', { 'x-forwarded-for': 'unknown' }],
      ['x-forwarded-for with a port', { 'x-forwarded-for': '198.51.100.1:5555' }],
      ['x-forwarded-for with an empty last entry', { 'x-forwarded-for': '198.51.100.1,' }],
      ['no x-forwarded-proto', { 'x-forwarded-proto': undefined }],
      ['x-forwarded-proto not http(s)', { 'x-forwarded-proto': 'gopher' }],
      ['absolute-form URI', { 'x-forwarded-uri': 'http://evil.example/api/x', 'x-original-uri': 'http://evil.example/api/x' }],
      ['empty URI', { 'x-forwarded-uri': '', 'x-original-uri': '' }],
      ['method with a space', { 'x-forwarded-method': 'GET X', 'x-original-method': 'GET X' }],
      ['no host', { 'x-forwarded-host': '' }],
    ];
    for (const shape of ['nginx', 'forward-auth'] as const) {
      for (const [name, change] of cases) {
        const r = shapeRequest(shape, { path: '/health' });
        const headers: Record<string, string | string[]> = { ...r.headers };
        for (const [k, v] of Object.entries(change)) {
          if (v === undefined) delete headers[k];
          else if (k in headers) headers[k] = v;
        }
        const answer = await rawRequest(port, r.method, r.target, headers);
        const status = shape === 'nginx' ? Number(answer.headers['x-portcullis-status']) : answer.status;
        expect(status, `${shape}: ${name}`).toBe(400);
      }
    }
    const envoy = shapeRequest('envoy', { path: '/health' });
    expect((await rawRequest(port, 'GET', '/envoy?x=/health', envoy.headers)).status).toBe(400);
  });

  it('the shape comes from the path prefix, never from a header the client sets', async () => {
    // An Envoy-shaped request carrying nginx's and forward-auth's headers is still judged on its own path.
    const r = shapeRequest('envoy', { path: '/api/x', headers: { 'x-original-uri': '/health', 'x-forwarded-uri': '/health' } });
    expect((await rawRequest(port, r.method, r.target, r.headers)).status).toBe(401);
    // A prefix must end at a segment boundary; anything else is not an authorization endpoint.
    expect((await rawRequest(port, 'GET', '/nginxfoo', shapeRequest('nginx', { path: '/health' }).headers)).status).toBe(404);
    expect((await rawRequest(port, 'GET', '/', { host: 'x' })).status).toBe(404);
  });

  it('the client address is the last x-forwarded-for entry (the peer the proxy saw); prepended entries do not escape a per-IP limit', async () => {
    const statuses: number[] = [];
    for (const spoof of ['1.1.1.1', '2.2.2.2', '3.3.3.3']) {
      statuses.push((await askShape(port, 'forward-auth', { path: '/login', xff: `${spoof}, 192.0.2.77` })).status);
    }
    expect(statuses).toEqual([200, 200, 429]);
    // IPv6 peers as proxies write them.
    expect((await askShape(port, 'nginx', { path: '/health', xff: '2001:db8::1' })).status).toBe(200);
  });

  it('two credentials in repeated headers are refused as over gRPC (not the first one taken)', async () => {
    const secret = '0123456789abcdef0123456789abcdef';
    expect((await askShape(port, 'envoy', { path: '/api/x', headers: { 'x-secret': secret } })).status).toBe(200);
    const twice = await askShape(port, 'envoy', { path: '/api/x', headers: { 'x-secret': [secret, 'wrong'] } });
    expect(twice.status).toBe(401);
  });

  it('echoes x-request-id only when it is a plain bounded id, as over gRPC', async () => {
    const plain = await askShape(port, 'envoy', { path: '/api/x', requestId: 'abc-123' });
    expect(JSON.parse(plain.body).requestId).toBe('abc-123');
    const odd = await askShape(port, 'envoy', { path: '/api/x', requestId: '"},{"x":"' });
    expect(JSON.parse(odd.body).requestId).toMatch(/^[0-9a-f-]{36}$/);
    const long = await askShape(port, 'envoy', { path: '/api/x', requestId: 'a'.repeat(500) });
    expect(JSON.parse(long.body).requestId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('keeps connections alive between requests', async () => {
    const answer = await rawExchange(
      port,
      ['GET /forward-auth HTTP/1.1', 'host: p', 'x-forwarded-method: GET', 'x-forwarded-uri: /health', 'x-forwarded-host: a', 'x-forwarded-proto: https', 'x-forwarded-for: 192.0.2.1', '', ''].join('\r\n').repeat(2) +
        'GET /forward-auth HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n',
    );
    const statuses = [...answer.matchAll(/^HTTP\/1\.1 (\d+)/gm)].map((m) => m[1]);
    expect(statuses).toEqual(['200', '200', '400']);
  });

  it('an oversized request head is answered 431 and the connection closed', async () => {
    const answer = await rawExchange(port, `GET /nginx HTTP/1.1\r\nhost: p\r\nx-big: ${'a'.repeat(8000)}\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 431/);
  });

  it('a client trickling its request head is answered 408 and closed', async () => {
    const answer = await rawExchange(port, 'GET /nginx HTTP/1.1\r\nhost: p\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
  });

  it('refuses connections beyond maxConnections', async () => {
    const open: net.Socket[] = [];
    for (let i = 0; i < 8; i++) {
      const socket = net.connect(port, '127.0.0.1');
      await new Promise((resolve) => socket.once('connect', resolve));
      open.push(socket);
    }
    // Let the server accept all eight before the ninth arrives.
    await rawRequest(port, 'GET', '/', { host: 'x' }).catch(() => undefined);
    const extra = await rawExchange(port, 'GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    expect(extra).toBe('');
    for (const socket of open) socket.destroy();
  });
});

describe('HTTP authorization listener configuration', () => {
  it('is off unless configured', async () => {
    const s = await serve('');
    expect(s.server.authzHttpPort).toBeUndefined();
  });

  it('--authz-http-port alone opens it with the default prefixes', async () => {
    const s = await serve('', { authzHttpPort: 0 });
    expect((await askShape(s.server.authzHttpPort!, 'nginx', { path: '/health' })).status).toBe(200);
  });

  it('one shape for the whole listener answers on every path', async () => {
    const s = await serve('server: { authzHttp: { port: 0, shape: forward-auth } }');
    const r = shapeRequest('forward-auth', { path: '/health' });
    expect((await rawRequest(s.server.authzHttpPort!, 'GET', '/anything/at/all', r.headers)).status).toBe(200);
  });

  it('custom prefixes, Envoy with its path_prefix', async () => {
    const s = await serve('server: { authzHttp: { port: 0, paths: { /ext/authz: envoy, /auth: forward-auth } } }');
    const r = shapeRequest('envoy', { path: '/health' });
    expect((await rawRequest(s.server.authzHttpPort!, 'GET', '/ext/authz/health', r.headers)).status).toBe(200);
    expect((await rawRequest(s.server.authzHttpPort!, 'GET', '/ext/authz/api/x', r.headers)).status).toBe(401);
    expect((await rawRequest(s.server.authzHttpPort!, 'GET', '/envoy/health', r.headers)).status).toBe(404);
  });
});

describe('HTTP authorization listener client address with trusted proxies', () => {
  it('picks the client behind clientIp.xffTrustedHops proxies exactly as over gRPC', async () => {
    const s = await serve('clientIp: { xffTrustedHops: 1 }\nserver: { authzHttp: { port: 0 } }');
    const port = s.server.authzHttpPort!;
    // The proxy saw 10.0.0.9 (a trusted load balancer), which saw the client 203.0.113.5; the
    // leftmost entries are the client's own writing.
    const viaHttp: number[] = [];
    const viaGrpc: number[] = [];
    for (const spoof of ['1.1.1.1', '2.2.2.2', '3.3.3.3']) {
      viaHttp.push((await askShape(port, 'nginx', { path: '/login', xff: `${spoof}, 203.0.113.5, 10.0.0.9` })).headers['x-portcullis-status'] === undefined ? 200 : 429);
      const r = await s.client.check({ path: '/login', headers: { 'x-forwarded-for': `${spoof}, 198.51.100.5, 10.0.0.9` }, sourceAddress: '10.0.0.9' });
      viaGrpc.push(r.http_response === 'ok_response' ? 200 : 429);
    }
    expect(viaHttp).toEqual([200, 200, 429]);
    expect(viaGrpc).toEqual(viaHttp);
    // Another client behind the same load balancer has its own count.
    expect((await askShape(port, 'forward-auth', { path: '/login', xff: '203.0.113.6, 10.0.0.9' })).status).toBe(200);
  });
});

describe('HTTP authorization listener admission', () => {
  it('over the process-wide in-flight limit, answers 503 overloaded without deciding; admits again once checks finish', async () => {
    const s = await serve('server: { grpc: { maxInFlight: 16 } }');
    const governor = new ResourceGovernor(resolveLimits({ maxInFlight: 16 }));
    const listener = new AuthzHttpListener(s.server.authorizer, silentLogger(), { bind: '127.0.0.1', port: 0, maxHeaderBytes: 16384, maxConnections: 64, headersTimeout: 5000, keepAliveTimeout: 5000, governor });
    const port = await listener.start();
    try {
      // Checks in flight elsewhere in the process (e.g. on the gRPC port) fill the limit.
      governor.inFlight = 32;
      for (const shape of ['envoy', 'forward-auth'] as const) {
        const r = await askShape(port, shape, { path: '/health' });
        expect(r.status, shape).toBe(503);
        expect(r.headers['retry-after']).toBe('1');
        expect(JSON.parse(r.body)).toMatchObject({ status: 503, reason: 'overloaded' });
      }
      const nginx = await askShape(port, 'nginx', { path: '/health' });
      expect(nginx.headers['x-portcullis-status']).toBe('503');
      governor.inFlight = 0;
      expect((await askShape(port, 'envoy', { path: '/health' })).status).toBe(200);
    } finally {
      await listener.shutdown(1000);
    }
  });
});
