// `host` with a domain store on the machine's PostgreSQL: a tenant_domains table of 10,000
// domains; a new domain usable without a reload, a removed one refused after the TTL, unknown
// hosts negatively cached, subdomain patterns, static domains still first; the SQL lookup is
// read-only and parameterized; killed connections are a 503 within the timeout, then recovery.

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { decide, header, reasonOf } from './helpers.js';

const SCHEMA = `lookup_${randomBytes(6).toString('hex')}`;
const NAME = `domains_${randomBytes(4).toString('hex')}`;
const TIMEOUT_MS = 500;
const BOUND_MS = TIMEOUT_MS + 1_000;
const available = await postgresAvailable();

function policy(query = `select tenant, scopes from ${SCHEMA}.tenant_domains where domain = $1`, url = DATABASE_URL): string {
  return `
lookups:
  ${NAME}:
    sql:
      url: "${url}"
      query: "${query}"
    timeout: ${TIMEOUT_MS}ms
    cache: { ttl: 30s, negativeTtl: 10s }
    breaker: { failures: 100, cooldown: 1s }
identity:
  - host:
      domains: { static.example.com: { tenant: static-tenant, scopes: [storefront] } }
      patterns: [{ pattern: "{tenant}.shops.example.com", scopes: [storefront] }]
      store: { lookup: ${NAME}, map: { tenant: tenant, scopes: [scopes] } }
routes:
  - { match: { pathPrefix: /v1/ }, require: { allOf: [storefront] } }
`;
}

const at = (host: string) => request({ host, path: '/v1/products' });

describe.skipIf(!available)('host with a tenant-domain store (PostgreSQL)', () => {
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });

  beforeAll(async () => {
    await admin.query(`create schema ${SCHEMA}`);
    await admin.query(`create table ${SCHEMA}.tenant_domains (domain text primary key, tenant text not null, scopes text[] not null default '{storefront}')`);
    await admin.query(`insert into ${SCHEMA}.tenant_domains (domain, tenant) select 'shop' || i || '.merchant.test', 'tenant-' || i from generate_series(1, 10000) i`);
  });
  afterAll(async () => {
    await admin.query(`drop schema ${SCHEMA} cascade`);
    await admin.end();
  });

  it('resolves any of 10,000 domains to its tenant with storefront only, and answers repeats from the cache', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(), runtime);
    for (const i of [1, 777, 5000, 10000]) {
      const decision = await decide(compiled, at(`shop${i}.merchant.test`));
      expect(reasonOf(decision)).toBe('allow');
      expect(header(decision, 'x-tenant-id')).toBe(`tenant-${i}`);
      expect(header(decision, 'x-auth-scopes')).toBe('storefront');
      expect(header(decision, 'x-auth-method')).toBe('host');
    }
    const { authorize } = await import('../../src/pipeline/authorize.js');
    expect(authorize(compiled, at('shop777.merchant.test'))).not.toBeInstanceOf(Promise);
    // Static domains and patterns come first and never touch the store.
    expect(header(await decide(compiled, at('static.example.com')), 'x-tenant-id')).toBe('static-tenant');
    expect(header(await decide(compiled, at('globex.shops.example.com')), 'x-tenant-id')).toBe('globex');
    expect(reasonOf(await decide(compiled, at('a.b.shops.example.com')))).toBe('missing_credential');
  });

  it('uses a new domain without a reload once the negative TTL has passed, and refuses a removed one after the positive TTL', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(), runtime);
    expect(reasonOf(await decide(compiled, at('new.merchant.test')))).toBe('missing_credential');
    await admin.query(`insert into ${SCHEMA}.tenant_domains (domain, tenant) values ('new.merchant.test', 'tenant-new')`);
    expect(reasonOf(await decide(compiled, at('new.merchant.test')))).toBe('missing_credential'); // negatively cached
    runtime.clock.advance(10_001);
    expect(header(await decide(compiled, at('new.merchant.test')), 'x-tenant-id')).toBe('tenant-new');

    await admin.query(`delete from ${SCHEMA}.tenant_domains where domain = 'new.merchant.test'`);
    expect(reasonOf(await decide(compiled, at('new.merchant.test')))).toBe('allow'); // within the TTL
    runtime.clock.advance(30_001);
    expect(reasonOf(await decide(compiled, at('new.merchant.test')))).toBe('missing_credential');
  });

  it('runs the query read-only: a query that writes is refused by the server (503), never executed', async () => {
    const writing = `with x as (insert into ${SCHEMA}.tenant_domains (domain, tenant) values ($1, 'evil') returning tenant, scopes) select * from x`;
    const compiled = compileYaml(policy(writing), testRuntime());
    expect(reasonOf(await decide(compiled, at('written.merchant.test')))).toBe('lookup_unavailable');
    const { rowCount } = await admin.query(`select 1 from ${SCHEMA}.tenant_domains where domain = 'written.merchant.test'`);
    expect(rowCount).toBe(0);
  });

  it('stays read-only when the URL carries its own options (they cannot turn read-only off)', async () => {
    const writing = `with x as (insert into ${SCHEMA}.tenant_domains (domain, tenant) values ($1, 'evil') returning tenant, scopes) select * from x`;
    const url = `${DATABASE_URL}?options=${encodeURIComponent('-c default_transaction_read_only=off -c statement_timeout=0')}`;
    const compiled = compileYaml(policy(writing, url), testRuntime());
    expect(reasonOf(await decide(compiled, at('written2.merchant.test')))).toBe('lookup_unavailable');
    const { rowCount } = await admin.query(`select 1 from ${SCHEMA}.tenant_domains where domain = 'written2.merchant.test'`);
    expect(rowCount).toBe(0);
  });

  it('passes the host as a parameter: a quote in it is data, not SQL', async () => {
    const compiled = compileYaml(policy(), testRuntime());
    // Hosts that are not host names never reach the store at all.
    expect(reasonOf(await decide(compiled, at("x' or '1'='1")))).toBe('invalid_host');
  });

  it('answers 503 within the timeout when its connections are killed, then recovers', async () => {
    const runtime = testRuntime();
    const compiled = compileYaml(policy(), runtime);
    expect(reasonOf(await decide(compiled, at('shop1.merchant.test')))).toBe('allow');
    const killed = await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1`, [`portcullis-lookup-${NAME}`]);
    expect(killed.rowCount).toBeGreaterThan(0);
    // Uncached hosts right after the kill: each answer is either right or a 503, within the bound.
    for (const i of [2, 3, 4]) {
      const started = performance.now();
      const decision = await decide(compiled, at(`shop${i}.merchant.test`));
      expect(performance.now() - started).toBeLessThan(BOUND_MS);
      expect(['allow', 'lookup_unavailable']).toContain(reasonOf(decision));
      if (decision.allowed) expect(header(decision, 'x-tenant-id')).toBe(`tenant-${i}`);
    }
    expect(header(await decide(compiled, at('shop9.merchant.test')), 'x-tenant-id')).toBe('tenant-9');
  });

  it('answers 503 within the timeout when the query is slower than the timeout (statement_timeout)', async () => {
    const slow = `select tenant, scopes from ${SCHEMA}.tenant_domains, pg_sleep(3) where domain = $1`;
    const compiled = compileYaml(policy(slow), testRuntime());
    const started = performance.now();
    expect(reasonOf(await decide(compiled, at('shop5.merchant.test')))).toBe('lookup_unavailable');
    expect(performance.now() - started).toBeLessThan(BOUND_MS);
  });
});
