import { z } from 'zod';

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** What every duration accepts, for messages. */
export const DURATION_SYNTAX = 'a number with ms, s, m, h or d (e.g. "500ms", "60s", "15m"); a bare number is seconds';

/**
 * The one duration syntax (policy fields, CLI flags, environment): "250ms", "60s", "1.5s", "15m",
 * "24h", "365d", or a bare number of seconds → milliseconds; undefined when not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 's']!);
}

/** A duration in the policy file: "15m" style, or a bare number of seconds. Parsed to ms. */
export const durationSchema = z.union([z.number().nonnegative(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return Math.round(value * 1000);
  const ms = parseDuration(value);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `invalid duration "${value}": use ${DURATION_SYNTAX}` });
    return z.NEVER;
  }
  return ms;
});

const RATE = /^(\d+(?:\.\d+)?)\s*\/\s*(\d+)?\s*(ms|s|sec|second|m|min|minute|h|hour|d|day)$/;
const RATE_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, sec: 1000, second: 1000, m: 60_000, min: 60_000, minute: 60_000, h: 3_600_000, hour: 3_600_000, d: 86_400_000, day: 86_400_000 };

export interface Rate {
  /** Requests allowed per `periodMs`. */
  readonly count: number;
  readonly periodMs: number;
}

/** "100/min", "10/s", "5000/hour", "20/60s" → { count, periodMs }; undefined when not a rate. */
export function parseRate(text: string): Rate | undefined {
  const m = RATE.exec(text.trim());
  if (!m) return undefined;
  const count = Number(m[1]);
  const periodMs = (m[2] ? Number(m[2]) : 1) * RATE_UNIT_MS[m[3]!]!;
  if (!(count > 0) || !(periodMs > 0)) return undefined;
  return { count, periodMs };
}

export const rateSchema = z.string().transform((value, ctx) => {
  const rate = parseRate(value);
  if (!rate) {
    ctx.addIssue({ code: 'custom', message: `invalid rate "${value}": use COUNT/UNIT (e.g. "100/min", "10/s", "20/60s")` });
    return z.NEVER;
  }
  return rate;
});

/** HTTP header names as Envoy sends them: lower-case tokens. Upper case is accepted and lowered. */
export const headerNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be an HTTP header name')
  .transform((s) => s.toLowerCase());
