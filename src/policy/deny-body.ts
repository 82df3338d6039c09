// `denyBody:` — the JSON body of denials, shaped by the policy (issue 17 §3). Each API keeps its
// own error format: seed 002's `{"error":"Insufficient scope","code":"FORBIDDEN","status":403}`,
// a FastAPI service's `{"detail":"…"}`. Without the section the body is the default of DESIGN.md.
//
// Templates are JSON values whose strings may hold {{placeholders}}. They are rendered when the
// policy is compiled, per reason (and per policy message on first use), into fixed text around the
// request-id slots; a request only splices its escaped id in. Every value is escaped as a JSON
// string, so the body stays valid JSON and no value can add a field.

import { z } from 'zod';
import { REASONS, STATUS_LABELS, type HttpDenyStatus, type ReasonCode } from '../reasons.js';
import type { PolicyDenial } from '../types.js';
import type { CompileContext, PolicyPath } from './context.js';

type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

const jsonValueSchema: z.ZodType<JsonValue> = z.lazy(() =>
  z.union([z.string(), z.number(), z.boolean(), z.null(), z.array(jsonValueSchema), z.record(z.string(), jsonValueSchema)]),
);
/** A body template: a JSON object. */
const templateSchema = z.record(z.string(), jsonValueSchema);

export const denyBodySchema = z.strictObject({
  /** The body of every denial (unless byStatus/byReason says otherwise). Default: DESIGN.md's body. */
  template: templateSchema.optional(),
  /** {{message}} per reason code or per status (401, 403, 429, 503); a reason's wins. Default: the status label. */
  messages: z.record(z.string(), z.string()).default({}),
  /** A template per status. */
  byStatus: z.record(z.string(), z.strictObject({ template: templateSchema })).default({}),
  /** A template per reason code (wins over byStatus). */
  byReason: z.record(z.string(), z.strictObject({ template: templateSchema })).default({}),
});
export type DenyBodyConfig = z.output<typeof denyBodySchema>;

export const PLACEHOLDERS = ['status', 'code', 'reason', 'requestId', 'message', 'error'] as const;
const PLACEHOLDER = /\{\{\s*([A-Za-z_]+)\s*\}\}/g;
const WHOLE = /^\{\{\s*([A-Za-z_]+)\s*\}\}$/;
const DENY_STATUSES = Object.keys(STATUS_LABELS);

/** Slot kinds: the request id as a whole JSON string, or inside a JSON string. */
const QUOTED = 0;
const INNER = 1;

/**
 * A rendered body: `fixed[0] + id + fixed[1] + id + … + fixed[n]`, where each id is the escaped
 * request id (slots[i] says whether with its quotes). fixed.length === slots.length + 1.
 */
export interface BodyParts {
  readonly fixed: readonly string[];
  readonly slots: readonly number[];
}

export function renderBody(parts: BodyParts, requestId: string): string {
  const { fixed, slots } = parts;
  if (slots.length === 0) return fixed[0]!;
  const quoted = JSON.stringify(requestId);
  if (slots.length === 1) return fixed[0]! + (slots[0] === QUOTED ? quoted : quoted.slice(1, -1)) + fixed[1]!;
  const inner = quoted.slice(1, -1);
  let out = fixed[0]!;
  for (let i = 0; i < slots.length; i++) out += (slots[i] === QUOTED ? quoted : inner) + fixed[i + 1]!;
  return out;
}

/** DESIGN.md's body, per reason: built once per reason for the whole process. */
const defaultByReason = new Map<ReasonCode, BodyParts>();
/** … and per route rule (frozen with its compiled policy): once per rule. */
const defaultByRule = new WeakMap<PolicyDenial, BodyParts>();

export function defaultBodyParts(reason: ReasonCode, rule?: PolicyDenial): BodyParts {
  if (rule !== undefined) {
    let parts = defaultByRule.get(rule);
    if (parts === undefined) {
      const label = STATUS_LABELS[rule.status];
      const message = rule.message !== undefined ? `"message":${JSON.stringify(rule.message)},` : '';
      parts = quotedIdAtEnd(`{"error":"${label.error}","code":"${label.code}","status":${rule.status},"reason":${JSON.stringify(rule.reason)},${message}"requestId":`);
      defaultByRule.set(rule, parts);
    }
    return parts;
  }
  let parts = defaultByReason.get(reason);
  if (parts === undefined) {
    const status = REASONS[reason].status;
    const label = STATUS_LABELS[status];
    parts = quotedIdAtEnd(`{"error":"${label.error}","code":"${label.code}","status":${status},"reason":"${reason}","requestId":`);
    defaultByReason.set(reason, parts);
  }
  return parts;
}

function quotedIdAtEnd(prefix: string): BodyParts {
  return Object.freeze({ fixed: Object.freeze([prefix, '}']), slots: Object.freeze([QUOTED]) });
}

interface Shape {
  readonly template: Record<string, JsonValue> | undefined;
  readonly message: string;
}

export class DenyBodyShaper {
  private readonly byReason = new Map<ReasonCode, BodyParts>();
  private readonly byRule = new WeakMap<PolicyDenial, BodyParts>();

  private constructor(
    /** Per built-in reason. */
    private readonly shapes: ReadonlyMap<ReasonCode, Shape>,
    /** Per status, for route rules' own denials (their reason codes are the policy's). */
    private readonly statusShapes: ReadonlyMap<number, Shape>,
  ) {
    for (const reason of Object.keys(REASONS) as ReasonCode[]) this.byReason.set(reason, this.render(shapes.get(reason)!, REASONS[reason].status, reason, undefined));
  }

  /** The body of a denial with `reason`, or of a route rule's own denial. */
  parts(reason: ReasonCode, rule?: PolicyDenial): BodyParts {
    if (rule === undefined) return this.byReason.get(reason)!;
    let parts = this.byRule.get(rule);
    if (parts === undefined) {
      parts = this.render(this.statusShapes.get(rule.status)!, rule.status, rule.reason, rule.message, rule);
      this.byRule.set(rule, parts);
    }
    return parts;
  }

  private render(shape: Shape, status: HttpDenyStatus, reason: string, message: string | undefined, rule?: PolicyDenial): BodyParts {
    if (shape.template === undefined) return defaultBodyParts(reason as ReasonCode, rule);
    const label = STATUS_LABELS[status];
    const values: Record<string, string> = { status: String(status), code: label.code, reason, message: message ?? shape.message, error: label.error };
    const out = new Builder();
    renderValue(shape.template, values, status, out);
    return out.finish();
  }

  /** Check the section (placeholders, reason and status keys) and compile it; undefined if absent. */
  static compile(config: DenyBodyConfig | undefined, ctx: CompileContext): DenyBodyShaper | undefined {
    if (config === undefined) return undefined;
    const at: PolicyPath = ['denyBody'];
    let ok = true;
    const fail = (path: PolicyPath, message: string) => {
      ctx.error(path, message);
      ok = false;
    };
    const deny = `a deny status (${DENY_STATUSES.join(', ')})`;
    for (const key of Object.keys(config.messages)) {
      if (!isReason(key) && !DENY_STATUSES.includes(key)) fail([...at, 'messages', key], `not a reason code or ${deny}`);
    }
    for (const key of Object.keys(config.byStatus)) if (!DENY_STATUSES.includes(key)) fail([...at, 'byStatus', key], `not ${deny}`);
    for (const key of Object.keys(config.byReason)) if (!isReason(key)) fail([...at, 'byReason', key], 'not a reason code');
    if (config.template) checkPlaceholders(config.template, [...at, 'template'], fail);
    for (const [key, shape] of Object.entries(config.byStatus)) checkPlaceholders(shape.template, [...at, 'byStatus', key, 'template'], fail);
    for (const [key, shape] of Object.entries(config.byReason)) checkPlaceholders(shape.template, [...at, 'byReason', key, 'template'], fail);
    if (!ok) return undefined;

    const shapes = new Map<ReasonCode, Shape>();
    for (const reason of Object.keys(REASONS) as ReasonCode[]) {
      const status = String(REASONS[reason].status);
      const template = own(config.byReason, reason)?.template ?? own(config.byStatus, status)?.template ?? config.template;
      const message = own(config.messages, reason) ?? own(config.messages, status) ?? STATUS_LABELS[REASONS[reason].status].error;
      shapes.set(reason, { template, message });
    }
    const statusShapes = new Map<number, Shape>();
    for (const status of DENY_STATUSES) {
      const template = own(config.byStatus, status)?.template ?? config.template;
      statusShapes.set(Number(status), { template, message: own(config.messages, status) ?? STATUS_LABELS[Number(status) as HttpDenyStatus].error });
    }
    return new DenyBodyShaper(shapes, statusShapes);
  }
}

function own<T>(record: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

function isReason(key: string): key is ReasonCode {
  return Object.hasOwn(REASONS, key);
}

function checkPlaceholders(value: JsonValue, path: PolicyPath, fail: (path: PolicyPath, message: string) => void): void {
  if (typeof value === 'string') {
    for (const match of value.matchAll(PLACEHOLDER)) {
      if (!(PLACEHOLDERS as readonly string[]).includes(match[1]!)) fail(path, `unknown placeholder ${match[0]} (known: ${PLACEHOLDERS.join(', ')})`);
    }
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => checkPlaceholders(item, [...path, i], fail));
  } else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) checkPlaceholders(item, [...path, key], fail);
  }
}

class Builder {
  private readonly fixed: string[] = [];
  private readonly slots: number[] = [];
  text = '';

  slot(kind: number): void {
    this.fixed.push(this.text);
    this.slots.push(kind);
    this.text = '';
  }

  finish(): BodyParts {
    return Object.freeze({ fixed: Object.freeze([...this.fixed, this.text]), slots: Object.freeze([...this.slots]) });
  }
}

/** JSON string content (no quotes) of `text`. */
const escape = (text: string): string => JSON.stringify(text).slice(1, -1);

function renderValue(value: JsonValue, values: Record<string, string>, status: number, out: Builder): void {
  if (typeof value === 'string') {
    const whole = WHOLE.exec(value)?.[1];
    if (whole === 'status') {
      out.text += String(status); // a number, as in seed 002's bodies
      return;
    }
    if (whole === 'requestId') {
      out.slot(QUOTED);
      return;
    }
    out.text += '"';
    let last = 0;
    for (const match of value.matchAll(PLACEHOLDER)) {
      out.text += escape(value.slice(last, match.index));
      if (match[1] === 'requestId') out.slot(INNER);
      else out.text += escape(values[match[1]!]!);
      last = match.index + match[0].length;
    }
    out.text += escape(value.slice(last)) + '"';
  } else if (Array.isArray(value)) {
    out.text += '[';
    value.forEach((item, i) => {
      if (i > 0) out.text += ',';
      renderValue(item, values, status, out);
    });
    out.text += ']';
  } else if (value !== null && typeof value === 'object') {
    out.text += '{';
    Object.entries(value).forEach(([key, item], i) => {
      out.text += `${i > 0 ? ',' : ''}${JSON.stringify(key)}:`;
      renderValue(item, values, status, out);
    });
    out.text += '}';
  } else {
    out.text += JSON.stringify(value);
  }
}
