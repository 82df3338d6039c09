import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';

export type { Logger };

/**
 * Every path that could carry a credential, redacted from every log line. Decision logs never
 * include headers in the first place; this list is the safety net for error objects and debug logs.
 */
export const REDACT_PATHS = [
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]',
  'headers["proxy-authorization"]',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["x-api-key"]',
  'token',
  'key',
  'secret',
  'password',
  'apiKey',
  '*.token',
  '*.key',
  '*.secret',
  '*.password',
];

export interface LoggerOptions {
  level?: LevelWithSilent;
  destination?: DestinationStream;
}

/**
 * stdout for a server: asynchronous, so a burst of decision lines is written in large batches
 * rather than one write(2) per check. Call flushSync() before the process exits.
 */
export function serverDestination(): DestinationStream & { flushSync(): void } {
  return pino.destination({ dest: 1, sync: false });
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'portcullis' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination,
  );
}

/** A logger that drops everything (tests, CLI commands that print their own output). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
