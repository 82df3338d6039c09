import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';
import { allowDirectLines } from './decision-log.js';

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

/** How many bytes of log lines may wait for stdout before new lines are dropped (and counted). */
export const DEFAULT_LOG_BUFFER_BYTES = 8 * 1024 * 1024;

export type ServerDestination = DestinationStream & { flushSync(): void; end(): void; on(event: string, listener: (...args: unknown[]) => void): unknown; droppedLines: number };

/**
 * stdout for a server: asynchronous, so a burst of decision lines is written in large batches
 * rather than one write(2) per check. Bounded: when stdout does not keep up (a blocked pipe, a
 * slow log shipper) and `maxBufferBytes` are already waiting, new lines are dropped rather than
 * held without limit, and counted (droppedLines; the metric portcullis_log_lines_dropped_total).
 * Call flushSync() before the process exits.
 */
export function serverDestination(options: { dest?: number | string; maxBufferBytes?: number } = {}): ServerDestination {
  const stream = pino.destination({ dest: options.dest ?? 1, sync: false, maxLength: options.maxBufferBytes ?? DEFAULT_LOG_BUFFER_BYTES }) as unknown as ServerDestination;
  stream.droppedLines = 0;
  stream.on('drop', (data: unknown) => {
    const text = String(data);
    let lines = 0;
    for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) lines++;
    stream.droppedLines += Math.max(1, lines);
  });
  return stream;
}

/** Lines the logger's destination dropped so far (0 for a destination that never drops). */
export function droppedLinesOf(logger: Logger): number {
  const stream = (logger as unknown as Record<symbol, { droppedLines?: number } | undefined>)[pino.symbols.streamSym];
  return stream?.droppedLines ?? 0;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const logger = pino(
    {
      level: options.level ?? 'info',
      base: { service: 'portcullis' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination,
  );
  // Decision lines (decision-log.ts) may be written straight to the destination: this logger's
  // level and time formats are the ones that module writes.
  allowDirectLines(logger);
  return logger;
}

/** A logger that drops everything (tests, CLI commands that print their own output). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
