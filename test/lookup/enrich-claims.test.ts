// Enrichment keyed by a claim of the verified token (`by: claim:<name>`) and adding claims
// (`claims:`) that expressions read as auth.enriched: a tenant and a plan looked up by the agent id
// a token carries, a route open only to the pro plan, and the token's own claims never mixed with
// the looked-up ones. Real signed tokens, a real PostgreSQL lookup.

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { DATABASE_URL, postgresAvailable } from '../support/services.js';
import { agentToken as signAgent, AGENT_SECRET, decide, header, reasonOf } from './helpers.js';

const SCHEMA = `enrich_claims_${randomBytes(6).toString('hex')}`;
const SECRET = AGENT_SECRET;
const available = await postgresAvailable();

const POLICY = `
lookups:
  by-agent:
    sql:
      url: "${DATABASE_URL}"
      query: "select organization_id, plan, region, notes, features, blob from ${SCHEMA}.agent where agent_id = $1"
    timeout: 1s
issuers:
  agents: { secret: "${SECRET}", issuer: https://agents.commerce.test, audiences: [commerce-api], claims: { tenant: org_id, scopes: [grants] } }
identity:
  - jwt: { issuers: [agents] }
enrich:
  - { lookup: by-agent, by: "claim:agent_id", methods: [jwt], map: { tenant: organization_id }, claims: { plan: plan, region: region, notes: notes, features: features, blob: blob } }
routes:
  - { match: { pathPrefix: /v1/pro/ }, require: { allOf: [storefront] }, when: "auth.enriched.plan == 'pro'" }
  - { match: { pathPrefix: /v1/ }, require: { allOf: [storefront] } }
`;

const agentToken = (claims: Record<string, unknown>) => signAgent({ sub: 'agent-user', ...claims });

/** HS256 over a payload written by hand (numbers exactly as given). */
async function signRaw(payload: string): Promise<string> {
  const { createHmac } = await import('node:crypto');
  const b64 = (text: string) => Buffer.from(text).toString('base64url');
  const input = `${b64('{"alg":"HS256"}')}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

const at = (path: string, token: string) => request({ path, headers: { authorization: `Bearer ${token}` } });

describe.skipIf(!available)('enrichment keyed by a token claim, adding claims', () => {
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  beforeAll(async () => {
    await admin.query(`create schema ${SCHEMA}`);
    await admin.query(`create table ${SCHEMA}.agent (agent_id text primary key, organization_id text, plan text, region text, notes text, features jsonb, blob jsonb)`);
    await admin.query(`insert into ${SCHEMA}.agent (agent_id, organization_id, plan, region) values ('agent-7', 'org-7', 'pro', 'eu'), ('agent-8', 'org-8', 'free', null), ('42', 'org-42', 'pro', 'us')`);
    // Added claims are scalars or short lists of them; the rest is not added (bounded per cached answer).
    await admin.query(`insert into ${SCHEMA}.agent values ('agent-9', 'org-9', 'pro', 'eu', repeat('x', 5000), '["export", "sso"]', '{"nested": {"deep": true}}')`);
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
    expect(pro.principal?.enriched).toEqual({ plan: 'pro', region: 'eu' });
  });

  it('an added claim that does not satisfy the condition refuses the route (403 condition_failed), others stay open', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    const token = await agentToken({ agent_id: 'agent-8' });
    expect(reasonOf(await decide(compiled, at('/v1/pro/reports', token)))).toBe('condition_failed');
    const plain = await decide(compiled, at('/v1/products', token));
    expect(reasonOf(plain)).toBe('allow');
    expect(header(plain, 'x-tenant-id')).toBe('org-8');
    // A null column adds no claim.
    expect(plain.principal?.enriched).toEqual({ plan: 'free' });
  });

  it('a claim-keyed step whose methods leave out jwt is reported: it could never run', () => {
    const compiled = compileYaml(POLICY.replace('methods: [jwt]', 'methods: [api-key, session]'), testRuntime());
    expect(compiled.warnings.join('\n')).toMatch(/claim:agent_id reads a claim of a verified token, but methods leave out jwt/);
    expect(compileYaml(POLICY, testRuntime()).warnings.join('\n')).not.toMatch(/methods leave out jwt/);
  });

  it('adds scalars and short lists; long texts and objects are left out', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    const decision = await decide(compiled, at('/v1/pro/reports', await agentToken({ agent_id: 'agent-9' })));
    expect(reasonOf(decision)).toBe('allow');
    expect(decision.principal?.enriched).toEqual({ plan: 'pro', region: 'eu', features: ['export', 'sso'] });
  });

  it('a numeric claim is looked up as its decimal text', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    expect(header(await decide(compiled, at('/v1/pro/reports', await agentToken({ agent_id: 42 }))), 'x-tenant-id')).toBe('org-42');
  });

  it('looked-up claims and the token’s own never mix: a token saying plan pro does not change auth.enriched', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    // agent-8 is on the free plan in the store; the token claiming pro does not lift it.
    expect(reasonOf(await decide(compiled, at('/v1/pro/reports', await agentToken({ agent_id: 'agent-8', plan: 'pro' }))))).toBe('condition_failed');
    // And the token's own free does not lower the store's pro.
    expect(reasonOf(await decide(compiled, at('/v1/pro/reports', await agentToken({ agent_id: 'agent-7', plan: 'free' }))))).toBe('allow');
  });

  it('a whole number beyond 2^53 (already rounded when the token was parsed) is never used as a key', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    // 2^53 + 1 parses as 2^53: it would look up another record.
    // Signed with the number written out in full (jose would serialise it rounded).
    const now = Math.floor(Date.now() / 1000);
    const payload = `{"grants":["storefront"],"sub":"agent-user","agent_id":9007199254740993,"iss":"https://agents.commerce.test","aud":"commerce-api","iat":${now},"exp":${now + 3600}}`;
    const signed = await signRaw(payload);
    await admin.query(`insert into ${SCHEMA}.agent values ('9007199254740992', 'org-rounded', 'pro', 'eu') on conflict do nothing`);
    expect(reasonOf(await decide(compiled, at('/v1/products', signed)))).toBe('missing_tenant');
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
    expect(viaHost.principal?.enriched).toBeUndefined();
  });

  it('no such claim in the token, or an unknown agent: nothing looked up or added, the tenant stays missing', async () => {
    const compiled = compileYaml(POLICY, testRuntime());
    expect(reasonOf(await decide(compiled, at('/v1/products', await agentToken({}))))).toBe('missing_tenant');
    expect(reasonOf(await decide(compiled, at('/v1/products', await agentToken({ agent_id: 'agent-unknown' }))))).toBe('missing_tenant');
    expect(reasonOf(await decide(compiled, at('/v1/products', await agentToken({ agent_id: { nested: true } }))))).toBe('missing_tenant');
  });
});
