// The CEL semantics a deny/allow rule leans on, through the real pipeline: commutative error
// absorption in && and || (cel-spec langdef: `false && error` is false, `true || error` is true,
// anything else with an error is an error), negation and conditionals of an error, and the
// library's known int64-range deviation (test/expr/conformance/known-deviations.ts): its result
// is exact — never wrapped — and any further arithmetic on it raises, so a decision never rests on
// a wrong number. A request can make an operand fail (leave out a query parameter); that may let
// the other operand decide, as the spec says, but never turns a failing rule into an allow.

import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import type { Decision } from '../../src/types.js';
import { request, type RequestInit } from '../support/request.js';
import { compileYaml, testRuntime } from '../support/runtime.js';

const SECRET = 'cel-semantics-secret-0123456789';
const hook = { 'x-hook-secret': SECRET };

function policy(rules: string) {
  const compiled = compileYaml(
    `
identity:
  - sharedSecret: { header: x-hook-secret, secret: "${SECRET}", tenant: acme }
routes:
  - match: { path: "/v1/companies/{company_id}/orders" }
    rules:
${rules}
`,
    testRuntime(),
  );
  return async (company: string, query = ''): Promise<Decision> => authorize(compiled, request({ path: `/v1/companies/${company}/orders`, query, headers: hook } as RequestInit));
}

/** allow, or the denial's reason. */
const outcome = (d: Decision): string => (d.allowed ? 'allow' : d.reason);

describe('error absorption in || and && (commutative, as the spec says)', () => {
  it('unless: E || F — a failing E is absorbed only when F is true; otherwise the rule denies', async () => {
    // request.query.org is a missing map key (an error) when the caller leaves ?org= out.
    const check = policy(`      - unless: request.query.org == "acme" || request.params.company_id == auth.tenant
        deny: { status: 403, reason: tenant_mismatch }`);
    expect(outcome(await check('acme'))).toBe('allow'); // error || true  → true
    expect(outcome(await check('globex'))).toBe('condition_error'); // error || false → error → deny
    expect(outcome(await check('globex', 'org=acme'))).toBe('allow'); // true || false
    expect(outcome(await check('globex', 'org=x'))).toBe('tenant_mismatch'); // false || false
  });

  it('the operand order does not matter: F || E decides like E || F', async () => {
    const check = policy(`      - unless: request.params.company_id == auth.tenant || request.query.org == "acme"
        deny: { status: 403, reason: tenant_mismatch }`);
    expect(outcome(await check('acme'))).toBe('allow'); // true || error
    expect(outcome(await check('globex'))).toBe('condition_error'); // false || error
  });

  it('when: E && F — a failing E is absorbed only when F is false; otherwise the rule denies', async () => {
    const check = policy(`      - when: request.query.debug == "1" && request.params.company_id != auth.tenant
        deny: { status: 403, reason: debug_other_company }`);
    expect(outcome(await check('acme'))).toBe('allow'); // error && false → false: the rule does not fire
    expect(outcome(await check('globex'))).toBe('condition_error'); // error && true → error → deny
    expect(outcome(await check('globex', 'debug=1'))).toBe('debug_other_company');
    expect(outcome(await check('globex', 'debug=0'))).toBe('allow');
  });

  it('unless: E && F — an error never counts as true', async () => {
    const check = policy(`      - unless: request.params.company_id == auth.tenant && request.query.confirm == "yes"
        deny: { status: 403, reason: unconfirmed }`);
    expect(outcome(await check('acme'))).toBe('condition_error'); // true && error → error
    expect(outcome(await check('globex'))).toBe('unconfirmed'); // false && error → false
    expect(outcome(await check('acme', 'confirm=yes'))).toBe('allow');
  });
});

describe('negation and conditionals of an error stay errors', () => {
  it('unless: !E denies when E fails (a missing flag is not "not blocked")', async () => {
    const check = policy(`      - unless: '!(request.query.blocked == "1")'
        deny: { status: 403, reason: blocked }`);
    expect(outcome(await check('acme'))).toBe('condition_error');
    expect(outcome(await check('acme', 'blocked=0'))).toBe('allow');
    expect(outcome(await check('acme', 'blocked=1'))).toBe('blocked');
  });

  it('when: !E denies when E fails', async () => {
    const check = policy(`      - when: '!(request.query.ok == "1")'
        deny: { status: 403, reason: not_ok }`);
    expect(outcome(await check('acme'))).toBe('condition_error');
    expect(outcome(await check('acme', 'ok=1'))).toBe('allow');
  });

  it('a conditional whose condition fails is an error, whatever its branches', async () => {
    const check = policy(`      - unless: 'request.query.mode == "x" ? true : true'
        deny: { status: 403, reason: never }`);
    expect(outcome(await check('acme'))).toBe('condition_error');
    expect(outcome(await check('acme', 'mode=y'))).toBe('allow');
  });
});

describe('int64 range (known library deviation: no overflow error for -MIN, MIN / -1, int(huge double))', () => {
  const MIN = '-9223372036854775808';

  it('the out-of-range result is exact, never wrapped: comparisons keep their meaning', async () => {
    // The spec raises (→ condition_error); the library yields +2^63. A wrapped int64 would be
    // MIN again and flip both rules below.
    const negative = policy(`      - when: -int(request.query.n) < 0
        deny: { status: 403, reason: negated_negative }`);
    expect(outcome(await negative('acme', `n=${MIN}`))).toBe('allow');
    expect(outcome(await negative('acme', 'n=5'))).toBe('negated_negative');
    const divided = policy(`      - unless: int(request.query.n) / int(request.query.d) <= 1000
        deny: { status: 403, reason: too_large }`);
    expect(outcome(await divided('acme', `n=${MIN}&d=-1`))).toBe('too_large');
    const huge = policy(`      - unless: int(double(request.query.n)) <= 1000
        deny: { status: 403, reason: too_large }`);
    expect(outcome(await huge('acme', 'n=1e99'))).toBe('too_large');
  });

  it('arithmetic on an out-of-range result raises and denies', async () => {
    const check = policy(`      - when: -int(request.query.n) + 1 < 0
        deny: { status: 403, reason: negative }`);
    expect(outcome(await check('acme', `n=${MIN}`))).toBe('condition_error');
    const huge = policy(`      - when: int(double(request.query.n)) * 2 < 0
        deny: { status: 403, reason: negative }`);
    expect(outcome(await huge('acme', 'n=1e99'))).toBe('condition_error');
  });
});
