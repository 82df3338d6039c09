// The real server with a session lookup whose target is down: readiness does not depend on it
// (health SERVING), checks are 503 lookup_unavailable over gRPC with Retry-After, a working target
// resolves, the lookup metrics are exported, and no log line (debug level) carries the session
// credential.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { CheckClient, headerOf, httpStatusNumber } from '../support/grpc-client.js';
import { closedPort, startSessionTarget, type SessionTarget } from './helpers.js';

const SECRET_SESSION = 'very-secret-session-value-0123456789';

describe('a served policy with lookups', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'pc-lookup-'));
  const lines: string[] = [];
  let server: RunningServer;
  let client: CheckClient;
  let target: SessionTarget;

  beforeAll(async () => {
    target = await startSessionTarget();
    target.sessions.set('good-session', { session: { id: 'g', activeOrganizationId: 'org-live' }, user: { id: 'u-good' } });
    const down = await closedPort();
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(
      file,
      `
server: { decisionLog: all }
lookups:
  down: { http: { url: "http://127.0.0.1:${down}/session?token={{credential}}", headers: { cookie: "sid={{credential}}" } }, timeout: 300ms }
  up: { http: { url: "${target.url}/session", headers: { cookie: "sid={{credential}}" } }, timeout: 1s }
identity:
  - session: { cookie: dead, lookup: down, map: { tenant: session.activeOrganizationId } }
  - session: { cookie: sid, lookup: up, map: { tenant: session.activeOrganizationId, subject: user.id } }
routes:
  - { match: { pathPrefix: / }, requireTenant: true }
`,
    );
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    server = await startServer({ configFile: file, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', watch: false, logger: createLogger({ level: 'debug', destination: sink }), defaultMetrics: false });
    await server.ready;
    client = new CheckClient(server.grpcPort);
  });

  afterAll(async () => {
    client?.close();
    await server?.shutdown();
    await target?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is ready although a lookup target is down', async () => {
    expect((await client.healthCheck()).status).toBe('SERVING');
  });

  it('answers 503 lookup_unavailable (gRPC UNAVAILABLE, Retry-After) for a credential that needs the dead target', async () => {
    const response = await client.check({ path: '/orders', headers: { cookie: `dead=${SECRET_SESSION}` } });
    expect(response.status?.code).toBe(14);
    expect(httpStatusNumber(response.denied_response?.status?.code)).toBe(503);
    expect(JSON.parse(response.denied_response?.body ?? '{}')).toMatchObject({ code: 'UNAVAILABLE', reason: 'lookup_unavailable' });
    expect(headerOf(response.denied_response?.headers, 'retry-after')).toBe('1');
  });

  it('resolves a session through the live target', async () => {
    const response = await client.check({ path: '/orders', headers: { cookie: 'sid=good-session' } });
    expect(response.http_response).toBe('ok_response');
    expect(headerOf(response.ok_response?.headers, 'x-tenant-id')).toBe('org-live');
    expect(headerOf(response.ok_response?.headers, 'x-auth-method')).toBe('session');
  });

  it('exports lookup metrics, and never logs the credential', async () => {
    const response = await fetch(`http://127.0.0.1:${server.httpPort}/metrics`);
    const text = await response.text();
    expect(text).toContain('portcullis_lookups_total{lookup="down",source="session",outcome="error"}');
    expect(text).toContain('portcullis_lookups_total{lookup="up",source="session",outcome="found"}');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.some((l) => l.includes('lookup failed'))).toBe(true);
    for (const line of lines) expect(line).not.toContain(SECRET_SESSION);
  });
});
