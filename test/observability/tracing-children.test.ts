// Child spans of a traced check against a real OTLP/HTTP receiver (test/support/otlp.ts), real
// dependencies and a real gRPC client: a JWKS fetch caused by a check (unknown kid → refetch), a
// session lookup, an `enrich:` lookup (both over the HTTP lookup target of test/lookup), and a
// PostgreSQL key-store lookup. Each child is kind CLIENT, in the caller's trace, parented to the
// check span, named as README "Tracing" says, with `portcullis.source` and never a credential.
// The same credential again is answered from a cache: no child span then.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKeysCommand, runMigrateCommand } from '../../src/keys/cli.js';
import { silentLogger } from '../../src/observability/logger.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { sign, signingKey, startKeyServer, type KeyServer, type SigningKey } from '../jwt/helpers.js';
import { startSessionTarget, type SessionTarget } from '../lookup/helpers.js';
import { CheckClient, type CheckResponse } from '../support/grpc-client.js';
import { OtlpReceiver, type OtlpSpan } from '../support/otlp.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { keyStoreCliOut } from '../support/key-store-cli.js';

const hex = (bytes: number) => randomBytes(bytes).toString('hex');
const AUDIENCE = 'https://api.tracing.test';
const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CLIENT = 3;

const receiver = new OtlpReceiver();

async function serve(policy: string): Promise<{ server: RunningServer; client: CheckClient }> {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'portcullis-otel-children-')), 'policy.yaml');
  writeFileSync(file, policy);
  const server = await startServer({ configFile: file, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', watch: false, logger: silentLogger(), logLevelFromPolicy: false, defaultMetrics: false, env: { OTEL_BSP_SCHEDULE_DELAY: '50' } });
  await server.ready;
  return { server, client: new CheckClient(server.grpcPort) };
}

const tracing = () => `{ enabled: true, endpoint: "${receiver.url}" }`;

/**
 * One check continuing a new sampled W3C trace; resolves with the check's SERVER span (its parent
 * must be the caller's span) and the spans of that trace whose parent is the check span.
 */
async function tracedCheck(client: CheckClient, init: { path: string; headers: Record<string, string> }): Promise<{ response: CheckResponse; check: OtlpSpan; children: OtlpSpan[]; traceId: string }> {
  const traceId = hex(16);
  const callerSpan = hex(8);
  const response = await client.check({ path: init.path, host: 'api.tracing.test', headers: { ...init.headers, traceparent: `00-${traceId}-${callerSpan}-01` } });
  const check = await receiver.waitFor((s) => s.traceId === traceId && s.kind === SPAN_KIND_SERVER, 'the check span');
  expect(check.parentSpanId).toBe(callerSpan);
  // A child ends before its check span does, so it is exported in the same batch or an earlier one.
  const inTrace = receiver.spans.filter((s) => s.traceId === traceId && s !== check);
  for (const s of inTrace) expect(s.parentSpanId, `${s.name} is a child of the check span`).toBe(check.spanId);
  return { response, check, children: inTrace, traceId };
}

/** The one child span `name` of `source`, of kind CLIENT, with no trace of `secrets`. */
function childNamed(children: OtlpSpan[], name: string, source: string, secrets: string[]): OtlpSpan {
  const matching = children.filter((s) => s.name === name && s.attributes['portcullis.source'] === source);
  expect(matching, `${name} (${source}) among ${JSON.stringify(children.map((s) => [s.name, s.attributes]))}`).toHaveLength(1);
  const child = matching[0]!;
  expect(Object.keys(child.attributes)).toEqual(['portcullis.source']);
  expect(child.kind).toBe(SPAN_KIND_CLIENT);
  expect(child.status?.code ?? 0).toBe(0);
  const text = JSON.stringify(child);
  for (const secret of secrets) expect(text).not.toContain(secret);
  return child;
}

beforeAll(async () => {
  await receiver.start();
});

afterAll(async () => {
  await receiver.close();
});

describe('child spans: JWKS fetch, session lookup, enrich lookup', () => {
  let keys: KeyServer;
  let target: SessionTarget;
  let k1: SigningKey;
  let k2: SigningKey;
  let server: RunningServer;
  let client: CheckClient;

  beforeAll(async () => {
    [k1, k2] = await Promise.all([signingKey('ES256', 'k1'), signingKey('ES256', 'k2')]);
    keys = await startKeyServer([k1.publicJwk]);
    target = await startSessionTarget();
    ({ server, client } = await serve(`
server:
  tracing: ${tracing()}
issuers:
  idp: { issuer: "${keys.url}", jwksUri: "${keys.url}/jwks.json", audiences: ["${AUDIENCE}"], jwksRefetchWait: 5s, claims: { tenant: org } }
lookups:
  sessions:
    http: { url: "${target.url}/session", headers: { cookie: "sid={{credential}}" } }
    timeout: 5s
  orgs:
    http: { url: "${target.url}/orgs", headers: { cookie: "sid={{credential}}" } }
    timeout: 5s
identity:
  - jwt: { issuers: [idp] }
  - session: { cookie: sid, lookup: sessions, map: { subject: user.id, present: session.id }, scopes: [app] }
enrich:
  - { lookup: orgs, by: subject, methods: [session], map: { tenant: org } }
routes:
  - { name: app, match: { pathPrefix: /v1/ } }
`));
  });

  afterAll(async () => {
    client?.close();
    await server?.shutdown();
    await keys?.close();
    await target?.close();
  });

  const token = (key: SigningKey, sub: string) => {
    const now = Math.floor(Date.now() / 1000);
    return sign(key, { iss: keys.url, aud: AUDIENCE, sub, org: 'acme', iat: now, exp: now + 3600 });
  };

  it('a JWKS fetch caused by a check (unknown kid, refetched): portcullis.jwt.keys under the check span; none once cached', async () => {
    // The key set fetched at start holds k1 only; the issuer now publishes k2 and signs with it.
    keys.keys = [k1.publicJwk, k2.publicJwk];
    const before = keys.jwksRequests();
    const jwt = await token(k2, 'svc-rotated');
    const first = await tracedCheck(client, { path: '/v1/things', headers: { authorization: `Bearer ${jwt}` } });
    expect(first.response.http_response).toBe('ok_response');
    expect(keys.jwksRequests()).toBe(before + 1);
    childNamed(first.children, 'portcullis.jwt.keys', 'jwt:idp', [jwt, jwt.split('.')[2]!]);

    const again = await tracedCheck(client, { path: '/v1/things', headers: { authorization: `Bearer ${jwt}` } });
    expect(again.response.http_response).toBe('ok_response');
    expect(again.children).toEqual([]);
    expect(keys.jwksRequests()).toBe(before + 1);
  });

  it('a session lookup: portcullis.lookup for the session source under the check span; none on a cache hit', async () => {
    const sid = `sid-${hex(8)}`;
    target.sessions.set(sid, { session: { id: sid }, user: { id: `user-${sid}` } });
    target.sessions.set(`user-${sid}`, { org: 'org-from-enrich' });
    const cookie = `theme=dark; sid=${sid}`;
    const first = await tracedCheck(client, { path: '/v1/things', headers: { cookie } });
    expect(first.response.http_response).toBe('ok_response');
    childNamed(first.children, 'portcullis.lookup', 'session:cookie sid', [sid, cookie]);

    const again = await tracedCheck(client, { path: '/v1/things', headers: { cookie } });
    expect(again.response.http_response).toBe('ok_response');
    expect(again.children).toEqual([]);
  });

  it('an enrich: lookup: portcullis.lookup with source enrich:<lookup> under the check span; none on a cache hit', async () => {
    const sid = `sid-${hex(8)}`;
    const subject = `user-${sid}`;
    target.sessions.set(sid, { session: { id: sid }, user: { id: subject } });
    target.sessions.set(subject, { org: 'org-from-enrich' });
    const cookie = `sid=${sid}`;
    const before = target.requests;
    const first = await tracedCheck(client, { path: '/v1/things', headers: { cookie } });
    expect(first.response.http_response).toBe('ok_response');
    expect(first.response.ok_response?.headers?.find((h) => h.header.key === 'x-tenant-id')?.header.value).toBe('org-from-enrich');
    expect(target.requests).toBe(before + 2); // the session, then the enrichment
    const enrich = childNamed(first.children, 'portcullis.lookup', 'enrich:orgs', [sid, subject, 'org-from-enrich']);
    const session = childNamed(first.children, 'portcullis.lookup', 'session:cookie sid', [sid]);
    expect(enrich.spanId).not.toBe(session.spanId);

    const again = await tracedCheck(client, { path: '/v1/things', headers: { cookie } });
    expect(again.response.ok_response?.headers?.find((h) => h.header.key === 'x-tenant-id')?.header.value).toBe('org-from-enrich');
    expect(again.children).toEqual([]);
    expect(target.requests).toBe(before + 2);
  });
});

const SCHEMA = `pc_trace_keys_${hex(4)}`;

describe.skipIf(!(await postgresAvailable()))('child span: PostgreSQL key-store lookup', () => {
  let server: RunningServer;
  let client: CheckClient;
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });

  const cli = (argv: string[], run = runKeysCommand): Promise<string> => keyStoreCliOut(SCHEMA, argv, run);

  beforeAll(async () => {
    await cli([], runMigrateCommand);
    ({ server, client } = await serve(`
server:
  tracing: ${tracing()}
identity:
  - apiKey: { headers: [x-api-key] }
keyStore:
  type: postgres
  postgres: { url: "${DATABASE_URL}", schema: ${SCHEMA}, connectTimeout: 2s }
  lookupTimeout: 5s
routes:
  - { name: orders, match: { pathPrefix: /v1/ }, require: { allOf: ["orders:read"] } }
`));
  });

  afterAll(async () => {
    client?.close();
    await server?.shutdown();
    await admin.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`).catch(() => undefined);
    await admin.end();
  });

  it('an API key not in the cache: portcullis.keystore.lookup under the check span; none once cached', async () => {
    const { key } = JSON.parse(await cli(['create', '--tenant', 'acme', '--name', 'traced', '--scopes', 'orders:read', '--expires-in', '30d', '--json'])) as { key: string };
    const first = await tracedCheck(client, { path: '/v1/orders', headers: { 'x-api-key': key } });
    expect(first.response.http_response).toBe('ok_response');
    childNamed(first.children, 'portcullis.keystore.lookup', 'api-key:x-api-key', [key]);

    const again = await tracedCheck(client, { path: '/v1/orders', headers: { 'x-api-key': key } });
    expect(again.response.http_response).toBe('ok_response');
    expect(again.children).toEqual([]);
  });
});
