// `${VAR}` interpolation of policy values, and what it takes to never echo an interpolated value.
//
// Secrets reach the policy through the environment ("${WEBHOOK_SECRET}"), so a message about an
// interpolated field names the variable and the field, never the value. A scalar that is exactly
// one reference ("${LIMIT}", quoted or not) may feed a numeric field: when the field refuses the
// string and the value is a plain decimal number, the number is used instead.

import { isScalar, isSeq, visit, type Document, type Node } from 'yaml';
import { formatPath, type PolicyIssue } from '../errors.js';

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$\{/g;
const EXACT_REF = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
const DECIMAL = /^-?\d+(?:\.\d+)?$/;
/** Values this long are scrubbed from every message, whatever field it is about. */
const SCRUB_MIN_LENGTH = 6;

export type Env = Readonly<Record<string, string | undefined>>;

export interface Interpolation {
  readonly path: readonly (string | number)[];
  /** Variables referenced by the scalar, in order. */
  readonly names: readonly string[];
  /** The scalar after interpolation. */
  readonly value: string;
  /** The scalar was exactly one reference: its value may stand for a number. */
  readonly exact: boolean;
  /** A variable was not set and a placeholder stands in (its value cannot be judged). */
  readonly placeholder?: boolean;
}

export class Interpolations {
  private readonly byPath = new Map<string, Interpolation>();

  add(item: Interpolation): void {
    this.byPath.set(key(item.path), item);
  }

  at(path: readonly (string | number)[]): Interpolation | undefined {
    return this.byPath.get(key(path));
  }

  /** The number an exact reference stands for, when its value is a plain decimal number. */
  numberAt(path: readonly (string | number)[]): number | undefined {
    const item = this.at(path);
    if (item?.exact && item.placeholder) return 1;
    return item?.exact && DECIMAL.test(item.value.trim()) ? Number(item.value.trim()) : undefined;
  }

  /**
   * A message about `path` that names the variable instead of echoing its value. Every value long
   * enough to be a secret is scrubbed from every message, whichever field the message is about.
   */
  redact(path: readonly (string | number)[], message: string): string {
    let out = message;
    const item = this.at(path);
    if (item && item.value.length > 0) {
      const vars = describeVars(item.names);
      const quoted = `"${item.value}"`;
      const named = out.includes(quoted);
      if (named) out = out.split(quoted).join(`from ${vars}`);
      if (out.includes(item.value)) out = `the value of ${vars} is not valid here`;
      else if (!named && !item.names.every((name) => out.includes(`environment variable ${name}`))) out = `${out} (value from ${vars})`;
    }
    for (const other of this.byPath.values()) {
      if (other === item || other.value.length < SCRUB_MIN_LENGTH || !out.includes(other.value)) continue;
      out = out.split(other.value).join(`<${describeVars(other.names)} at ${formatPath(other.path)}>`);
    }
    return out;
  }

  redactIssue(issue: PolicyIssue): PolicyIssue {
    if (this.byPath.size === 0) return issue;
    const message = this.redact(issue.path, issue.message);
    return message === issue.message ? issue : { ...issue, message };
  }

  get size(): number {
    return this.byPath.size;
  }

  /** Whether `path` (or a field under it) holds a placeholder for an unset variable. */
  placeholderAt(path: readonly (string | number)[]): boolean {
    const prefix = key(path).slice(0, -1);
    for (const [k, item] of this.byPath) if (item.placeholder && (k === key(path) || k.startsWith(prefix + ','))) return true;
    return false;
  }
}

/**
 * Replace `${NAME}` in every string scalar (keys excluded); `$${` escapes a literal `${`.
 * Reports each unset variable through `missing`; a placeholder stands in for its value, so the
 * rest of the file can still be checked (the field itself is then not judged).
 */
export function interpolateEnv(
  doc: Document,
  env: Env,
  missing: (node: Node, path: (string | number)[], name: string) => void,
): Interpolations {
  const found = new Interpolations();
  visit(doc, {
    Scalar(_key, node, ancestry) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      // A map key is never interpolated: only values are.
      const parent = ancestry[ancestry.length - 1];
      if (parent && 'key' in parent && (parent as { key: unknown }).key === node) return;
      const path = pathOf(ancestry);
      const names: string[] = [];
      let placeholder = false;
      const exact = EXACT_REF.test(node.value);
      node.value = node.value.replace(ENV_REF, (match, name: string | undefined) => {
        if (name === undefined) return '${';
        const value = env[name];
        names.push(name);
        if (value === undefined) {
          missing(node, path, name);
          placeholder = true;
          return placeholderFor(name);
        }
        return value;
      });
      if (names.length > 0) found.add(placeholder ? { path, names, value: node.value as string, exact, placeholder } : { path, names, value: node.value as string, exact });
    },
  });
  return found;
}

/** Long enough for every secret length rule, so only the missing variable is reported. */
export function placeholderFor(name: string): string {
  return `placeholder-for-${name}-`.padEnd(72, 'x');
}

function describeVars(names: readonly string[]): string {
  const unique = [...new Set(names)];
  return `environment variable${unique.length > 1 ? 's' : ''} ${unique.join(', ')}`;
}

function key(path: readonly (string | number)[]): string {
  return JSON.stringify(path);
}

function pathOf(ancestry: readonly unknown[]): (string | number)[] {
  const path: (string | number)[] = [];
  for (let i = 0; i < ancestry.length; i++) {
    const item = ancestry[i] as { key?: unknown; items?: unknown[] };
    const next = ancestry[i + 1];
    if (isSeq(item) && next !== undefined) path.push(item.items.indexOf(next as never));
    else if (item && typeof item === 'object' && 'key' in item && 'value' in item) {
      const key = item.key;
      path.push(isScalar(key) ? String(key.value) : String(key));
    }
  }
  return path;
}
