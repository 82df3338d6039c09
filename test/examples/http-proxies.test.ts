// The proxy examples for the HTTP authorization listener stay in step with the policy's owned
// identity headers: each one clears or overwrites every one of them on every request (nginx is
// also run for real in test/e2e/nginx.test.ts), and asks the listener on the shape's prefix.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { DEFAULT_AUTHZ_HTTP_PATHS, headerNamesSchema } from '../../src/policy/schema.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const read = (file: string) => readFileSync(path.join(ROOT, 'examples', file), 'utf8');
const defaults = headerNamesSchema.parse({});
const OWNED = [defaults.tenant, defaults.subject, defaults.scopes, defaults.method, defaults.keyId, defaults.email];
const prefixOf = (shape: string) => Object.entries(DEFAULT_AUTHZ_HTTP_PATHS).find(([, s]) => s === shape)![0];

describe('HTTP proxy examples', () => {
  it('nginx sets every owned header from the auth answer on the proxied request', () => {
    const conf = read('nginx/nginx.conf').toLowerCase();
    for (const h of OWNED) expect(conf, h).toMatch(new RegExp(`proxy_set_header ${h} \\$portcullis_`));
    expect(conf).toContain(`proxy_pass http://portcullis${prefixOf('nginx')};`);
  });

  it('Traefik clears every owned header before forwardAuth and copies them from the answer', () => {
    const dynamic = YAML.parse(read('traefik/dynamic.yml'));
    const m = dynamic.http.middlewares;
    const cleared = Object.entries(m['portcullis-clear'].headers.customRequestHeaders).filter(([, v]) => v === '').map(([k]) => k.toLowerCase());
    const copied = (m.portcullis.forwardAuth.authResponseHeaders as string[]).map((h) => h.toLowerCase());
    for (const h of OWNED) {
      expect(cleared, h).toContain(h);
      expect(copied, h).toContain(h);
    }
    expect(m.portcullis.forwardAuth.address).toMatch(new RegExp(`${prefixOf('forward-auth')}$`));
    expect(m.portcullis.forwardAuth.trustForwardHeader).toBe(false);
    const chain = dynamic.http.routers.app.middlewares as string[];
    expect(chain.indexOf('portcullis-clear')).toBeLessThan(chain.indexOf('portcullis'));
  });

  it('Caddy removes every owned header before forward_auth (in a route block) and copies them from the answer', () => {
    const caddy = read('caddy/Caddyfile');
    const route = caddy.slice(caddy.indexOf('route {'));
    const auth = route.indexOf('forward_auth');
    const copy = /copy_headers (.+)/.exec(route)![1]!.toLowerCase().split(/\s+/);
    for (const h of OWNED) {
      const removal = route.toLowerCase().indexOf(`request_header -${h}\n`);
      expect(removal, h).toBeGreaterThan(-1);
      expect(removal, h).toBeLessThan(auth);
      expect(copy, h).toContain(h);
    }
    expect(route).toContain(`uri ${prefixOf('forward-auth')}`);
  });

  it('Envoy http_service copies every owned header and asks under its path_prefix, failing closed', () => {
    const envoy = YAML.parse(read('envoy-http/envoy.yaml'));
    const hcm = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    const authz = hcm.http_filters.find((f: { name: string }) => f.name === 'envoy.filters.http.ext_authz').typed_config;
    const upstream = authz.http_service.authorization_response.allowed_upstream_headers.patterns.map((p: { exact: string }) => p.exact);
    for (const h of OWNED) expect(upstream, h).toContain(h);
    expect(authz.http_service.path_prefix).toBe(prefixOf('envoy'));
    expect(authz.failure_mode_allow).toBe(false);
    const allowed = authz.allowed_headers.patterns.map((p: { exact: string }) => p.exact);
    expect(allowed).toEqual(expect.arrayContaining(['x-forwarded-for', 'x-forwarded-proto']));
    expect(hcm.use_remote_address).toBe(true);
  });
});
