// Running the built `portcullis` program as a child process, as users and CI run it.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ENTRY = path.join(ROOT, 'dist/cli.js');

export interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function portcullis(args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<Run> {
  if (!existsSync(ENTRY)) throw new Error('dist/cli.js missing: run `npm run build` before the tests (npm test does)');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ENTRY, ...args], {
      cwd: options.cwd ?? ROOT,
      env: { PATH: process.env.PATH ?? '', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), 'pc-cli-'));
}

export function tempFile(name: string, text: string, dir = tempDir()): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}
