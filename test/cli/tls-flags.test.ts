// serve's TLS flags: --tls-cert and --tls-key go together, --tls-client-ca needs both; the usage
// text names them. (TLS itself: test/transport/tls.test.ts.)

import { describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli.js';

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t), env: {} }, out, err };
}

describe('serve --tls-*', () => {
  for (const args of [['--tls-cert', 'a.crt'], ['--tls-key', 'a.key'], ['--tls-client-ca', 'ca.crt'], ['--tls-cert', 'a.crt', '--tls-client-ca', 'ca.crt']]) {
    it(`refuses ${args.join(' ')} (usage error, exit 2)`, async () => {
      const { io: cli, err } = io();
      expect(await runCli(['serve', '--config', 'policy.yaml', ...args], cli)).toBe(2);
      expect(err.join('')).toContain('--tls-cert and --tls-key go together');
    });
  }

  it('lists the flags in the usage text', async () => {
    const { io: cli, out, err } = io();
    await runCli(['--help'], cli);
    expect(out.join('') + err.join('')).toContain('--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]');
  });
});
