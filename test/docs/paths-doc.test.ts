// README "Paths, hosts and client addresses" and examples/envoy agree on one Envoy setting.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');
const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const envoy = readFileSync(path.join(ROOT, 'examples/envoy/envoy.yaml'), 'utf8');

describe('recommended Envoy path and header settings', () => {
  const section = readme.slice(readme.indexOf('### What the proxy must be set to'), readme.indexOf('### Client addresses'));
  const settings = ['normalize_path', 'merge_slashes', 'path_with_escaped_slashes_action', 'headers_with_underscores_action'];

  it.each(settings)('%s has the same value in README and envoy.yaml', (name) => {
    const inReadme = new RegExp(`^\\s*${name}: (\\S+)`, 'm').exec(section)?.[1];
    const inEnvoy = new RegExp(`^\\s*${name}: (\\S+)`, 'm').exec(envoy)?.[1];
    expect(inReadme).toBeDefined();
    expect(inEnvoy).toBe(inReadme);
  });

  it('names every Istio pathNormalization value', () => {
    for (const value of ['NONE', 'BASE', 'MERGE_SLASHES', 'DECODE_AND_MERGE_SLASHES']) expect(section).toContain(`| \`${value}\``);
  });
});
