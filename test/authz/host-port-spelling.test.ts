// Review of issue 13 §2: a port spelled with leading zeros ("docs.example.com:0443") was read as
// the scheme's default port, so the request was judged by the rules for "docs.example.com". Envoy's
// virtual hosts compare the authority as text: "docs.example.com:0443" is not that host (it falls
// through to another virtual host), and with strip_matching_host_port Envoy removes such a port
// before Portcullis sees it. Judging it by the host's (possibly weaker) rules could widen access;
// a port that is not written the one canonical way is refused (400 invalid_host). No client
// writes ports so.
import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/pipeline/authorize.js';
import type { Decision } from '../../src/types.js';
import { request } from '../support/request.js';
import { compileYaml } from '../support/runtime.js';

const policy = compileYaml(`
identity:
  - host:
      domains:
        docs.example.com: { tenant: docs, scopes: [read] }
        "admin.example.com:8443": { tenant: admin, scopes: [read] }
routes:
  - { name: docs-public, match: { host: docs.example.com, pathPrefix: / }, public: true }
  - { name: alt-public, match: { host: "docs.example.com:8080", pathPrefix: / }, public: true }
  - { name: read, match: { pathPrefix: /read }, require: { anyOf: [read] } }
  - { name: rest, match: { pathPrefix: / }, require: { anyOf: [nobody-has-this] } }
`);

async function check(host: string, path: string, scheme = 'https'): Promise<Decision> {
  return authorize(policy, { ...request({ host, path }), scheme });
}

describe('ports with leading zeros are refused', () => {
  it.each([
    ['docs.example.com:0443', 'https'],
    ['docs.example.com:00443', 'https'],
    ['docs.example.com:080', 'http'],
    ['docs.example.com:08080', 'https'],
    ['admin.example.com:08443', 'https'],
    ['[::1]:0443', 'https'],
    ['docs.example.com:00', 'https'],
  ])('%s over %s → 400 invalid_host (not the host\'s rules, not its host identity)', async (host, scheme) => {
    expect(await check(host, '/x', scheme)).toMatchObject({ allowed: false, status: 400, reason: 'invalid_host' });
    expect(await check(host, '/read', scheme)).toMatchObject({ allowed: false, status: 400, reason: 'invalid_host' });
  });

  it('canonical ports keep their meaning', async () => {
    expect(await check('docs.example.com:443', '/x')).toMatchObject({ allowed: true, route: 'docs-public' });
    expect(await check('docs.example.com:8080', '/x')).toMatchObject({ allowed: true, route: 'alt-public' });
    expect(await check('admin.example.com:8443', '/read')).toMatchObject({ allowed: true, principal: { tenant: 'admin' } });
    expect(await check('docs.example.com:0', '/x')).toMatchObject({ allowed: false, route: 'rest' });
  });
});
