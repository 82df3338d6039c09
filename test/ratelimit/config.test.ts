// Policy-file validation of the rate-limit sections: one case per error, exact messages.
import { describe, expect, it } from 'vitest';
import { PolicyError } from '../../src/errors.js';
import { compileYaml, testRuntime } from '../support/runtime.js';
import { compile, compileErrors } from './helpers.js';

const ROUTES = `routes:
  - { name: api, match: { pathPrefix: / } }
  - { name: export, match: { path: /export }, rateLimits: { cost: 50, skip: [nope] } }
`;

function errors(yaml: string): string[] {
  return compileErrors(yaml, testRuntime());
}

describe('rate-limit policy validation', () => {
  it('defaults: memory backend, fail closed, draft headers, no quota headers', () => {
    const policy = compile(`rateLimits: {}\n`, testRuntime());
    expect(policy.document.rateLimits).toEqual({
      backend: { memory: { maxKeys: 100_000 } },
      failure: 'closed',
      headers: 'draft',
      quotaHeaders: false,
      policies: [],
    });
  });

  it('parses the redis backend with its defaults', () => {
    const policy = compile(`rateLimits:\n  backend: { redis: { url: "redis://cache:6379/2" } }\n`, testRuntime({ offline: true }));
    expect(policy.document.rateLimits?.backend).toEqual({
      redis: { url: 'redis://cache:6379/2', keyPrefix: 'portcullis:rl:', timeout: 20, time: 'server', circuitBreaker: { failures: 5, cooldown: 2000 } },
    });
  });

  it.each([
    ['rate and window together', `rateLimits:\n  policies: [{ name: a, key: [ip], rate: 1/s, window: 1s, limit: 1 }]\n`, 'rateLimits.policies.0: a policy has either rate (and optional burst) or window and limit'],
    ['a window without a limit', `rateLimits:\n  policies: [{ name: a, key: [ip], window: 1s }]\n`, 'rateLimits.policies.0.limit: a sliding window needs both window and limit'],
    ['a burst without a rate', `rateLimits:\n  policies: [{ name: a, key: [ip], burst: 5 }]\n`, 'rateLimits.policies.0.rate: burst needs a rate'],
    ['an unknown key part', `rateLimits:\n  policies: [{ name: a, key: [user], rate: 1/s }]\n`, 'rateLimits.policies.0.key.0: invalid key part "user": use tenant, apiKey, subject, ip, route, method, host or header:NAME'],
    ['a misspelt key', `rateLimits:\n  policies: [{ name: a, key: [ip], rate: 1/s, burts: 5 }]\n`, 'rateLimits.policies.0.burts: unknown key "burts" (did you mean "burst"?)'],
    ['a bad rate', `rateLimits:\n  policies: [{ name: a, key: [ip], rate: lots }]\n`, 'rateLimits.policies.0.rate: invalid rate "lots": use COUNT/UNIT (e.g. "100/min", "10/s", "20/60s")'],
    ['an unknown backend', `rateLimits:\n  backend: mongo\n`, 'rateLimits.backend: must be memory, { memory: { maxKeys } } or { redis: { url | cluster | sentinel, ... } }'],
    ['a redis URL of another scheme', `rateLimits:\n  backend: { redis: { url: "http://x" } }\n`, 'rateLimits.backend.redis.url: must be a redis:// or rediss:// URL'],
    ['a redis timeout above 5 s', `rateLimits:\n  backend: { redis: { url: "redis://x", timeout: 10s } }\n`, 'rateLimits.backend.redis.timeout: must be between 1ms and 5s'],
    ['a key prefix with a hash tag', `rateLimits:\n  backend: { redis: { url: "redis://x", keyPrefix: "{rl}:" } }\n`, 'rateLimits.backend.redis.keyPrefix: must not contain { or }: the hash tag of each counter follows the prefix'],
    ['redis with two topologies', `rateLimits:\n  backend: { redis: { url: "redis://x", cluster: { nodes: ["redis://y"] } } }\n`, 'rateLimits.backend.redis: redis needs exactly one of url, cluster, sentinel'],
    ['bans in two stores', `rateLimits:\n  bans: { file: /x, postgres: {} }\n`, 'rateLimits.bans: bans needs exactly one of file, postgres'],
    ['postgres bans without a URL', `rateLimits:\n  bans: { postgres: {} }\n`, 'rateLimits.bans.postgres.url: is required (or set DATABASE_URL)'],
    ['an unlimited plan with numbers', `rateLimits:\n  policies: [{ name: a, key: [ip], rate: 1/s }]\ntenants:\n  t: { limits: { a: { unlimited: true, burst: 3 } } }\n`, 'tenants.t.limits.a: unlimited: true takes no burst'],
    ['an empty plan', `rateLimits:\n  policies: [{ name: a, key: [ip], rate: 1/s }]\ntenants:\n  t: { limits: { a: {} } }\n`, 'tenants.t.limits.a: an override needs rate/burst, window/limit or unlimited: true'],
    ['a window plan for a bucket', `rateLimits:\n  policies: [{ name: a, key: [ip], window: 1m, limit: 5 }]\ntenants:\n  t: { limits: { a: { burst: 9 } } }\n`, 'tenants.t.limits.a: policy "a" is a sliding window: override it with window and/or limit'],
  ])('rejects %s', (_name, yaml, message) => {
    expect(errors(yaml)).toEqual([message]);
  });

  it('checks names, plans and costs across the document', () => {
    expect(
      errors(`${ROUTES}rateLimits:
  policies:
    - { name: a, key: [ip], rate: 10/s, cost: 20, routes: [missing] }
    - { name: a, key: [tenant], window: 1m, limit: 10 }
tenants:
  acme: { limits: { a: { window: 1m }, b: { rate: 1/s } } }
`),
    ).toEqual([
      'tenants.acme.limits.a: policy "a" is a token bucket: override it with rate and/or burst',
      'rateLimits.policies.0.cost: cost 20 exceeds what the policy ever admits at once (10): no request could pass',
      'rateLimits.policies.1.name: duplicate policy name "a"',
      'rateLimits.policies.0.routes.0: no route is named "missing" (name routes with name:, or use "default")',
      'tenants.acme.limits.b: no rate-limit policy is named "b"',
      'routes.1.rateLimits.skip.0: no rate-limit policy is named "nope"',
      'routes.1.rateLimits.cost: cost 50 exceeds what policy "a" ever admits at once (10)',
    ]);
  });

  it('refuses a credential header as a key part (keys are stored and shown in explanations)', () => {
    const chain = `identity:\n  - apiKey: { headers: [x-api-key] }\n  - session: { header: x-session, lookup: s }\nlookups:\n  s: { http: { url: "http://127.0.0.1:9/s" } }\n`;
    const problems = (yaml: string): string[] => {
      try {
        compileYaml(yaml, testRuntime({ offline: true }));
        return [];
      } catch (err) {
        if (err instanceof PolicyError) return err.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
        throw err;
      }
    };
    for (const header of ['authorization', 'x-api-key', 'cookie', 'x-session']) {
      expect(problems(`${chain}rateLimits:\n  policies: [{ name: a, key: [ip, "header:${header}"], rate: 1/s }]\n`)).toEqual([
        `rateLimits.policies.0.key.1: header:${header} carries a credential of the identity chain and cannot be part of a key (keys are stored and shown in explanations): key by apiKey, subject or tenant`,
      ]);
    }
    expect(problems(`${chain}rateLimits:\n  policies: [{ name: a, key: [ip, "header:x-client-version"], rate: 1/s }]\n`)).toEqual([]);
  });

  it('refuses plans and route settings without a rateLimits section', () => {
    expect(errors(`${ROUTES.replace(', skip: [nope]', '')}tenants:\n  acme: { limits: { a: { rate: 1/s } } }\n`)).toEqual([
      'tenants.acme.limits: there is no rateLimits section for these limits to override',
      'routes.1.rateLimits: there is no rateLimits section',
    ]);
  });

  it('a plan smaller than the cost is refused too', () => {
    expect(errors(`rateLimits:\n  policies: [{ name: a, key: [ip], rate: 10/s, cost: 5 }]\ntenants:\n  t: { limits: { a: { rate: 1/s } } }\n`)).toEqual([
      'rateLimits.policies.0.cost: cost 5 exceeds what the policy ever admits at once (1): no request could pass',
    ]);
  });

  it('compiles offline (validate) without connecting to Redis or Postgres', () => {
    const policy = compile(
      `routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  backend: { redis: { url: "redis://127.0.0.1:1" } }
  bans: { postgres: { url: "postgres://nobody@127.0.0.1:1/x" } }
  policies: [{ name: a, key: [ip], rate: 1/s }]
`,
      testRuntime({ offline: true }),
    );
    // An ip-keyed policy and bans: decided before identification.
    expect(policy.routes.match('api.example.com', 'GET', '/x')?.preIdentityLimiter).toBeDefined();
  });
});
