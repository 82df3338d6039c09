// Policy file → validated PolicyDocument. Every problem is reported with file, line, column and
// document path; all problems are reported at once, not just the first.

import { readFile } from 'node:fs/promises';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import type { $ZodIssue } from 'zod/v4/core';
import { PolicyError, PortcullisError, type PolicyIssue } from '../errors.js';
import { policySchema, type PolicyDocument } from './schema.js';

/** Policy files are small; a multi-megabyte one is a mistake (or an attack on the loader). */
export const MAX_POLICY_BYTES = 4 * 1024 * 1024;

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$\{/g;

type Env = Readonly<Record<string, string | undefined>>;

/** Read and validate a policy file. Throws PolicyError (POLICY_INVALID) or PortcullisError (POLICY_IO). */
export async function loadPolicyFile(file: string, env: Env = process.env): Promise<PolicyDocument> {
  return (await loadPolicyFileWithLocator(file, env)).document;
}

export async function loadPolicyFileWithLocator(file: string, env: Env = process.env): Promise<LoadedPolicy> {
  let text: string;
  try {
    const buffer = await readFile(file);
    if (buffer.length > MAX_POLICY_BYTES) {
      throw new PolicyError([{ file, path: [], message: `policy file is ${buffer.length} bytes; the limit is ${MAX_POLICY_BYTES}` }]);
    }
    text = buffer.toString('utf8');
  } catch (err) {
    if (err instanceof PolicyError) throw err;
    throw new PortcullisError('POLICY_IO', `${file}: cannot read policy file: ${(err as Error).message}`, { cause: err });
  }
  return parsePolicyWithLocator(text, file, env);
}

/** Finds where a document path sits in the file, for compile-time messages. */
export type Locator = (path: readonly (string | number)[]) => { line?: number; column?: number };

export interface LoadedPolicy {
  readonly document: PolicyDocument;
  readonly locate: Locator;
}

/** Parse, interpolate `${VAR}` and validate policy text. */
export function parsePolicy(text: string, file: string, env: Env = process.env): PolicyDocument {
  return parsePolicyWithLocator(text, file, env).document;
}

export function parsePolicyWithLocator(text: string, file: string, env: Env = process.env): LoadedPolicy {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false, strict: true });
  const at = (offset: number | undefined) => {
    if (offset === undefined) return {};
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };

  const issues: PolicyIssue[] = [];
  for (const error of doc.errors) {
    issues.push({ file, ...at(error.pos[0]), path: [], message: `YAML: ${error.message.split('\n')[0]}` });
  }
  if (issues.length > 0) throw new PolicyError(issues);

  interpolateEnv(doc, env, (node, path, name) =>
    issues.push({ file, ...at(node.range?.[0]), path, message: `environment variable ${name} is not set` }),
  );
  if (issues.length > 0) throw new PolicyError(issues);

  const raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new PolicyError([{ file, line: 1, column: 1, path: [], message: 'the policy must be a YAML mapping' }]);
  }
  const result = policySchema.safeParse(raw);
  if (result.success) {
    const locate: Locator = (path) => at(nodeOffset(doc, [...path]));
    return { document: result.data, locate };
  }

  for (const issue of result.error.issues) issues.push(...describeIssue(issue, doc, file, at));
  issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
  throw new PolicyError(issues);
}

/** Replace `${NAME}` in every string scalar (keys excluded); `$${` escapes a literal `${`. */
function interpolateEnv(doc: Document, env: Env, missing: (node: Node, path: (string | number)[], name: string) => void): void {
  visit(doc, {
    Scalar(_key, node, ancestry) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      // A map key is never interpolated: only values are.
      const parent = ancestry[ancestry.length - 1];
      if (parent && 'key' in parent && (parent as { key: unknown }).key === node) return;
      node.value = node.value.replace(ENV_REF, (match, name: string | undefined) => {
        if (name === undefined) return '${';
        const value = env[name];
        if (value === undefined) {
          missing(node, pathOf(ancestry), name);
          return match;
        }
        return value;
      });
    },
  });
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

function describeIssue(
  issue: $ZodIssue,
  doc: Document,
  file: string,
  at: (offset: number | undefined) => { line?: number; column?: number },
): PolicyIssue[] {
  const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({
      file,
      ...at(keyOffset(doc, path, key)),
      path: [...path, key],
      message: `unknown key "${key}"`,
    }));
  }
  return [{ file, ...at(nodeOffset(doc, path)), path, message: messageFor(issue) }];
}

function nodeOffset(doc: Document, path: (string | number)[]): number | undefined {
  const node = path.length === 0 ? undefined : (doc.getIn(path, true) as Node | undefined);
  return node?.range?.[0] ?? keyOffset(doc, path.slice(0, -1), String(path[path.length - 1] ?? '')) ?? nearestOffset(doc, path);
}

function messageFor(issue: $ZodIssue): string {
  if (issue.code === 'invalid_type' && issue.message.endsWith('received undefined')) return `is required (${issue.expected})`;
  if (issue.code === 'invalid_value' && 'values' in issue) return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  return issue.message.replace(/^Invalid input: /, '');
}

/** Offset of `key` inside the mapping at `path`. */
function keyOffset(doc: Document, path: (string | number)[], key: string): number | undefined {
  const container = path.length === 0 ? doc.contents : (doc.getIn(path, true) as Node | undefined);
  if (!isMap(container)) return undefined;
  for (const pair of container.items) {
    if (isScalar(pair.key) && String(pair.key.value) === key) return pair.key.range?.[0];
  }
  return container.range?.[0];
}

/** The deepest existing node along `path` (for a missing required key: its parent mapping). */
function nearestOffset(doc: Document, path: (string | number)[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = (n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true)) as Node | undefined;
    if (node?.range) return node.range[0];
  }
  return undefined;
}
