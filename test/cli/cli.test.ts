// The portcullis command as a user runs it: validate's exit codes and messages, and serve as a
// real child process that answers checks and exits cleanly on SIGTERM.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function io(env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t), env }, out, err };
}

function tempPolicy(text: string): string {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'pc-cli-')), 'policy.yaml');
  writeFileSync(file, text);
  return file;
}

describe('portcullis validate', () => {
  it('exits 0 for the quickstart example policy', async () => {
    const { io: cli, out } = io();
    expect(await runCli(['validate', '--config', path.join(ROOT, 'examples/portcullis.yaml')], cli)).toBe(0);
    expect(out.join('')).toMatch(/OK \(\d+ routes/);
  });

  it('exits 1 and lists every problem with file:line:col', async () => {
    const file = tempPolicy('mode: sometimes\nroutes:\n  - match: { path: /x }\n    pubic: true\n');
    const { io: cli, err } = io();
    expect(await runCli(['validate', '--config', file], cli)).toBe(1);
    const text = err.join('');
    expect(text).toContain(`${file}:1:7: mode: must be one of "enforce", "dev"`);
    expect(text).toContain(`${file}:4:5: routes[0].pubic: unknown key "pubic"`);
    expect(text).toContain('2 problems');
  });

  it('exits 1 on an empty or comment-only file (never a policy)', async () => {
    for (const text of ['', '# nothing here yet\n', '---\n']) {
      const file = tempPolicy(text);
      const { io: cli, err } = io();
      expect(await runCli(['validate', '--config', file], cli)).toBe(1);
      expect(err.join('')).toContain(`${file}:1:1: the policy is empty`);
    }
  });

  it('exits 2 on usage errors', async () => {
    expect(await runCli(['validate'], io().io)).toBe(2);
    expect(await runCli(['serve', '--config', 'x', '--grpc-port', 'abc'], io().io)).toBe(2);
    expect(await runCli(['frobnicate'], io().io)).toBe(2);
  });
});

describe('portcullis serve (child process)', () => {
  it('serves, reports ready, and exits 0 on SIGTERM', async () => {
    const file = tempPolicy('server: { decisionLog: none }\nroutes:\n  - { match: { path: /health }, public: true }\n');
    // The built program, as users run it (npm test builds first).
    const entry = path.join(ROOT, 'dist/cli.js');
    if (!existsSync(entry)) throw new Error('dist/cli.js missing: run `npm run build` before the tests (npm test does)');
    const server = spawn(process.execPath, [entry, 'serve', '--config', file, '--grpc-port', '0', '--http-port', '0', '--bind', '127.0.0.1', '--drain-delay', '0s'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let logs = '';
    server.stdout.on('data', (d) => (logs += d));
    server.stderr.on('data', (d) => (logs += d));
    const httpPort = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ready line: ${logs}`)), 10_000);
      server.stdout.on('data', () => {
        const m = /"msg":"portcullis ready"/.test(logs) && /"httpPort":(\d+)/.exec(logs);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
    });
    expect((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status).toBe(200);
    server.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => server.on('exit', resolve));
    expect(code).toBe(0);
    expect(logs).toContain('shutdown complete');
  });
});

describe('portcullis serve settings (issue 20 §6)', () => {
  const missing = path.join(tmpdir(), 'pc-cli-no-such-dir', 'policy.yaml');

  it('refuses a bad log level with a clean message naming the valid levels (no stack trace)', async () => {
    for (const [args, env, source] of [
      [[], { PORTCULLIS_LOG_LEVEL: 'verbose' }, 'PORTCULLIS_LOG_LEVEL'],
      [['--log-level', 'loud'], {}, '--log-level'],
      [['--log-level', 'chatty'], { PORTCULLIS_LOG_LEVEL: 'info' }, '--log-level'],
    ] as const) {
      const { io: cli, err } = io({ ...env });
      expect(await runCli(['serve', '--config', missing, ...args], cli)).toBe(2);
      const text = err.join('');
      expect(text).toContain(`${source} must be one of fatal, error, warn, info, debug, trace, silent`);
      expect(text).not.toMatch(/\n\s+at /);
    }
  });

  it('accepts the policy duration syntax in --drain-timeout and --drain-delay, and refuses anything else', async () => {
    for (const value of ['1m', '1.5s', '250ms', '30']) {
      const { io: cli, err } = io();
      // Past flag parsing, the missing file is the only problem: exit 1 "refusing to start".
      expect(await runCli(['serve', '--config', missing, '--drain-timeout', value, '--drain-delay', value], cli)).toBe(1);
      expect(err.join('')).toContain('refusing to start');
    }
    const { io: cli, err } = io();
    expect(await runCli(['serve', '--config', missing, '--drain-timeout', 'soon'], cli)).toBe(2);
    expect(err.join('')).toContain('--drain-timeout must be a duration: a number with ms, s, m, h or d');
    const settle = io();
    expect(await runCli(['serve', '--config', missing, '--reload-settle', '2 seconds'], settle.io)).toBe(2);
    expect(settle.err.join('')).toContain('--reload-settle must be a duration');
  });
});
