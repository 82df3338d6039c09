// Enrichment keyed by a claim of the verified token (`by: claim:<name>`) and adding claims
// (`claims:`) that expressions read as auth.claims: a tenant and a plan looked up by the agent id
// a token carries, a route open only to the pro plan, and a signed claim never overridden by a
// looked-up one. Real signed tokens, a real PostgreSQL lookup.

import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { decide, header, reasonOf } from './helpers.js';

const SCHEMA = `enrich_claims_${randomBytes(6).toString('hex')}`;
const SECRET = 'agent-secret-0123456789abcdef0123456789abcdef';
const available = await postgresAvailable();

const POLICY = `
lookups:
  by-agent:
    sql:
      url: "${DATABASE_URL}"
      query: "select organization_id, plan, region from ${SCHEMA}.agent where agent_id = $1"
    timeout: 1s
issuers:
  agents: { secret: "${SECRET}", issuer: https://agents.commerce.test, audiences: [commerce-api], claims: { tenant: org_id, scopes: [grants] } }
identity:
  - jwt: { issuers: [agents] }
enrich:
  - { lookup: by-agent, by: "claim:agent_id", methods: [jwt], map: { tenant: organization_id }, claims: { plan: plan, region: region } }
routes:
  - { match: { pathPrefix: /v1/pro/ }, require: { allOf: [storefront] }, when: "auth.claims.plan == 'pro'" }
  - { match: { pathPrefix: /v1/ }, require: { allOf: [storefront] } }
`;

async function agentToken(claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ grants: ['storefront'], sub: 'agent-user', ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer('https://agents.commerce.test')
    .setAudience('commerce-api')
    .setIssuedAt(now)
    .setExpirationTime(now + 3600)
    .sign(new TextEncoder().encode(SECRET));
}

const at = (path: string, token: string) => request({ path, headers: { authorization: `Bearer ${token}` } });

describe.skipIf(!available)('enrichment keyed by a token claim, adding claims', () => {
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  beforeAll(async () => {
    await admin.query(`create schema ${SCHEMA}`);
    await admin.query(`create table ${SCHEMA}.agent (agent_id text primary key, organization_id text, plan text, region text)`);
    await admin.query(`insert into ${SCHEMA}.agent values ('agent-7', 'org-7', 'pro', 'eu'), ('agent-8', 'org-8', 'free', null), ('42', 'org-42', 'pro', 'us')`);
  });
  afterAll(async () => {
    await admin.query(`drop schema ${SCHEMA} cascade`);
    await admin.end();
  });

  it('looks up by the claim the token carries: tenant filled, the added claim opens the pro route', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    const token = await agentToken({ agent_id: 'agent-7' });
    const pro = await decide(compiled, at('/v1/pro/reports', token));
    expect(reasonOf(pro)).toBe('allow');
    expect(header(pro, 'x-tenant-id')).toBe('org-7');
    expect(pro.principal?.claims).toEqual({ plan: 'pro', region: 'eu' });
  });

  it('an added claim that does not satisfy the condition refuses the route (403 condition_failed), others stay open', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    const token = await agentToken({ agent_id: 'agent-8' });
    expect(reasonOf(await decide(compiled, at('/v1/pro/reports', token)))).toBe('condition_failed');
    const plain = await decide(compiled, at('/v1/products', token));
    expect(reasonOf(plain)).toBe('allow');
    expect(header(plain, 'x-tenant-id')).toBe('org-8');
    // A null column adds no claim.
    expect(plain.principal?.claims).toEqual({ plan: 'free' });
  });

  it('a numeric claim is looked up as its decimal text', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    expect(header(await decide(compiled, at('/v1/pro/reports', await agentToken({ agent_id: 42 }))), 'x-tenant-id')).toBe('org-42');
  });

  it('a claim signed in the token wins over the same claim looked up', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    // agent-8 is on the free plan in the store; the token itself says pro, and it is the verified one.
    expect(reasonOf(await decide(compiled, at('/v1/pro/reports', await agentToken({ agent_id: 'agent-8', plan: 'pro' }))))).toBe('allow');
    // And the other way round: the store's pro never lifts a token's own free.
    expect(reasonOf(await decide(compiled, at('/v1/pro/reports', await agentToken({ agent_id: 'agent-7', plan: 'free' }))))).toBe('condition_failed');
  });

  it('a principal another source proved is never keyed by the claims of a token that came along', async () => {
    // The Host source decides first; the bearer token in the same request proved nothing.
    const policy = POLICY.replace('identity:\n  - jwt: { issuers: [agents] }', 'identity:\n  - host: { domains: { shop.example.com: { tenant: acme, scopes: [storefront] } } }\n  - jwt: { issuers: [agents] }').replace('methods: [jwt], ', 'onlyWithoutTenant: false, ');
    const compiled = compileYaml(policy, testRuntime());
    const token = await agentToken({ agent_id: 'agent-7' });
    const viaHost = await decide(compiled, request({ path: '/v1/products', host: 'shop.example.com', headers: { authorization: `Bearer ${token}` } }));
    expect(reasonOf(viaHost)).toBe('allow');
    expect(viaHost.principal?.method).toBe('host');
    // Keyed by agent-7 it would have become org-7 with the pro plan's claims.
    expect(header(viaHost, 'x-tenant-id')).toBe('acme');
    expect(viaHost.principal?.claims).toBeUndefined();
  });

  it('no such claim in the token, or an unknown agent: nothing looked up or added, the tenant stays missing', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    expect(reasonOf(await decide(compiled, at('/v1/products', await agentToken({}))))).toBe('missing_tenant');
    expect(reasonOf(await decide(compiled, at('/v1/products', await agentToken({ agent_id: 'agent-unknown' }))))).toBe('missing_tenant');
    expect(reasonOf(await decide(compiled, at('/v1/products', await agentToken({ agent_id: { nested: true } }))))).toBe('missing_tenant');
  });
});
