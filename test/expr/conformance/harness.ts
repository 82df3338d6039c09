// Runs one cel-spec conformance case (the SimpleTest messages shipped by @bufbuild/cel-spec)
// through Portcullis' own CEL environment (src/expr/environment.ts, cloned so the case can declare
// its variables). Outcomes:
//  - pass: the expected value, or an error where the spec expects one (the error's kind is not
//    compared: messages are implementation-defined and the library's differ);
//  - fail: anything else, with a short detail;
//  - n/a: the case needs something the Portcullis environment does not offer by design
//    (protobuf messages and enums, containers, declared functions, unknowns), see notApplicable().

import type { Environment } from '@marcbachmann/cel-js';
import type { IncrementalTest } from '@bufbuild/cel-spec/testdata/tests.js';
import { useRe2 } from '../../../src/expr/compile.js';
import { expressionEnvironment } from '../../../src/expr/environment.js';

export type Outcome = { readonly status: 'pass' } | { readonly status: 'fail' | 'n/a'; readonly detail: string };

type SimpleTest = IncrementalTest['original'];
type ValueMsg = NonNullable<Extract<SimpleTest['resultMatcher'], { case: 'value' }>['value']>;
type TypeMsg = NonNullable<NonNullable<Extract<SimpleTest['typeEnv'][number]['declKind'], { case: 'ident' }>['value']>['type']>;

class NotApplicable extends Error {}

const PRIMITIVE: Readonly<Record<number, string>> = { 1: 'bool', 2: 'int', 3: 'uint', 4: 'double', 5: 'string', 6: 'bytes' };
const WELL_KNOWN: Readonly<Record<number, string>> = { 2: 'google.protobuf.Timestamp', 3: 'google.protobuf.Duration' };

/** The library's unsigned-int class is not exported; take it from a value it produces. */
let uintCtor: (new (v: bigint) => { valueOf(): bigint }) | undefined;

export function runCase(test: IncrementalTest): Outcome {
  const t = test.original;
  try {
    notApplicable(t);
    const env = expressionEnvironment().clone();
    uintCtor ??= (env.evaluate('0u') as object).constructor as new (v: bigint) => { valueOf(): bigint };
    for (const decl of t.typeEnv) {
      if (decl.declKind.case !== 'ident') throw new NotApplicable('declares a function');
      env.registerVariable(decl.name, celType(decl.declKind.value.type));
    }
    const context: Record<string, unknown> = {};
    for (const [name, bound] of Object.entries(t.bindings)) {
      if (bound.kind.case !== 'value') throw new NotApplicable('binds an error or unknown');
      context[name] = toJs(bound.kind.value);
    }
    const actual = evaluate(env, t, context);
    return judge(t, actual);
  } catch (err) {
    if (err instanceof NotApplicable) return { status: 'n/a', detail: err.message };
    return { status: 'fail', detail: `harness: ${(err as Error).message}` };
  }
}

type Result = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly stage: 'parse' | 'check' | 'eval'; readonly message: string };

function evaluate(env: Environment, t: SimpleTest, context: Record<string, unknown>): Result {
  let parsed;
  try {
    parsed = env.parse(t.expr);
  } catch (err) {
    return { ok: false, stage: 'parse', message: firstLine(err) };
  }
  // As compileExpression does: matches() runs RE2 (src/expr/environment.ts).
  useRe2(parsed.ast);
  if (!t.disableCheck) {
    const checked = parsed.check();
    if (!checked.valid) return { ok: false, stage: 'check', message: firstLine(checked.error) };
  }
  if (t.checkOnly) return { ok: true, value: undefined };
  try {
    return { ok: true, value: (parsed as unknown as (c: Record<string, unknown>) => unknown)(context) };
  } catch (err) {
    return { ok: false, stage: 'eval', message: firstLine(err) };
  }
}

function judge(t: SimpleTest, actual: Result): Outcome {
  const m = t.resultMatcher;
  switch (m.case) {
    case 'evalError':
    case 'anyEvalErrors':
      return actual.ok ? { status: 'fail', detail: `expected an error, got ${show(actual.value)}` } : { status: 'pass' };
    case undefined: // no matcher: the spec's default is `true`
    case 'value':
    case 'typedResult': {
      if (!actual.ok) return { status: 'fail', detail: `${actual.stage} error: ${actual.message}` };
      if (t.checkOnly) return { status: 'pass' };
      const expected = m.case === undefined ? ({ kind: { case: 'boolValue', value: true } } as ValueMsg) : m.case === 'value' ? m.value : m.value.result;
      if (expected === undefined) return { status: 'pass' };
      return matches(actual.value, expected) ? { status: 'pass' } : { status: 'fail', detail: `expected ${showExpected(expected)}, got ${show(actual.value)}` };
    }
    default:
      throw new NotApplicable(`result matcher ${m.case}`);
  }
}

/** Cases outside the environment Portcullis exposes: decided from the case's data, never by name. */
function notApplicable(t: SimpleTest): void {
  if (t.container !== '') throw new NotApplicable('uses a container (namespaces are not offered)');
  if (/\b(?:TestAllTypes|NestedTestAllTypes|cel\.expr\.conformance)\b/.test(t.expr)) throw new NotApplicable('uses the conformance protobuf messages');
  const code = t.expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""');
  for (const m of code.matchAll(/(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\{/g)) {
    if (m[1] !== 'in') throw new NotApplicable(`constructs a protobuf message (${m[1]}{…})`);
  }
  if (t.resultMatcher.case === 'value' || t.resultMatcher.case === 'typedResult') {
    const v = t.resultMatcher.case === 'value' ? t.resultMatcher.value : t.resultMatcher.value.result;
    if (v && usesMessages(v)) throw new NotApplicable('expects a protobuf message or enum value');
  }
}

function usesMessages(v: ValueMsg): boolean {
  switch (v.kind.case) {
    case 'objectValue':
    case 'enumValue':
      return true;
    case 'listValue':
      return v.kind.value.values.some(usesMessages);
    case 'mapValue':
      return v.kind.value.entries.some((e) => (e.key && usesMessages(e.key)) || (e.value && usesMessages(e.value)));
    default:
      return false;
  }
}

function celType(type: TypeMsg | undefined): string {
  const k = type?.typeKind;
  switch (k?.case) {
    case 'primitive':
      return PRIMITIVE[k.value] ?? unsupported(`primitive ${k.value}`);
    case 'wellKnown':
      return WELL_KNOWN[k.value] ?? unsupported(`well-known ${k.value}`);
    case 'dyn':
      return 'dyn';
    case 'null':
      return 'null';
    case 'listType':
      return `list<${celType(k.value.elemType)}>`;
    case 'mapType':
      return `map<${celType(k.value.keyType)}, ${celType(k.value.valueType)}>`;
    default:
      return unsupported(k?.case ?? 'no type');
  }
}

function unsupported(what: string): never {
  throw new NotApplicable(`declares a variable of type ${what}`);
}

function toJs(v: ValueMsg): unknown {
  const k = v.kind;
  switch (k.case) {
    case 'nullValue':
      return null;
    case 'boolValue':
    case 'stringValue':
    case 'doubleValue':
    case 'bytesValue':
    case 'int64Value':
      return k.value;
    case 'uint64Value':
      return new uintCtor!(k.value);
    case 'listValue':
      return k.value.values.map(toJs);
    case 'mapValue':
      return new Map(k.value.entries.map((e) => [toJs(e.key!), toJs(e.value!)]));
    default:
      throw new NotApplicable(`binds a ${k.case ?? 'missing'} value`);
  }
}

function matches(actual: unknown, expected: ValueMsg): boolean {
  const k = expected.kind;
  switch (k.case) {
    case 'nullValue':
      return actual === null;
    case 'boolValue':
    case 'stringValue':
    case 'int64Value':
      return actual === k.value;
    case 'uint64Value':
      return isUint(actual) && actual.valueOf() === k.value;
    case 'doubleValue':
      return typeof actual === 'number' && (actual === k.value || (Number.isNaN(actual) && Number.isNaN(k.value)));
    case 'bytesValue':
      return actual instanceof Uint8Array && actual.length === k.value.length && actual.every((b, i) => b === k.value[i]);
    case 'typeValue':
      return typeof actual === 'object' && actual !== null && (actual as { name?: unknown }).name === k.value;
    case 'listValue':
      return Array.isArray(actual) && actual.length === k.value.values.length && k.value.values.every((e, i) => matches(actual[i], e));
    case 'mapValue': {
      const entries = mapEntries(actual);
      if (!entries || entries.length !== k.value.entries.length) return false;
      return k.value.entries.every((e) => entries.some(([key, value]) => matches(key, e.key!) && matches(value, e.value!)));
    }
    default:
      return false;
  }
}

function isUint(v: unknown): v is { valueOf(): bigint } {
  return uintCtor !== undefined && v instanceof uintCtor;
}

function mapEntries(v: unknown): [unknown, unknown][] | undefined {
  if (v instanceof Map) return [...v.entries()];
  if (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype) return Object.entries(v);
  return undefined;
}

function showExpected(v: ValueMsg): string {
  return `${v.kind.case}(${show(v.kind.value)})`;
}

function show(v: unknown): string {
  try {
    const text = typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map) ? String(v) : JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `${x}n` : x instanceof Map ? Object.fromEntries(x) : x));
    return (text ?? String(v)).slice(0, 120);
  } catch {
    return String(v).slice(0, 120);
  }
}

function firstLine(err: unknown): string {
  const e = err as { message?: unknown } | undefined;
  return String(e?.message ?? err).split('\n')[0]!.slice(0, 160);
}
