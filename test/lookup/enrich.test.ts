// Enrichment (seed 002 agents): a JWT without a tenant gets "the user's first org membership" from
// an SQL lookup by subject; a JWT with a tenant is not looked up; no membership → missing_tenant;
// the lookup failing → 503 lookup_unavailable; a policy without enrich compiles to no enricher.

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { agentToken, closedPort, decide, enrichPolicy, header, reasonOf } from './helpers.js';

const SCHEMA = `enrich_${randomBytes(6).toString('hex')}`;
const available = await postgresAvailable();

const policy = enrichPolicy;

const sqlLookup = `    sql:
      url: "${DATABASE_URL}"
      query: "select organization_id from ${SCHEMA}.member where user_id = $1 order by created_at limit 1"
    timeout: 1s`;


const withToken = (token: string) => request({ path: '/v1/products', headers: { authorization: `Bearer ${token}` } });

describe.skipIf(!available)('enrichment after identification', () => {
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  beforeAll(async () => {
    await admin.query(`create schema ${SCHEMA}`);
    await admin.query(`create table ${SCHEMA}.member (user_id text, organization_id text, created_at timestamptz)`);
    await admin.query(`insert into ${SCHEMA}.member values ('user-1', 'org-second', now()), ('user-1', 'org-first', now() - interval '1 day')`);
  });
  afterAll(async () => {
    await admin.query(`drop schema ${SCHEMA} cascade`);
    await admin.end();
  });

  it("fills a missing tenant with the user's first org membership, and reuses the answer", async () => {
    const compiled = compileYaml(policy(sqlLookup), testRuntime());
    const token = await agentToken({ sub: 'user-1' });
    const first = await decide(compiled, withToken(token));
    expect(reasonOf(first)).toBe('allow');
    expect(header(first, 'x-tenant-id')).toBe('org-first');
    expect(header(first, 'x-auth-scopes')).toBe('storefront');
    const again = authorize(compiled, withToken(token));
    expect(again).not.toBeInstanceOf(Promise);
    expect((again as typeof first).principal).toBe(first.principal);
  });

  it('leaves a token that carries its tenant alone, and refuses a user with no membership (missing_tenant)', async () => {
    const compiled = compileYaml(policy(sqlLookup), testRuntime());
    expect(header(await decide(compiled, withToken(await agentToken({ sub: 'user-1', org_id: 'org-claimed' }))), 'x-tenant-id')).toBe('org-claimed');
    expect(reasonOf(await decide(compiled, withToken(await agentToken({ sub: 'user-without-org' }))))).toBe('missing_tenant');
  });

  it('answers 503 lookup_unavailable when the enrichment lookup fails', async () => {
    const port = await closedPort();
    const compiled = compileYaml(policy(`    http: { url: "http://127.0.0.1:${port}/members/{{credential}}" }\n    timeout: 300ms`), testRuntime());
    const decision = await decide(compiled, withToken(await agentToken({ sub: 'user-1' })));
    expect(reasonOf(decision)).toBe('lookup_unavailable');
    expect(decision.allowed ? 0 : decision.status).toBe(503);
  });

  it('costs nothing when the policy has no enrich section', () => {
    const compiled = compileYaml(policy(sqlLookup).replace(/enrich:\n.*\n/, ''), testRuntime());
    expect(compiled.enrich).toBeUndefined();
  });
});
