// Route rules, the when: shorthand, match.schemes / match.query and computed identity, through the
// real pipeline: statuses, reasons, bodies, the order of the phases, evaluation errors (denied,
// counted, logged without request values), and that routes without expressions carry nothing.

import { SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { authorize } from '../../src/pipeline/authorize.js';
import type { Decision, DenyDecision } from '../../src/types.js';
import { counterValue } from '../keys/helpers.js';
import { request, type RequestInit } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const SECRET = '0123456789abcdef0123';
const JWT_SECRET = 'rules-tests-hs256-secret-0123456789abcdefgh';

function setup(yaml: string, lines?: string[]) {
  const destination = { write: (line: string) => void lines?.push(line) };
  const runtime = testRuntime({ env: { JWT_SECRET }, ...(lines ? { logger: createLogger({ level: 'info', destination }) } : {}) });
  const policy = compileYaml(yaml, runtime);
  return { runtime, policy, check: async (init: RequestInit): Promise<Decision> => authorize(policy, request(init)) };
}

const denied = (d: Decision): DenyDecision => {
  if (d.allowed) throw new Error(`expected a denial, got allow on ${d.route}`);
  return d;
};
const bodyOf = (d: Decision) => JSON.parse(denied(d).body) as Record<string, unknown>;
const hook = { 'x-hook-secret': SECRET };

const RULES = `
identity:
  - sharedSecret: { header: x-hook-secret, secret: "${SECRET}", tenant: acme, scopes: [read] }
routes:
  - match: { path: "/v1/companies/{company_id}/orders/{order}" }
    require: { allOf: [read] }
    rules:
      - unless: request.params.company_id == auth.tenant
        deny: { status: 403, reason: tenant_mismatch, message: "Attempting to access another company's data" }
      - when: request.params.order == "archived"
        deny: { status: 404, reason: order_not_found }
      - when: request.method == "DELETE"
        deny: { status: 400, reason: delete_not_supported, message: "use POST /cancel" }
      - unless: request.query.confirm == "yes"
        deny: { status: 401, reason: confirmation_required }
`;

describe('rules', () => {
  it('the first failing rule denies with its status, reason and message; all passing allows', async () => {
    const { check } = setup(RULES);
    const ok = await check({ path: '/v1/companies/acme/orders/7', query: 'confirm=yes', headers: hook });
    expect(ok.allowed).toBe(true);

    const other = await check({ path: '/v1/companies/globex/orders/archived', method: 'DELETE', headers: hook });
    expect(other).toMatchObject({ allowed: false, status: 403, code: 'FORBIDDEN', reason: 'tenant_mismatch' });
    expect(bodyOf(other)).toEqual({ error: 'Forbidden', code: 'FORBIDDEN', status: 403, reason: 'tenant_mismatch', message: "Attempting to access another company's data", requestId: 'req-1' });

    const archived = await check({ path: '/v1/companies/acme/orders/archived', method: 'DELETE', headers: hook });
    expect(archived).toMatchObject({ status: 404, code: 'NOT_FOUND', reason: 'order_not_found' });
    expect(bodyOf(archived)).toEqual({ error: 'Not Found', code: 'NOT_FOUND', status: 404, reason: 'order_not_found', requestId: 'req-1' });

    const del = await check({ path: '/v1/companies/acme/orders/7', method: 'DELETE', headers: hook });
    expect(del).toMatchObject({ status: 400, code: 'BAD_REQUEST', reason: 'delete_not_supported' });
    expect(bodyOf(del)).toMatchObject({ error: 'Bad Request', message: 'use POST /cancel' });

    const unconfirmed = await check({ path: '/v1/companies/acme/orders/7', query: 'confirm=no', headers: hook });
    expect(unconfirmed).toMatchObject({ status: 401, code: 'UNAUTHORIZED', reason: 'confirmation_required' });
    expect(denied(unconfirmed).headers).toContainEqual({ name: 'www-authenticate', value: 'Bearer realm="portcullis"' });
    // A missing map key is an evaluation error in CEL: denied as condition_error, not skipped.
    expect(await check({ path: '/v1/companies/acme/orders/7', headers: hook })).toMatchObject({ status: 403, reason: 'condition_error' });
  });

  it('rules run after identification and the scope check', async () => {
    const { check } = setup(RULES.replace('scopes: [read]', 'scopes: [write]'));
    expect(await check({ path: '/v1/companies/globex/orders/7', headers: hook })).toMatchObject({ status: 403, reason: 'insufficient_scope' });
    expect(await check({ path: '/v1/companies/globex/orders/7' })).toMatchObject({ status: 401, reason: 'missing_credential' });
    expect(await check({ path: '/v1/companies/globex/orders/7', headers: { 'x-hook-secret': 'wrong-secret-0123456789' } })).toMatchObject({ status: 401, reason: 'invalid_shared_secret' });
  });

  it('route-level when: is 403 condition_failed unless true, checked before rules', async () => {
    const { check } = setup(RULES.replace('    rules:\n', '    when: request.query.confirm != "never"\n    rules:\n'));
    const d = await check({ path: '/v1/companies/globex/orders/7', query: 'confirm=never', headers: hook });
    expect(d).toMatchObject({ status: 403, reason: 'condition_failed' });
    expect(bodyOf(d)).toEqual({ error: 'Forbidden', code: 'FORBIDDEN', status: 403, reason: 'condition_failed', requestId: 'req-1' });
  });

  it('public routes evaluate when: too (auth.* empty)', async () => {
    const { check } = setup(`
routes:
  - match: { path: /status }
    public: true
    when: auth.method == "" && request.query.v == "1"`);
    expect((await check({ path: '/status', query: 'v=1' })).allowed).toBe(true);
    expect(await check({ path: '/status' })).toMatchObject({ status: 403, reason: 'condition_error' });
    expect(await check({ path: '/status', query: 'v=2' })).toMatchObject({ status: 403, reason: 'condition_failed' });
  });
});

describe('evaluation errors', () => {
  it('deny 403 condition_error, are counted per route and expression, logged without request values', async () => {
    const lines: string[] = [];
    const { check, runtime } = setup(
      `
identity:
  - sharedSecret: { header: x-hook-secret, secret: "${SECRET}", tenant: acme }
routes:
  - name: limits
    match: { path: /v1/limits }
    rules:
      - when: int(request.query.n) > 100
        deny: { reason: too_many }
`,
      lines,
    );
    const bad = await check({ path: '/v1/limits', query: 'n=SECRET-LOOKING-VALUE', headers: hook });
    expect(bad).toMatchObject({ allowed: false, status: 403, reason: 'condition_error', detail: expect.stringMatching(/^routes\[0\]\.rules\[0\]\.when: /) });
    expect(await check({ path: '/v1/limits', headers: hook })).toMatchObject({ status: 403, reason: 'condition_error' });
    expect((await check({ path: '/v1/limits', query: 'n=5', headers: hook })).allowed).toBe(true);
    expect(await check({ path: '/v1/limits', query: 'n=500', headers: hook })).toMatchObject({ status: 403, reason: 'too_many' });
    expect(await counterValue(runtime, 'portcullis_expression_errors_total', { route: 'limits', expression: 'routes[0].rules[0].when' })).toBe(2);
    // One line per expression per 10 s, with the expression's place and the error code only.
    expect(lines).toHaveLength(1);
    const logged = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(logged).toMatchObject({ level: 'warn', route: 'limits', expression: 'routes[0].rules[0].when', msg: 'policy expression failed to evaluate; request denied' });
    expect(lines[0]).not.toContain('SECRET-LOOKING-VALUE');
    expect(lines[0]).not.toContain(SECRET);
    runtime.clock.advance(10_000);
    await check({ path: '/v1/limits', query: 'n=x', headers: hook });
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[1]!)).toMatchObject({ suppressed: 1 });
  });

  it('a malformed query string is a condition_error, never an allow', async () => {
    const { check } = setup(`
routes:
  - match: { path: /q }
    public: true
    when: request.query.a == "1"`);
    expect(await check({ path: '/q', query: 'a=%zz' })).toMatchObject({ status: 403, reason: 'condition_error' });
    expect(await check({ path: '/q', query: Array.from({ length: 200 }, (_, i) => `k${i}=1`).join('&') + '&a=1' })).toMatchObject({ status: 403, reason: 'condition_error' });
  });
});

describe('match.schemes and match.query', () => {
  const MATCH = `
identity:
  - sharedSecret: { header: x-hook-secret, secret: "${SECRET}", tenant: acme }
routes:
  - match: { pathPrefix: /api/, schemes: [https] }
  - match: { path: /oauth/google, methods: [GET], query: { app_id: present, redirect: 'request.query.redirect.startsWith("https://")' } }
    public: true
`;
  it('https only: http is 403 scheme_not_allowed before any credential is looked at', async () => {
    const { check } = setup(MATCH);
    expect((await check({ path: '/api/x', headers: hook })).allowed).toBe(true);
    for (const scheme of ['http', 'HTTP', '']) {
      const d = await check({ path: '/api/x', scheme, headers: hook });
      expect(d, scheme).toMatchObject({ allowed: false, status: 403, reason: 'scheme_not_allowed' });
    }
    expect(await check({ path: '/api/x', scheme: 'http' })).toMatchObject({ status: 403, reason: 'scheme_not_allowed' });
  });

  it('a required query parameter: absent is 400 missing_query_parameter, failing its expression 400 invalid_query_parameter', async () => {
    const { check } = setup(MATCH);
    expect((await check({ path: '/oauth/google', query: 'app_id=43d8&redirect=https%3A%2F%2Fapp.example' })).allowed).toBe(true);
    const missing = await check({ path: '/oauth/google', query: 'redirect=https://x' });
    expect(missing).toMatchObject({ status: 400, code: 'BAD_REQUEST', reason: 'missing_query_parameter' });
    expect(bodyOf(missing)).toEqual({ error: 'Bad Request', code: 'BAD_REQUEST', status: 400, reason: 'missing_query_parameter', requestId: 'req-1' });
    expect(await check({ path: '/oauth/google', query: 'app_id=1' })).toMatchObject({ status: 400, reason: 'missing_query_parameter' });
    expect(await check({ path: '/oauth/google', query: 'app_id=1&redirect=http://evil' })).toMatchObject({ status: 400, reason: 'invalid_query_parameter' });
  });
});

describe('computed identity', () => {
  const hs256 = (runtime: ReturnType<typeof testRuntime>, claims: JWTPayload) => {
    const now = Math.floor(runtime.clock.now() / 1000);
    return new SignJWT({ sub: 'u1', iat: now, exp: now + 600, ...claims }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(JWT_SECRET));
  };

  it('a shared-secret caller takes its tenant from the query string', async () => {
    const { check } = setup(`
routes:
  - match: { path: "/v1/webhooks/payments/{provider}", methods: [POST] }
    identity:
      - sharedSecret: { header: x-hook-secret, secret: "${SECRET}", subject: checkout-app }
        compute: { tenant: request.query.org }
`);
    const ok = await check({ method: 'POST', path: '/v1/webhooks/payments/stripe', query: 'org=org_acme', headers: hook });
    expect(ok).toMatchObject({ allowed: true, principal: { method: 'shared-secret', tenant: 'org_acme', subject: 'checkout-app' } });
    // The same tenant gives the same principal object (its encoded headers are reused).
    const again = await check({ method: 'POST', path: '/v1/webhooks/payments/stripe', query: 'org=org_acme', headers: hook });
    expect(again.principal).toBe(ok.principal);
    expect(await check({ method: 'POST', path: '/v1/webhooks/payments/stripe', headers: hook })).toMatchObject({ status: 401, reason: 'identity_error' });
    expect(await check({ method: 'POST', path: '/v1/webhooks/payments/stripe', query: 'org=', headers: hook })).toMatchObject({ status: 401, reason: 'invalid_computed_identity' });
    // Without the secret the expression never runs: 401 missing_credential.
    expect(await check({ method: 'POST', path: '/v1/webhooks/payments/stripe', query: 'org=org_acme' })).toMatchObject({ status: 401, reason: 'missing_credential' });
    // A control character in the computed tenant cannot become a header.
    expect(await check({ method: 'POST', path: '/v1/webhooks/payments/stripe', query: 'org=a%0d%0ax-evil:1', headers: hook })).toMatchObject({ status: 403, reason: 'invalid_identity' });
    // Nor whitespace the upstream would trim away ("org_acme " would be judged, "org_acme" served), nor a TAB.
    expect(await check({ method: 'POST', path: '/v1/webhooks/payments/stripe', query: `org=${'a'.repeat(257)}`, headers: hook })).toMatchObject({ status: 401, reason: 'invalid_computed_identity' });
    for (const org of ['org_acme%20', '%20org_acme', 'org_acme%09', 'org%09acme']) {
      expect(await check({ method: 'POST', path: '/v1/webhooks/payments/stripe', query: `org=${org}`, headers: hook }), org).toMatchObject({ status: 403, reason: 'invalid_identity' });
    }
  });

  it('JWT: tenant from org_id when present, else user_metadata.company_id; scopes from a role table keyed by app_id', async () => {
    const { check, runtime } = setup(`
identity:
  - jwt: { issuers: [local] }
    compute:
      tenant: 'has(auth.claims.org_id) ? auth.claims.org_id : auth.claims.user_metadata.company_id'
      scopes: '{"app-a": ["users:read"], "app-b": ["users:read", "users:write"]}[auth.claims.app_id]'
issuers:
  local: { secret: "\${JWT_SECRET}" }
routes:
  - match: { pathPrefix: /users/ }
    require: { allOf: ["users:read"] }
`);
    const bearer = async (claims: JWTPayload) => ({ authorization: `Bearer ${await hs256(runtime, claims)}` });
    expect(await check({ path: '/users/1', headers: await bearer({ org_id: 'o1', user_metadata: { company_id: 'c1' }, app_id: 'app-b' }) })).toMatchObject({
      allowed: true,
      principal: { tenant: 'o1', scopes: ['users:read', 'users:write'] },
    });
    expect(await check({ path: '/users/1', headers: await bearer({ user_metadata: { company_id: 'c1' }, app_id: 'app-a' }) })).toMatchObject({
      allowed: true,
      principal: { tenant: 'c1', scopes: ['users:read'] },
    });
    // Unknown app: the table has no entry → the identity cannot be computed.
    expect(await check({ path: '/users/1', headers: await bearer({ org_id: 'o1', app_id: 'app-z' }) })).toMatchObject({ status: 401, reason: 'identity_error' });
    // A tenant claim that is a number, a map or absent everywhere: never an exception, never an allow.
    expect(await check({ path: '/users/1', headers: await bearer({ org_id: 42, app_id: 'app-a' }) })).toMatchObject({ status: 401, reason: 'invalid_computed_identity' });
    expect(await check({ path: '/users/1', headers: await bearer({ org_id: { x: 1 }, app_id: 'app-a' }) })).toMatchObject({ status: 401, reason: 'invalid_computed_identity' });
    expect(await check({ path: '/users/1', headers: await bearer({ app_id: 'app-a' }) })).toMatchObject({ status: 401, reason: 'identity_error' });
  });

  it('scopes that are not a list of scope strings are 401 invalid_computed_identity', async () => {
    const { check, runtime } = setup(`
identity:
  - jwt: { issuers: [local] }
    compute: { scopes: auth.claims.perms }
issuers:
  local: { secret: "\${JWT_SECRET}" }
routes:
  - match: { pathPrefix: / }
    requireTenant: false
`);
    const bearer = async (perms: unknown) => ({ authorization: `Bearer ${await hs256(runtime, { perms })}` });
    expect((await check({ path: '/x', headers: await bearer(['a', 'b']) })).allowed).toBe(true);
    for (const perms of ['a b', [1, 2], ['has space'], { a: 1 }]) {
      expect(await check({ path: '/x', headers: await bearer(perms) }), JSON.stringify(perms)).toMatchObject({ status: 401, reason: 'invalid_computed_identity' });
    }
  });
});

describe('cost', () => {
  it('a route without expressions carries no conditions; one with expressions does', () => {
    const { policy } = setup(RULES + '  - { match: { path: /plain }, require: { allOf: [read] } }\n');
    const plain = policy.routes.match('api.example.com', 'GET', '/plain')!;
    expect(plain.conditions).toBeUndefined();
    expect(policy.defaultRoute.conditions).toBeUndefined();
    const ruled = policy.routes.match('api.example.com', 'GET', '/v1/companies/a/orders/1')!;
    expect(ruled.conditions?.afterIdentity).toBeTypeOf('function');
    expect(ruled.conditions?.beforeIdentity).toBeUndefined();
  });
});
