// The decision log: one JSON line per logged check, written straight to the logger's destination.
//
// The entry has a fixed shape made only of identifiers (never headers, never credentials), so it
// skips pino's per-line work that exists for arbitrary objects: the redaction pass (which cost
// more than the whole authorization of a cached JWT) and the generic serializer. The line is the
// one pino would write — same fields, same order, same level and time format — and goes through
// the same asynchronous, bounded destination (logger.ts), so lines from both paths interleave
// whole. A logger that is not the plain shape this expects (tests' custom streams, another level
// formatter) gets pino's own path.

import { pino } from 'pino';
import type { Logger } from './logger.js';

export interface DecisionEntry {
  requestId: string;
  decision: 'allow' | 'deny';
  reason: string;
  route: string;
  method: string;
  host: string;
  path: string;
  auth: string | undefined;
  tenant: string | undefined;
  subject: string | undefined;
  keyId: string | undefined;
  status: number | undefined;
  detail: string | undefined;
  latencyMs: number;
  /** server.explain: the decision's explanation (an object: written through pino, redaction included). */
  explain?: unknown;
  trace_id: string | undefined;
  span_id: string | undefined;
}

interface LineStream {
  write(line: string): unknown;
}

/** Loggers made by createLogger() whose lines this module may write itself (see logger.ts). */
const DIRECT = new WeakSet<Logger>();

export function allowDirectLines(logger: Logger): void {
  DIRECT.add(logger);
}

export class DecisionLog {
  private readonly stream: LineStream | undefined;
  private readonly bindings: string;
  private lastMs = -1;
  private lastTime = '';

  constructor(private readonly logger: Logger) {
    const stream = DIRECT.has(logger) ? (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] : undefined;
    this.stream = typeof (stream as LineStream | undefined)?.write === 'function' ? (stream as LineStream) : undefined;
    this.bindings = String((logger as unknown as Record<symbol, unknown>)[pino.symbols.chindingsSym] ?? '');
  }

  /** A decision at info (or `error` for a failure inside Portcullis). */
  write(entry: DecisionEntry, level: 'info' | 'error', message: string): void {
    if (!this.logger.isLevelEnabled(level)) return;
    if (this.stream === undefined || entry.explain !== undefined) {
      this.logger[level](entry, message);
      return;
    }
    this.stream.write(this.line(entry, level, message));
  }

  /** The line pino writes for `logger[level](entry, message)` with createLogger()'s options. */
  line(e: DecisionEntry, level: 'info' | 'error', message: string): string {
    let s = `{"level":"${level}","time":"${this.isoTime()}"${this.bindings},"requestId":${JSON.stringify(e.requestId)},"decision":"${e.decision}","reason":${JSON.stringify(e.reason)},"route":${JSON.stringify(e.route)},"method":${JSON.stringify(e.method)},"host":${JSON.stringify(e.host)},"path":${JSON.stringify(e.path)}`;
    if (e.auth !== undefined) s += `,"auth":${JSON.stringify(e.auth)}`;
    if (e.tenant !== undefined) s += `,"tenant":${JSON.stringify(e.tenant)}`;
    if (e.subject !== undefined) s += `,"subject":${JSON.stringify(e.subject)}`;
    if (e.keyId !== undefined) s += `,"keyId":${JSON.stringify(e.keyId)}`;
    if (e.status !== undefined) s += `,"status":${e.status}`;
    if (e.detail !== undefined) s += `,"detail":${JSON.stringify(e.detail)}`;
    s += `,"latencyMs":${Number.isFinite(e.latencyMs) ? e.latencyMs : null}`;
    if (e.trace_id !== undefined) s += `,"trace_id":${JSON.stringify(e.trace_id)}`;
    if (e.span_id !== undefined) s += `,"span_id":${JSON.stringify(e.span_id)}`;
    return `${s},"msg":${JSON.stringify(message)}}\n`;
  }

  /** ISO time, formatted once per millisecond. */
  private isoTime(): string {
    const now = Date.now();
    if (now !== this.lastMs) {
      this.lastMs = now;
      this.lastTime = new Date(now).toISOString();
    }
    return this.lastTime;
  }
}
