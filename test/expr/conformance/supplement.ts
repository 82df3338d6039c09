// Cases the cel-spec conformance data does not have, on the semantics a deny/allow rule leans on:
// string ordering by code point, commutative error absorption in && and || with a runtime error
// (not only a literal one), and int64 overflow reached from variables. The expected results are
// the language definition's (cel-spec doc/langdef.md: "Strings are ordered by Unicode code point",
// "&& and || are commutative with respect to errors", int arithmetic "raises an error on
// overflow"). They run through the same harness and the same known-deviation list as the suite,
// as section "supplement".

import type { IncrementalTest } from '@bufbuild/cel-spec/testdata/tests.js';

const MIN_INT = -(2n ** 63n);
type Expect = boolean | bigint | string | 'error';

interface Case {
  readonly name: string;
  readonly expr: string;
  readonly expect: Expect;
  /** x, declared as int, bound to this value. */
  readonly x?: bigint;
}

const CASES: readonly Case[] = [
  // Ordering by code point: U+FFFF comes before U+1F600, though its UTF-16 code unit is larger.
  { name: 'string_lt_codepoint_bmp_vs_astral', expr: "'\\uFFFF' < '\\U0001F600'", expect: true },
  { name: 'string_gt_codepoint_astral_vs_bmp', expr: "'\\U0001F600' > '\\uE000'", expect: true },
  { name: 'string_lt_ascii', expr: "'B' < 'a'", expect: true },
  { name: 'string_size_codepoints', expr: "size('\\U0001F600') == 1", expect: true },
  // Error absorption with a missing map key (a runtime error), both operand orders.
  { name: 'or_error_true', expr: "{'a': 1}.b == 1 || true", expect: true },
  { name: 'or_true_error', expr: "true || {'a': 1}.b == 1", expect: true },
  { name: 'or_error_false', expr: "{'a': 1}.b == 1 || false", expect: 'error' },
  { name: 'and_error_false', expr: "{'a': 1}.b == 1 && false", expect: false },
  { name: 'and_false_error', expr: "false && {'a': 1}.b == 1", expect: false },
  { name: 'and_error_true', expr: "{'a': 1}.b == 1 && true", expect: 'error' },
  { name: 'not_error', expr: "!({'a': 1}.b == 1)", expect: 'error' },
  { name: 'ternary_error_condition', expr: "({'a': 1}.b == 1) ? true : true", expect: 'error' },
  // int64 overflow from a variable (the suite has only literals).
  { name: 'int_negate_min_var', expr: '-x', x: MIN_INT, expect: 'error' },
  { name: 'int_div_min_by_minus_one_var', expr: 'x / -1', x: MIN_INT, expect: 'error' },
  { name: 'int_mul_min_by_minus_one_var', expr: 'x * -1', x: MIN_INT, expect: 'error' },
  { name: 'int_sub_underflow_var', expr: 'x - 1', x: MIN_INT, expect: 'error' },
  { name: 'int_from_string_over', expr: "int('9223372036854775808')", expect: 'error' },
  { name: 'int_from_double_over', expr: 'int(9.3e18)', expect: 'error' },
  // lowerAscii changes ASCII letters only; U+212A (Kelvin sign) is not one.
  { name: 'lower_ascii_kelvin_sign', expr: "'\\u212A'.lowerAscii() == '\\u212A'", expect: true },
];

export function supplementCases(): IncrementalTest[] {
  return CASES.map((c) => ({
    name: c.name,
    original: {
      name: c.name,
      expr: c.expr,
      disableCheck: false,
      checkOnly: false,
      container: '',
      typeEnv: c.x === undefined ? [] : [{ name: 'x', declKind: { case: 'ident', value: { type: { typeKind: { case: 'primitive', value: 2 } } } } }],
      bindings: c.x === undefined ? {} : { x: { kind: { case: 'value', value: { kind: { case: 'int64Value', value: c.x } } } } },
      resultMatcher: c.expect === 'error' ? { case: 'evalError', value: { errors: [] } } : { case: 'value', value: { kind: valueKind(c.expect) } },
    },
  })) as unknown as IncrementalTest[];
}

function valueKind(v: Exclude<Expect, 'error'>) {
  if (typeof v === 'boolean') return { case: 'boolValue', value: v };
  if (typeof v === 'bigint') return { case: 'int64Value', value: v };
  return { case: 'stringValue', value: v };
}
