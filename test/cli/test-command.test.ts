// `portcullis test` as a child process: the shipped examples/*.test.yaml (every example policy has
// one and they run here, so CI runs them), a failing suite, JUnit output, invalid test files.

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { portcullis, ROOT, tempDir, tempFile } from './helpers.js';

const EXAMPLES = path.join(ROOT, 'examples');

describe('portcullis test', () => {
  it('every example policy has a test file, and they all pass', async () => {
    const policies = readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml') && !f.endsWith('.test.yaml'));
    const tests = readdirSync(EXAMPLES).filter((f) => f.endsWith('.test.yaml'));
    for (const policy of policies) expect(tests).toContain(policy.replace(/\.yaml$/, '.test.yaml'));
    const run = await portcullis(['test', ...tests.map((t) => path.join('examples', t))]);
    expect(run.stderr).toBe('');
    expect(run.stdout).not.toContain('FAIL');
    expect(run.stdout).toMatch(/\n(\d+) cases: \1 passed, 0 failed\n$/);
    expect(run.code).toBe(0);
  });

  it('a failing case prints what was expected and what came, exits 1, and writes JUnit', async () => {
    const dir = tempDir();
    tempFile('policy.yaml', 'identity:\n  - apiKey: {}\nroutes:\n  - { name: health, match: { path: /health }, public: true }\n  - { name: admin, match: { pathPrefix: /admin }, require: { allOf: [admin] } }\n', dir);
    const suite = tempFile(
      'policy.test.yaml',
      `policy: policy.yaml
keys:
  bob: { tenant: acme, scopes: [read] }
cases:
  - name: health is public
    request: GET https://api.example.com/health
    expect: { decision: allow, route: health }
  - name: bob is an admin (wrong on purpose)
    request: GET https://api.example.com/admin/users
    apiKey: bob
    expect: { decision: allow, upstreamHeaders: { x-tenant-id: acme } }
  - name: missing header expectation (wrong on purpose)
    request: GET https://api.example.com/health
    expect: { removedHeaders: [x-nothing] }
`,
      dir,
    );
    const junit = path.join(dir, 'report.xml');
    const run = await portcullis(['test', '--junit', junit, suite]);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('  ok    health is public  (allow 200 ok, route health)');
    expect(run.stdout).toContain('  FAIL  bob is an admin (wrong on purpose)');
    expect(run.stdout).toContain('expected decision "allow", got deny 403 insufficient_scope on route admin (missing admin)');
    expect(run.stdout).toContain('expected upstream header x-tenant-id "acme", got none');
    expect(run.stdout).toContain('expected x-nothing to be removed upstream');
    expect(run.stdout).toContain('3 cases: 1 passed, 2 failed');
    const xml = readFileSync(junit, 'utf8');
    expect(xml).toContain('<testsuite name="' + suite + '" tests="3" failures="2" errors="0">');
    expect(xml).toContain('<testcase classname="' + suite + '" name="health is public"/>');
    expect(xml).toMatch(/<testcase classname="[^"]+" name="bob is an admin \(wrong on purpose\)">\n\s+<failure message="expected decision &quot;allow&quot;/);
  });

  it('rate-limit sequences: repeat N judges the Nth answer', async () => {
    const dir = tempDir();
    tempFile('policy.yaml', 'routes:\n  - { name: login, match: { path: /login }, public: true }\nrateLimits:\n  policies:\n    - { name: per-ip, key: [ip], window: 60s, limit: 20 }\n', dir);
    const suite = tempFile(
      'login.test.yaml',
      `policy: policy.yaml
cases:
  - { name: 20th passes, request: POST https://a.example/login, repeat: 20, expect: { decision: allow } }
  - { name: 21st is 429, request: POST https://a.example/login, repeat: 21, expect: { status: 429, reason: rate_limited, responseHeaders: { retry-after: "60" } } }
  - { name: a minute later it passes again (each case starts fresh), request: POST https://a.example/login, advance: 61s, expect: { decision: allow } }
`,
      dir,
    );
    const run = await portcullis(['test', suite]);
    expect(run.stdout).toContain('3 cases: 3 passed, 0 failed');
    expect(run.code).toBe(0);
  });

  it('an invalid test file is reported with file:line and exits 1; usage errors exit 2; --help', async () => {
    const bad = tempFile('bad.test.yaml', 'policy: nothing.yaml\ncases:\n  - name: x\n    request: GET https://a.example/\n    expct: { status: 200 }\n');
    const run = await portcullis(['test', bad]);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain(`${bad}:5:5: cases.0: unknown key "expct"`);
    expect(run.stdout).toContain(`${bad}:3:5: cases.0.expect: is required`);
    expect((await portcullis(['test'])).code).toBe(2);
    const help = await portcullis(['test', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: portcullis test');
  });
});
