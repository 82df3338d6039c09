// `portcullis keys …` and `portcullis migrate`, run in-process against one schema of the test
// PostgreSQL database (the tests that need a real key store each make their own schema).

import { expect } from 'vitest';
import { runKeysCommand } from '../../src/keys/cli.js';
import { DATABASE_URL } from './services.js';

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

/** Run `argv` with `--store` and `--schema` of the test database; `run` is runKeysCommand or runMigrateCommand. */
export async function keyStoreCli(schema: string, argv: string[], run: typeof runKeysCommand = runKeysCommand): Promise<CliRun> {
  let out = '';
  let err = '';
  const code = await run([...argv, '--store', DATABASE_URL, '--schema', schema], { out: (s) => (out += s), err: (s) => (err += s), env: {} });
  return { code, out, err };
}

/** keyStoreCli that must succeed (exit 0, nothing on stderr); its output. */
export async function keyStoreCliOut(schema: string, argv: string[], run: typeof runKeysCommand = runKeysCommand): Promise<string> {
  const { code, out, err } = await keyStoreCli(schema, argv, run);
  expect(err).toBe('');
  expect(code).toBe(0);
  return out;
}
