// `portcullis keys` and `portcullis migrate` against the file store (PostgreSQL: postgres.test.ts).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runKeysCommand, runMigrateCommand } from '../../src/keys/cli.js';
import { hasValidChecksum } from '../../src/keys/format.js';
import { sha256Hex } from '../../src/keys/hashing.js';
import { tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

async function cli(argv: string[], env: Record<string, string> = {}, run = runKeysCommand) {
  let out = '';
  let err = '';
  const code = await run(argv, { out: (s) => (out += s), err: (s) => (err += s), env });
  return { code, out, err };
}

describe('portcullis keys (file store)', () => {
  const store = `file:${path.join(tmp.dir, 'keys.yaml')}`;
  let created: { key: string; id: string };

  it('creates a key, prints it once, and stores only its hash', async () => {
    const { code, out } = await cli(['create', '--store', store, '--tenant', 'acme', '--name', 'ci', '--scopes', 'orders:read,orders:write', '--expires-in', '90d', '--prefix', 'flotac_api_key_live_', '--json']);
    expect(code).toBe(0);
    const printed = JSON.parse(out) as { key: string; id: string; scopes: string[]; status: string; expiresAt: string };
    expect(hasValidChecksum(printed.key)).toBe(true);
    expect(printed.key.startsWith('flotac_api_key_live_')).toBe(true);
    expect(printed.scopes).toEqual(['orders:read', 'orders:write']);
    expect(printed.status).toBe('active');
    expect(Date.parse(printed.expiresAt) - Date.now()).toBeGreaterThan(89 * 86_400_000);
    created = printed;
    const file = readFileSync(path.join(tmp.dir, 'keys.yaml'), 'utf8');
    expect(file).not.toContain(printed.key);
    expect(file).not.toContain(printed.key.slice(-43)); // not even the secret part
    expect(file).toContain(sha256Hex(printed.key));
  });

  it('prints the key in the human output too, with a warning that it is shown once', async () => {
    const { code, out } = await cli(['create', '--store', store, '--tenant', 'acme', '--name', 'human', '--expires-in', '1d']);
    expect(code).toBe(0);
    expect(out).toContain('shown this once');
    expect(out).toMatch(/\nportcullis_[0-9A-Za-z]{55}\n$/);
  });

  it('lists keys without secrets', async () => {
    const { code, out } = await cli(['list', '--store', store]);
    expect(code).toBe(0);
    expect(out).toContain(created.id);
    expect(out).toContain(created.key.slice(0, 'flotac_api_key_live_'.length + 6));
    expect(out).not.toContain(created.key);
    expect(out).not.toContain(sha256Hex(created.key));
    const json = await cli(['list', '--store', store, '--tenant', 'acme', '--json']);
    const rows = JSON.parse(json.out) as { id: string; hash?: string }[];
    expect(rows.map((r) => r.id)).toContain(created.id);
    expect(rows.every((r) => r.hash === undefined)).toBe(true);
  });

  it('rotates with a grace period and revokes', async () => {
    const rotated = await cli(['rotate', created.id, '--store', store, '--grace', '24h', '--json']);
    expect(rotated.code).toBe(0);
    const successor = JSON.parse(rotated.out) as { key: string; id: string; name: string };
    expect(successor.name).toBe('ci');
    expect(successor.key).not.toBe(created.key);
    const listed = JSON.parse((await cli(['list', '--store', store, '--json'])).out) as { id: string; rotatedTo: string | null; expiresAt: string }[];
    const old = listed.find((r) => r.id === created.id)!;
    expect(old.rotatedTo).toBe(successor.id);
    expect(Math.abs(Date.parse(old.expiresAt) - (Date.now() + 86_400_000))).toBeLessThan(60_000);

    const again = await cli(['rotate', created.id, '--store', store]);
    expect(again.code).toBe(1);
    expect(again.err).toContain('already rotated');

    expect((await cli(['revoke', successor.id, '--store', store])).code).toBe(0);
    const twice = await cli(['revoke', successor.id, '--store', store]);
    expect(twice.code).toBe(0);
    expect(twice.out).toContain('already revoked');
    const status = JSON.parse((await cli(['list', '--store', store, '--json'])).out) as { id: string; status: string }[];
    expect(status.find((r) => r.id === successor.id)!.status).toBe('revoked');
  });

  it('imports a plaintext key from an environment variable and a bcrypt hash', async () => {
    const legacy = 'flotac_api_key_live_' + 'ab'.repeat(32);
    const plain = await cli(['import', '--store', store, '--tenant', 'c-7', '--name', 'old', '--expires-in', '30d', '--key-env', 'LEGACY_KEY', '--prefix', 'flotac_api_key_live_', '--json'], { LEGACY_KEY: legacy });
    expect(plain.code).toBe(0);
    expect(JSON.parse(plain.out)).toMatchObject({ tenant: 'c-7', displayPrefix: 'flotac_api_key_live_ababab', hashAlgorithm: 'sha256' });
    expect(plain.out).not.toContain(legacy);

    const bcrypt = await cli([
      'import', '--store', store, '--tenant', 'app-1', '--name', 'svc', '--expires-at', new Date(Date.now() + 86_400_000).toISOString(),
      '--bcrypt', '$2b$04$abcdefghijklmnopqrstuu5AaBbCcDdEeFfGgHhIiJjKkLlMmNnOo', '--prefix', 'ak_', '--display-prefix', 'ak_Abc123', '--id', 'tronexus-key-1',
    ]);
    expect(bcrypt.err).toBe('');
    expect(bcrypt.code).toBe(0);
    expect(bcrypt.out).toContain('imported key tronexus-key-1');
  });

  it('refuses a lifetime beyond maxExpiry and keys without expiry', async () => {
    const tooLong = await cli(['create', '--store', store, '--tenant', 'acme', '--name', 'x', '--expires-in', '400d']);
    expect(tooLong.code).toBe(2);
    expect(tooLong.err).toContain('at most 365 days');
    const none = await cli(['create', '--store', store, '--tenant', 'acme', '--name', 'x']);
    expect(none.code).toBe(2);
    expect(none.err).toContain('--expires-in is required');
  });

  it('reports usage errors with exit code 2 and unknown ids with 1', async () => {
    expect((await cli(['create', '--tenant', 'acme'])).code).toBe(2); // no store
    expect((await cli(['frobnicate'])).code).toBe(2);
    expect((await cli(['create', '--store', store, '--bogus'])).code).toBe(2);
    const missing = await cli(['revoke', 'no-such-id', '--store', store]);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('no key with id no-such-id');
  });

  it('finds the store through the policy file (--config) and says the file store needs no migration', async () => {
    const policy = path.join(tmp.dir, 'policy.yaml');
    writeFileSync(policy, 'keyStore:\n  file: { path: other-keys.yaml }\n');
    const created = await cli(['create', '--config', policy, '--tenant', 't', '--name', 'n', '--expires-in', '1d', '--json']);
    expect(created.code).toBe(0);
    expect(readFileSync(path.join(tmp.dir, 'other-keys.yaml'), 'utf8')).toContain(JSON.parse(created.out).id);
    const migrate = await cli(['--config', policy], {}, runMigrateCommand);
    expect(migrate.code).toBe(0);
    expect(migrate.out).toContain('nothing to migrate');
  });
});
