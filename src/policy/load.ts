// Policy file → validated PolicyDocument. Every problem is reported with file, line, column and
// document path; all problems are reported at once, not just the first.

import { readFile } from 'node:fs/promises';
import { isMap, isScalar, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import type { $ZodIssue } from 'zod/v4/core';
import { PolicyError, PortcullisError, type PolicyIssue } from '../errors.js';
import type { Runtime } from '../runtime.js';
import { compilePolicy, type CompiledPolicy } from './compile.js';
import { interpolateEnv, Interpolations, type Env } from './interpolate.js';
import { policySchema, type PolicyDocument } from './schema.js';
import { didYouMean, knownKeysAt } from './suggest.js';

/** Policy files are small; a multi-megabyte one is a mistake (or an attack on the loader). */
export const MAX_POLICY_BYTES = 4 * 1024 * 1024;

export interface ParseOptions {
  /**
   * The document must state a policy to enforce (routes, an identity chain or mode: dev); true
   * wherever a policy goes live or is validated. The keys and bans commands read only a store
   * section from --config and pass false.
   */
  readonly requirePolicy?: boolean;
  /**
   * `validate --allow-missing-env`: an unset variable is not a problem; a placeholder stands in
   * and the checks of that value (secret lengths, formats) are skipped, with a note saying so.
   */
  readonly allowMissingEnv?: boolean;
}

/**
 * Read and validate a policy file for the settings it holds (the keys and bans commands: store
 * sections only). Throws PolicyError (POLICY_INVALID) or PortcullisError (POLICY_IO).
 */
export async function loadPolicyFile(file: string, env: Env = process.env): Promise<PolicyDocument> {
  return (await loadPolicyFileWithLocator(file, env, { requirePolicy: false })).document;
}

export async function loadPolicyFileWithLocator(file: string, env: Env = process.env, options: ParseOptions = {}): Promise<LoadedPolicy> {
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
  return parsePolicyWithLocator(text, file, env, options);
}

/** Finds where a document path sits in the file, for compile-time messages. */
export type Locator = (path: readonly (string | number)[]) => { line?: number; column?: number };

export interface LoadedPolicy {
  readonly document: PolicyDocument;
  readonly locate: Locator;
  /** Fields that took values from the environment (for messages that must not echo them). */
  readonly interpolations: Interpolations;
  /** Things `validate` should say that are not problems (placeholders for unset variables). */
  readonly notes?: readonly string[];
}

/**
 * What a file with schema problems still lets the compiler check: the document with each broken
 * part replaced by a harmless stand-in (keeping names other parts refer to), so compile-time
 * problems elsewhere are reported in the same run, and nothing is reported about the stand-ins.
 */
export interface PartialPolicy {
  readonly loaded: LoadedPolicy;
  /** Document paths replaced by stand-ins: compile problems under them are not reported. */
  readonly replaced: readonly (readonly (string | number)[])[];
}

/** Parse, interpolate `${VAR}` and validate policy text. */
export function parsePolicy(text: string, file: string, env: Env = process.env): PolicyDocument {
  return parsePolicyWithLocator(text, file, env).document;
}

export function parsePolicyWithLocator(text: string, file: string, env: Env = process.env, options: ParseOptions = {}): LoadedPolicy {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false, strict: true });
  const at = (offset: number | undefined) => {
    if (offset === undefined) return {};
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };

  // The whole text must be one clean YAML document: errors and warnings alike refuse it, so a
  // file cut in the middle of a construct is never taken for a smaller policy.
  const issues: PolicyIssue[] = [];
  for (const error of doc.errors) {
    const message = error.code === 'MULTIPLE_DOCS' ? 'the file holds more than one YAML document; a policy is exactly one' : error.message.split('\n')[0];
    issues.push({ file, ...at(error.pos[0]), path: [], message: `YAML: ${message}` });
  }
  for (const warning of doc.warnings) {
    issues.push({ file, ...at(warning.pos[0]), path: [], message: `YAML: ${warning.message.split('\n')[0]}` });
  }
  if (issues.length > 0) throw new PolicyError(issues);

  const unset = new Set<string>();
  const interpolations = interpolateEnv(doc, env, (node, path, name) => {
    unset.add(name);
    if (!options.allowMissingEnv) issues.push({ file, ...at(node.range?.[0]), path, message: `environment variable ${name} is not set` });
  });
  const notes = [...unset].map(
    (name) => `environment variable ${name} is not set: a placeholder stands in, and the checks of its value (secret lengths, formats) are skipped`,
  );

  const raw: unknown = doc.toJS({ maxAliasCount: 100 });
  if ((raw === null || raw === undefined) && options.requirePolicy !== false) {
    throw new PolicyError([{ file, line: 1, column: 1, path: [], message: EMPTY_POLICY }]);
  }
  if (raw === null || raw === undefined) return parsePolicyWithLocator('{}', file, env, options);
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new PolicyError([{ file, line: 1, column: 1, path: [], message: 'the policy must be a YAML mapping' }]);
  }
  const stated = raw as Record<string, unknown>;
  const result = validateWithEnvNumbers(structuredClone(stated), interpolations);
  const locate: Locator = (path) => at(nodeOffset(doc, [...path]));
  if (result.success && issues.length === 0) {
    // Defaults fill in everything else, so a document that states no routes and no identity
    // chain (a file cut before them, or one that holds only `version:`) would deny everything.
    if (options.requirePolicy !== false && stated.routes === undefined && stated.identity === undefined && stated.mode !== 'dev') {
      throw new PolicyError([{ file, line: 1, column: 1, path: [], message: EMPTY_POLICY }]);
    }
    return { document: result.data, locate, interpolations, notes };
  }

  // Every problem of the file at once: validate, replace what is broken by stand-ins, validate
  // again (a few rounds at most), so the compiler can check the rest without cascades.
  const working = structuredClone(stated);
  const replaced: (string | number)[][] = [];
  let round = result;
  let partial: PartialPolicy | undefined;
  for (let pass = 0; pass < 6; pass++) {
    if (round.success) {
      partial = { loaded: { document: round.data, locate, interpolations, notes }, replaced };
      break;
    }
    let changed = false;
    const earlier = replaced.slice();
    // An object with an unknown key (a misspelt "allOf") also fails its own cross-field rules:
    // those are cascades of the unknown key.
    const misspelt = new Set(round.error.issues.filter((i) => i.code === 'unrecognized_keys').map((i) => JSON.stringify(i.path)));
    for (const issue of round.error.issues) {
      const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
      if (issue.code === 'custom' && misspelt.has(JSON.stringify(issue.path))) {
        changed = repair(working, issue, path, replaced) || changed;
        continue;
      }
      // A value standing in for an unset variable cannot be judged, and a stand-in is not the
      // user's: no problem is reported about either.
      const underStandIn = earlier.some((r) => r.every((part, i) => path[i] === part));
      if (!underStandIn && !interpolations.placeholderAt(path)) issues.push(...describeIssue(issue, doc, file, at, interpolations));
      changed = repair(working, issue, path, replaced) || changed;
    }
    if (!changed) break;
    round = validateWithEnvNumbers(working, interpolations);
  }
  if (issues.length === 0 && partial) return partial.loaded;
  throw new PolicyError(sortIssues(dedupeIssues(issues)).map((issue) => interpolations.redactIssue(issue)), partial);
}

function sortIssues(issues: PolicyIssue[]): PolicyIssue[] {
  return issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
}

function dedupeIssues(issues: readonly PolicyIssue[]): PolicyIssue[] {
  const seen = new Set<string>();
  return issues.filter((issue) => {
    const key = JSON.stringify([issue.path, issue.message]);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

const STAND_IN_SECRET = 'x'.repeat(64);

/**
 * Make the part of `doc` an issue is about valid again, keeping what other parts refer to (route,
 * issuer and rate-limit policy names). Returns whether anything changed.
 */
function repair(doc: Record<string, unknown>, issue: $ZodIssue, path: (string | number)[], replaced: (string | number)[][]): boolean {
  if (issue.code === 'unrecognized_keys') {
    // The unknown key goes; what it was meant to say (a misspelt "public") is missing from its
    // object, so compile problems of that object would be cascades: not reported.
    const container = getAt(doc, path);
    if (container === null || typeof container !== 'object') return false;
    for (const key of issue.keys) delete (container as Record<string, unknown>)[key];
    if (path.length > 0) replaced.push(path.length > 2 && path[0] === 'routes' ? path.slice(0, 2) : path);
    return true;
  }
  const [top, second, third] = path;
  const nameOf = (value: unknown) => {
    const name = (value as { name?: unknown } | null)?.name;
    return typeof name === 'string' && /^[A-Za-z0-9_.:/{}*-]+$/.test(name) ? name : undefined;
  };
  const standIn = (at: (string | number)[], value: unknown) => {
    setAt(doc, at, value);
    replaced.push(at);
    return true;
  };
  if (top === undefined) return false;
  if (top === 'routes' && typeof second === 'number' && Array.isArray(doc.routes)) {
    const name = nameOf(doc.routes[second]);
    return standIn(['routes', second], { ...(name && { name }), match: { path: `/.portcullis-invalid-route-${second}` }, public: true });
  }
  if ((top === 'identity' && typeof second === 'number') || (top === 'identity' && second === undefined)) {
    const stand = { host: { domains: {} } };
    return second === undefined ? standIn(['identity'], [stand]) : standIn(['identity', second], stand);
  }
  if (top === 'issuers' && typeof second === 'string') {
    return standIn(['issuers', second], { issuer: `urn:portcullis:invalid-issuer:${second}`, secret: STAND_IN_SECRET });
  }
  if (top === 'tenants' && typeof second === 'string') return standIn(['tenants', second], {});
  if (top === 'rateLimits' && second === 'policies' && typeof third === 'number') {
    const policies = getAt(doc, ['rateLimits', 'policies']) as unknown[];
    const name = nameOf(policies[third]);
    return standIn(['rateLimits', 'policies', third], { name: name ?? `invalid-policy-${third}`, key: ['ip'], window: '60s', limit: 1000 });
  }
  if (top === 'rateLimits') {
    // Without a rateLimits section, what refers to it goes too (it cannot be checked).
    delete doc.rateLimits;
    replaced.push(['rateLimits']);
    if (Array.isArray(doc.routes)) {
      doc.routes.forEach((route, i) => {
        if (route && typeof route === 'object' && 'rateLimits' in route) {
          delete (route as Record<string, unknown>).rateLimits;
          replaced.push(['routes', i, 'rateLimits']);
        }
      });
    }
    if (doc.tenants && typeof doc.tenants === 'object') {
      for (const [name, tenant] of Object.entries(doc.tenants)) {
        if (tenant && typeof tenant === 'object' && 'limits' in tenant) {
          delete (tenant as Record<string, unknown>).limits;
          replaced.push(['tenants', name, 'limits']);
        }
      }
    }
    return true;
  }
  if (!(top in doc)) return false;
  // Anything else at the top (mode, server, headers, keyStore, ...): its defaults stand in.
  delete doc[top];
  replaced.push([top]);
  return true;
}

/**
 * Parse and compile, reporting the problems of the whole file in one run: schema problems and
 * the compile-time problems of every part the schema problems do not touch.
 */
export function compileReportingAll(parse: () => LoadedPolicy, runtime: Runtime, file: string): CompiledPolicy {
  let loaded: LoadedPolicy;
  try {
    loaded = parse();
  } catch (err) {
    const partial = err instanceof PolicyError ? (err.partial as PartialPolicy | undefined) : undefined;
    if (!partial) throw err;
    let more: readonly PolicyIssue[] = [];
    try {
      compileLoaded(partial.loaded, runtime, file);
    } catch (compileErr) {
      if (!(compileErr instanceof PolicyError)) throw compileErr;
      more = compileErr.issues.filter((issue) => !partial.replaced.some((at) => at.every((part, i) => issue.path[i] === part)));
    }
    if (more.length === 0) throw err;
    throw new PolicyError(sortIssues(dedupeIssues([...(err as PolicyError).issues, ...more])));
  }
  return compileLoaded(loaded, runtime, file);
}

const EMPTY_POLICY =
  'the policy is empty: a policy states at least its routes or its identity chain (or mode: dev); an empty or comment-only file is never applied';

/**
 * Validate; where a field refused the string of an exact `${VAR}` reference because it wants a
 * number (a limit, a window, a lockout count), use the variable's value as a number and validate
 * again. A value that is not a number stays an error that names the variable.
 */
function validateWithEnvNumbers(raw: Record<string, unknown>, interpolations: Interpolations) {
  let result = policySchema.safeParse(raw);
  if (interpolations.size === 0) return result;
  for (let pass = 0; pass < 4 && !result.success; pass++) {
    let changed = false;
    for (const issue of result.error.issues) {
      if (!wantsNumber(issue)) continue;
      const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
      const value = interpolations.numberAt(path);
      if (value === undefined || typeof getAt(raw, path) !== 'string') continue;
      setAt(raw, path, value);
      changed = true;
    }
    if (!changed) break;
    result = policySchema.safeParse(raw);
  }
  return result;
}

function wantsNumber(issue: $ZodIssue): boolean {
  if (issue.code === 'invalid_type') return issue.expected === 'number' || issue.expected === 'int';
  return issue.code === 'custom' && (issue.params as { wantsNumber?: boolean } | undefined)?.wantsNumber === true;
}

function getAt(root: unknown, path: readonly (string | number)[]): unknown {
  let node = root;
  for (const part of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string | number, unknown>)[part];
  }
  return node;
}

function setAt(root: unknown, path: readonly (string | number)[], value: unknown): void {
  const parent = getAt(root, path.slice(0, -1));
  if (parent !== null && typeof parent === 'object') (parent as Record<string | number, unknown>)[path[path.length - 1]!] = value;
}

/**
 * Compile a parsed policy; compile-time problems about interpolated fields name the variable,
 * never its value, like the validation problems do.
 */
export function compileLoaded(loaded: LoadedPolicy, runtime: Runtime, file: string): CompiledPolicy {
  try {
    return compilePolicy(loaded.document, runtime, file, loaded.locate);
  } catch (err) {
    if (err instanceof PolicyError && loaded.interpolations.size > 0) {
      throw new PolicyError(err.issues.map((issue) => loaded.interpolations.redactIssue(issue)));
    }
    throw err;
  }
}

function describeIssue(
  issue: $ZodIssue,
  doc: Document,
  file: string,
  at: (offset: number | undefined) => { line?: number; column?: number },
  interpolations: Interpolations,
): PolicyIssue[] {
  const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeysAt(policySchema, path);
    return issue.keys.map((key) => ({
      file,
      ...at(keyOffset(doc, path, key)),
      path: [...path, key],
      message: `unknown key "${key}"${didYouMean(key, known)}`,
    }));
  }
  const fromEnv = interpolations.at(path);
  if (fromEnv && issue.code === 'invalid_type' && wantsNumber(issue)) {
    return [{ file, ...at(nodeOffset(doc, path)), path, message: `environment variable ${fromEnv.names.join(', ')} must be a number here` }];
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
