// The expression environment, variable by variable, through the real pipeline: each expression is
// a route's `when:` in a compiled policy, so "true" is an allow and "false" is 403 condition_failed.
// Callers are real: a Host-identified storefront, an HS256 JWT signed with jose, an API key minted
// by the CLI into a file store.

import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import type { Decision } from '../../src/types.js';
import { createKey, EXAMPLES, tempDir } from '../examples/helpers.js';
import { request, type RequestInit } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const JWT_SECRET = 'expression-tests-hs256-secret-0123456789abcdef';
const NOW = Date.UTC(2026, 10, 30, 12, 0, 0);
const tmp = tempDir('pc-expr-env-');
let keyFile: string;
let apiKey: { key: string; id: string };

beforeAll(async () => {
  keyFile = path.join(tmp.dir, 'keys.yaml');
  copyFileSync(path.join(EXAMPLES, 'keys', 'quickstart.yaml'), keyFile);
  apiKey = await createKey(['--store', `file:${keyFile}`, '--tenant', 'globex', '--name', 'ci', '--scopes', 'items:read', '--expires-in', '30d']);
});
afterAll(() => tmp.cleanup());

const runtime = testRuntime({ env: { JWT_SECRET } });
runtime.clock.set(NOW);
afterAll(() => runtime.resources.closeAll());

function policyWith(expression: string, extra = ''): string {
  return `
clientIp: { xffTrustedHops: 1 }
requireTenant: false
identity:
  - apiKey: { headers: [x-api-key] }
  - jwt: { issuers: [local] }
  - host: { domains: { shop.example.com: { tenant: acme, scopes: [storefront, catalog] } } }
issuers:
  local: { secret: "\${JWT_SECRET}", requiredClaims: [sub], claims: { tenant: org, scopes: [scope] } }
keyStore: { file: { path: ${keyFile} } }
routes:
  - match: { path: "/v1/companies/{company_id}/items/{item}" }
    when: ${JSON.stringify(expression)}
${extra}`;
}

const BASE: RequestInit = {
  method: 'GET',
  host: 'shop.example.com',
  path: '/v1/companies/acme/items/42',
  query: 'org=acme&tag=a&tag=b&sp=a+b%20c&empty',
  headers: { 'x-trace': 't1', 'x-forwarded-for': '203.0.113.50, 198.51.100.9, 10.0.0.1' }, // as Envoy sends it: the peer appended
  sourceAddress: '10.0.0.1',
};

async function decide(expression: string, init: RequestInit = BASE): Promise<Decision> {
  const policy = compileYaml(policyWith(expression), runtime);
  await policy.ready;
  return authorize(policy, request(init));
}

async function holds(expression: string, init: RequestInit = BASE): Promise<boolean> {
  const decision = await decide(expression, init);
  if (decision.allowed) return true;
  if (decision.reason === 'condition_failed') return false;
  throw new Error(`${expression}: ${decision.status} ${decision.reason} ${decision.detail ?? ''}`);
}

const hs256 = (claims: JWTPayload) =>
  new SignJWT({ sub: 'user-1', iat: NOW / 1000, exp: NOW / 1000 + 600, ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .sign(new TextEncoder().encode(JWT_SECRET));

describe('request.*', () => {
  it.each([
    ['request.method == "GET"'],
    ['request.scheme == "https"'],
    ['request.host == "shop.example.com"'],
    ['request.path == "/v1/companies/acme/items/42"'],
    ['request.params == {"company_id": "acme", "item": "42"}'],
    ['request.params.company_id == "acme" && request.params["item"] == "42"'],
    ['request.query.org == "acme" && request.query.tag == "a"'],
    ['request.query.sp == "a b c" && request.query.empty == ""'],
    ['!("missing" in request.query) && !has(request.query.missing)'],
    ['request.queryAll.tag == ["a", "b"] && request.queryAll.org == ["acme"]'],
    ['request.headers["x-trace"] == "t1"'],
    ['!("x-absent" in request.headers)'],
    ['request.ip == "198.51.100.9"'],
    ['now == timestamp("2026-11-30T12:00:00Z")'],
    ['now - duration("1h") > timestamp("2026-11-30T10:59:59Z")'],
  ])('%s', async (expression) => {
    expect(await holds(expression)).toBe(true);
  });

  it('each variable has its documented type', async () => {
    expect(
      await holds(
        'type(request.method) == string && type(request.scheme) == string && type(request.host) == string && type(request.path) == string && ' +
          'type(request.params) == map && type(request.query) == map && type(request.queryAll) == map && type(request.queryAll.tag) == list && ' +
          'type(request.headers["x-trace"]) == string && type(request.ip) == string && type(now) == google.protobuf.Timestamp',
      ),
    ).toBe(true);
  });

  it('false is 403 condition_failed', async () => {
    expect(await decide('request.method == "POST"')).toMatchObject({ allowed: false, status: 403, reason: 'condition_failed' });
  });

  it('scheme is lower-case whatever Envoy sends; ip is the peer without trusted hops in x-forwarded-for', async () => {
    expect(await holds('request.scheme == "http"', { ...BASE, scheme: 'HTTP' })).toBe(true);
    expect(await holds('request.ip == "10.0.0.1"', { ...BASE, headers: { 'x-trace': 't1' } })).toBe(true);
  });

  it('string extensions and standard functions are there', async () => {
    expect(
      await holds(
        'request.path.split("/")[3] == "acme" && request.host.upperAscii() == "SHOP.EXAMPLE.COM" && request.path.replace("/", "|") == "|v1|companies|acme|items|42" && ' +
          '"acme".charAt(1) == "c" && "  x ".trim() == "x" && request.path.startsWith("/v1/") && request.path.indexOf("acme") == 14 && ' +
          'request.path.lastIndexOf("/") == 24 && ["a", "b"].join("-") == "a-b" && "abc".reverse() == "cba" && int(request.params.item) == 42 && ' +
          'request.params.company_id.matches("^[a-z]+$") && request.path.substring(1, 3) == "v1" && "Acme".lowerAscii() == "acme"',
      ),
    ).toBe(true);
  });
});

describe('matches() is RE2, as CEL specifies (attacker review: JavaScript backtracking on request data)', () => {
  it('a pattern that would make a backtracking engine run for hours answers at once on a long path', async () => {
    // JavaScript's engine is O(n^5) here: 5,000 characters would never finish. RE2 is linear.
    const long = { ...BASE, path: `/v1/companies/acme/items/42${'a'.repeat(5_000)}` };
    expect(await holds('request.path.matches("^/v1/companies/acme/items/42a*a*a*a*a*b$")', long)).toBe(false);
    expect(await holds('request.path.matches("^/v1/companies/acme/items/42a*a*a*a*a*$")', long)).toBe(true);
  });

  it('RE2 semantics: partial match, code points, nested quantifiers allowed (they cannot blow up)', async () => {
    expect(await holds('request.path.matches("acme/items") && !request.path.matches("^acme") && "😀".matches("^.$") && "aaa".matches("^(a+)+$")')).toBe(true);
  });

  it('refuses what RE2 does not support, and the internal name, at load', async () => {
    expect(() => compileYaml(policyWith('request.path.matches("^/(?=v1)")'), runtime)).toThrow(/not a valid RE2 regular expression/);
    expect(() => compileYaml(policyWith('request.path.matches("^(a)\\\\1$")'), runtime)).toThrow(/not a valid RE2 regular expression/);
    expect(() => compileYaml(policyWith('request.path.re2Matches("x")'), runtime)).toThrow(/unknown function re2Matches/);
  });
});

describe('auth.*', () => {
  it('a Host-identified caller', async () => {
    expect(
      await holds(
        'auth.method == "host" && auth.tenant == "acme" && auth.subject == "host:shop.example.com" && auth.scopes == ["storefront", "catalog"] && ' +
          'auth.keyId == "" && auth.email == "" && auth.claims == {} && "catalog" in auth.scopes',
      ),
    ).toBe(true);
  });

  it('a JWT caller: auth.claims is the verified payload, nested maps and lists included', async () => {
    const token = await hs256({ org: 'globex', email: 'dev@globex.test', scope: 'items:read', user_metadata: { company_id: 'c-7', level: 3 }, apps: ['a1', 'a2'] });
    const init = { ...BASE, headers: { ...BASE.headers, authorization: `Bearer ${token}` } };
    expect(
      await holds(
        'auth.method == "jwt" && auth.tenant == "globex" && auth.subject == "user-1" && auth.email == "dev@globex.test" && auth.scopes == ["items:read"] && ' +
          'auth.claims.org == "globex" && auth.claims.user_metadata.company_id == "c-7" && auth.claims.user_metadata.level == 3.0 && ' +
          'auth.claims.apps.exists(a, a == "a2") && has(auth.claims.org) && !has(auth.claims.missing) && auth.claims.exp > 0.0',
        init,
      ),
    ).toBe(true);
  });

  it('an API-key caller: auth.keyId is the key id (never the key)', async () => {
    const init = { ...BASE, headers: { ...BASE.headers, 'x-api-key': apiKey.key } };
    expect(await holds(`auth.method == "api-key" && auth.keyId == "${apiKey.id}" && auth.tenant == "globex" && auth.subject == "ci" && auth.scopes == ["items:read"]`, init)).toBe(true);
  });

  it('each variable has its documented type', async () => {
    expect(
      await holds(
        'type(auth.method) == string && type(auth.tenant) == string && type(auth.subject) == string && type(auth.scopes) == list && ' +
          'type(auth.keyId) == string && type(auth.email) == string && type(auth.claims) == map',
      ),
    ).toBe(true);
  });
});

describe('request.headers never shows a credential', () => {
  it('a header no source reads is visible; the chain\'s credential headers are refused at load', async () => {
    expect(await holds('request.headers["x-trace"] == "t1"')).toBe(true);
    for (const header of ['authorization', 'x-api-key', 'cookie', 'proxy-authorization']) {
      expect(() => compileYaml(policyWith(`request.headers["${header}"] != ""`), runtime)).toThrow(/carries a credential of the identity chain/);
    }
  });

  it('a header read by a source of any route chain is hidden everywhere', () => {
    const extra = `
  - match: { path: /hook }
    identity: [{ sharedSecret: { header: x-hook-secret, secret: "0123456789abcdef0123" } }]`;
    expect(() => compileYaml(policyWith('request.headers["x-hook-secret"] == "x"', extra), runtime)).toThrow(/x-hook-secret"\] carries a credential/);
  });
});

describe('computed identity on an API-key source', () => {
  it("maps the key's own tenant and scopes (auth.*) to new ones", async () => {
    const policy = compileYaml(
      `
identity:
  - apiKey: { headers: [x-api-key] }
    compute: { tenant: '"org_" + auth.tenant', scopes: 'auth.scopes + (auth.tenant == "globex" ? ["reports:read"] : [])' }
keyStore: { file: { path: ${keyFile} } }
routes:
  - match: { pathPrefix: /reports/ }
    require: { allOf: ["reports:read"] }
`,
      runtime,
    );
    await policy.ready;
    const decision = await authorize(policy, request({ path: '/reports/1', headers: { 'x-api-key': apiKey.key } }));
    expect(decision).toMatchObject({ allowed: true, principal: { method: 'api-key', tenant: 'org_globex', keyId: apiKey.id, scopes: ['items:read', 'reports:read'] } });
    expect(await authorize(policy, request({ path: '/reports/1', headers: { 'x-api-key': 'pk_unknown' } }))).toMatchObject({ allowed: false, status: 401 });
  });
});
