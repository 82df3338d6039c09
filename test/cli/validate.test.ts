// `portcullis validate` as a child process (issue 19): every problem at once without cascades,
// "did you mean", warnings and --strict, --allow-missing-env, --help and per-command usage.

import { describe, expect, it } from 'vitest';
import { portcullis, tempFile } from './helpers.js';

describe('portcullis validate', () => {
  it('lists every problem of a file in one run: schema and compile problems, no cascades', async () => {
    const file = tempFile(
      'policy.yaml',
      `mode: enforced
identity:
  - jwt: { issuers: [auth] }
issuers:
  auth0: { secret: 0123456789abcdef0123456789abcdef }
routes:
  - { name: items, match: { path: /v1/items }, require: { allOf: [read] } }
  - { name: items, match: { path: /v1/other }, require: { allOf: [read] } }
  - { name: admin, match: { pathPrefix: /admin }, pubic: true }
`,
    );
    const run = await portcullis(['validate', '--config', file]);
    expect(run.code).toBe(1);
    const lines = run.stderr.trim().split('\n');
    expect(lines).toEqual([
      `${file}:1:7: mode: must be one of "enforce", "dev"`,
      `${file}:3:22: identity[0].jwt.issuers[0]: unknown issuer "auth" (did you mean "auth0"? issuers defines auth0)`,
      `${file}:8:13: routes[1].name: duplicate route name "items" (also routes[0])`,
      `${file}:9:51: routes[2].pubic: unknown key "pubic" (did you mean "public"?)`,
      `${file}: 4 problems`,
    ]);
    expect(run.stderr).not.toContain('needs an identity chain');
  });

  it('warns about patterns in another syntax, routes that can never match, public routes over protected ones; --strict refuses them', async () => {
    const file = tempFile(
      'policy.yaml',
      `identity:
  - host: { domains: { shop.example.com: { tenant: acme } } }
routes:
  - { name: item, match: { path: "/v1/items/:id" } }
  - { name: star, match: { path: "/v1/files/*" } }
  - { name: first, match: { pathPrefix: /v1/orders } }
  - { name: again, match: { pathPrefix: /v1/orders/ } }
  - { name: open, match: { pathGlob: "/v2/**" }, public: true }
  - { name: secret, match: { pathPrefix: /v2 }, require: { allOf: [admin] } }
`,
    );
    const run = await portcullis(['validate', '--config', file]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('OK (6 routes');
    const text = run.stderr;
    expect(text).toContain(`warning: ${file}:4: routes[0].match.path: ":id" looks like Express/Rails syntax; here it matches only the literal text ":id" (write {id} for a path parameter)`);
    expect(text).toContain(`warning: ${file}:5: routes[1].match.path: "*" in path matches only a literal "*"; use pathPrefix, or pathGlob for wildcards`);
    expect(text).toContain(`warning: ${file}:7: routes[3]: can never match: routes[2] (first) matches every request it would, first`);
    expect(text).toContain(`warning: ${file}:8: routes[4]: public route open takes requests protected route routes[5] (secret) also matches, e.g. GET /v2/x: they are not authenticated`);

    const strict = await portcullis(['validate', '--strict', '--config', file]);
    expect(strict.code).toBe(1);
    expect(strict.stderr).toContain(`error: ${file}:4: routes[0].match.path`);
    expect(strict.stderr).toContain(`${file}: 4 problems (warnings are problems with --strict)`);
    expect(strict.stdout).toBe('');
  });

  it('--allow-missing-env: placeholders for unset variables, length rules skipped and said so', async () => {
    const file = tempFile(
      'policy.yaml',
      `issuers:
  supabase: { secret: "\${JWT_SECRET_FOR_CI}" }
identity:
  - jwt: { issuers: [supabase] }
routes:
  - { match: { pathPrefix: /v1/ }, rateLimits: { cost: "\${COST_FOR_CI}" } }
rateLimits:
  policies:
    - { name: per-ip, key: [ip], window: 60s, limit: 100 }
`,
    );
    const strictEnv = await portcullis(['validate', '--config', file]);
    expect(strictEnv.code).toBe(1);
    expect(strictEnv.stderr).toContain('environment variable JWT_SECRET_FOR_CI is not set');
    expect(strictEnv.stderr).toContain('environment variable COST_FOR_CI is not set');

    const ci = await portcullis(['validate', '--allow-missing-env', '--config', file]);
    expect(ci.stderr).toContain(
      'note: environment variable JWT_SECRET_FOR_CI is not set: a placeholder stands in, and the checks of its value (secret lengths, formats) are skipped',
    );
    expect(ci.stderr).toContain('note: environment variable COST_FOR_CI is not set');
    expect(ci.code).toBe(0);
    expect(ci.stdout).toContain('OK (1 routes');
  });

  it('--help on every command, and the command usage after a usage error', async () => {
    for (const command of ['validate', 'serve', 'check', 'test', 'keys', 'bans', 'migrate']) {
      const help = await portcullis([command, '--help']);
      expect(help.code, command).toBe(0);
      expect(help.stdout, command).toMatch(/Usage:/);
      expect(help.stderr, command).toBe('');
    }
    const usage = await portcullis(['validate', '--config']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('Usage: portcullis validate');
    const serve = await portcullis(['serve', '--bogus']);
    expect(serve.code).toBe(2);
    expect(serve.stderr).toContain("Unknown option '--bogus'");
    expect(serve.stderr).toContain('Usage: portcullis serve');
  });
});
