// Host confusion (issue 13 §2): one rule for routes and the host credential source — a port
// matches only a rule naming it or the scheme's default; a trailing dot is refused.
import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import type { Decision, RequestAttributes } from '../../src/types.js';
import { request } from '../support/request.js';
import { compileYaml } from '../support/runtime.js';

const policy = compileYaml(`
identity:
  - host:
      domains:
        docs.example.com: { tenant: docs, scopes: [read] }
        "*.shops.example.net": { tenant: shops, scopes: [read] }
        "admin.example.com:8443": { tenant: admin, scopes: [read] }
routes:
  - { name: docs-public, match: { host: docs.example.com, pathPrefix: /public }, public: true }
  - { name: wild-public, match: { host: "*.shops.example.net", pathPrefix: /public }, public: true }
  - { name: alt-port, match: { host: "docs.example.com:8080", pathPrefix: /alt }, public: true }
  - { name: read, match: { pathPrefix: /read }, require: { anyOf: [read] } }
  - { name: rest, match: { pathPrefix: / }, require: { anyOf: [nobody-has-this] } }
`);

async function check(host: string, path: string, scheme = 'https'): Promise<Decision> {
  const r: RequestAttributes = { ...request({ host, path }), scheme };
  return authorize(policy, r);
}

describe('hosts (issue 13 §2)', () => {
  it.each([
    ['docs.example.com', 'https'],
    ['docs.example.com:443', 'https'],
    ['docs.example.com:80', 'http'],
    ['DOCS.Example.COM', 'https'],
    ['a.shops.example.net:443', 'https'],
  ])('%s over %s is the bare name (routes and host identities)', async (host, scheme) => {
    const route = host.includes('shops') ? 'wild-public' : 'docs-public';
    expect(await check(host, '/public/x', scheme)).toMatchObject({ allowed: true, route });
    expect(await check(host, '/read', scheme)).toMatchObject({ allowed: true, route: 'read' });
  });

  it.each([
    ['docs.example.com:1234', 'https'],
    ['docs.example.com:443', 'http'],
    ['docs.example.com:80', 'https'],
    ['docs.example.com:8443', 'https'],
    ['a.shops.example.net:8443', 'https'],
  ])('%s over %s matches neither rules nor identities for the bare name', async (host, scheme) => {
    expect(await check(host, '/public/x', scheme)).toMatchObject({ allowed: false, route: 'rest', reason: 'missing_credential' });
    expect(await check(host, '/read', scheme)).toMatchObject({ allowed: false, route: 'read', reason: 'missing_credential' });
  });

  it('a port matches a rule that names it', async () => {
    expect(await check('docs.example.com:8080', '/alt/x')).toMatchObject({ allowed: true, route: 'alt-port' });
    expect(await check('docs.example.com', '/alt/x')).toMatchObject({ allowed: false });
    expect(await check('admin.example.com:8443', '/read')).toMatchObject({ allowed: true, principal: { tenant: 'admin' } });
    expect(await check('admin.example.com', '/read')).toMatchObject({ allowed: false, reason: 'missing_credential' });
  });

  it.each(['docs.example.com.', 'docs.example.com.:443', 'a.shops.example.net.', '.docs.example.com', 'docs..example.com', 'docs.example.com:99999', 'docs.example.com:x', 'docs example.com', 'döcs.example.com', '[::1', '[::1]x'])(
    '%j → 400 invalid_host',
    async (host) => {
      expect(await check(host, '/public/x')).toMatchObject({ allowed: false, status: 400, code: 'BAD_REQUEST', reason: 'invalid_host' });
    },
  );

  it('IPv6 literals, with and without a default port', async () => {
    expect(await check('[::1]', '/read')).toMatchObject({ reason: 'missing_credential' });
    expect(await check('[::1]:443', '/read')).toMatchObject({ reason: 'missing_credential' });
  });
});
