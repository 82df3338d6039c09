// Flag parsing shared by the commands: every command answers --help with its own usage, and a
// usage error prints what was wrong followed by that command's usage (exit 2).

import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { CliIo } from './io.js';

export type Options = NonNullable<ParseArgsConfig['options']>;

export interface Parsed {
  readonly values: Record<string, string | boolean | string[] | undefined>;
  readonly positionals: string[];
}

/** Parsed flags, or the exit code to return (0 after --help, 2 after a usage error). */
export function parseCommand(args: string[], options: Options, usage: string, io: CliIo, allowPositionals = false): Parsed | number {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(usage);
    return 0;
  }
  try {
    const parsed = parseArgs({ args, options, strict: true, allowPositionals });
    return { values: parsed.values as Parsed['values'], positionals: parsed.positionals };
  } catch (err) {
    return usageError((err as Error).message, usage, io);
  }
}

export function usageError(message: string, usage: string, io: CliIo): number {
  io.err(`${message}\n\n${usage}`);
  return 2;
}
