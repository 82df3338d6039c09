// Known deviations of @marcbachmann/cel-js (through Portcullis' environment) from the cel-spec
// conformance cases that test/expr/conformance.test.ts runs. Each entry is one case id
// (section/subsection/name) and the reason, shared per class. The suite stays green on these
// cases and fails if one starts to pass (remove it here then) or if any other case fails (a
// regression, e.g. after a library upgrade).
//
// How to read a reason: "refused at load" means the policy type-check rejects the expression, so
// a policy cannot use it; "an error denies" means evaluation raises where the spec gives a value —
// stricter, and Portcullis turns every evaluation error into a denial (condition_error). The two
// SECURITY-RELEVANT classes produce a value where the spec requires an error; README
// "Expressions (CEL)" says what that means for policies.

const R = {
  codepoint: "SECURITY-RELEVANT: strings are ordered by UTF-16 code unit, not by code point: a character at U+E000–U+FFFF sorts after one beyond U+FFFF; only <, <=, >, >= between such strings differ — see README \"Expressions (CEL)\"",
  depth: "Portcullis' own parse limit (EXPRESSION_LIMITS.maxDepth = 24) refuses it at load — by design, not a library fault",
  rawbytes: "raw bytes literals (br'…', bR'…') are a syntax error in the library",
  unbound: "an unbound variable or function is an error the library does not absorb in `… || true` (spec: true); Portcullis refuses undeclared names at load, and an evaluation error denies",
  qualified: "dotted variable names (a variable declared as `a.b` / `x.y`) are not resolved; Portcullis declares only `request`, `auth`, `now`",
  bytesutf8: "a non-ASCII character in a bytes literal is encoded as Latin-1, not UTF-8 (b'ÿ' is [255], not [195, 191]); Portcullis exposes no bytes",
  bytesorder: "bytes have no ordering (<, <=, >, >=): refused by the type-check at load; Portcullis exposes no bytes",
  lossy: "int/double ordering near 2^63 compares through a lossy conversion; no request value reaches this range as an int",
  leadingdot: "a double literal without a leading digit (.99) is a syntax error",
  heteroeq: "heterogeneous equality (int/uint/double, or lists/maps of different element types) errors or is false instead of comparing numerically; an error denies, and the type-check refuses most literal mixes at load",
  logictype: "a non-bool operand of && / || is an error even where the other side decides (spec: `false && 32` is false): stricter than the spec, an error denies",
  ternary: "a conditional whose branches have different types is an error (spec: dyn); stricter, an error denies",
  intuint: "the int(uint) conversion overload is missing: refused by the type-check at load",
  tsconv: "int(timestamp), string(timestamp), string(duration) and the identity conversions timestamp(timestamp), duration(duration) are missing: refused by the type-check at load",
  intrange: "SECURITY-RELEVANT: int(double) out of the int64 range is not an error (int(1e99) is a 100-digit int); arithmetic on it raises, comparisons do not — see README \"Expressions (CEL)\"",
  bytesinvalid: "string(bytes) with invalid UTF-8 is not an error (replacement characters instead); Portcullis exposes no bytes",
  nulltype: "the null type's name is `null`, not `null_type`",
  ascii: "lowerAscii()/upperAscii() also change non-ASCII letters (Æ→æ, α→Α, and the Kelvin sign K→k): a policy comparing lowerAscii() request data may match where the spec would not",
  trim: "trim() uses JavaScript's whitespace set (strips U+FEFF, keeps U+0085) instead of CEL's",
  quote: "strings.quote() is not implemented: refused at load",
  format: "string.format() is not implemented: refused at load",
  listuint: "uint keys and uint/int/double mixes in `in` and list indexes do not compare numerically (false or an error); Portcullis exposes no uint",
  has: "has() on a map literal is refused by the type-check (has() on variables, e.g. has(auth.claims.org), works)",
  backtick: "backquoted field names (a.`content-type`) are a syntax error; use a[\"content-type\"]",
  mapkeys: "map literals accept double and null keys and repeated keys (the last wins) where the spec requires an error; only literals in the policy text can do this",
  emptyall: "the type-check of a comprehension over an empty list literal fails with an internal overload-overlap error: refused at load",
  mapintkeys: "map literals with int keys become string-keyed objects, so a comprehension over the keys sees strings (an error); Portcullis refuses comprehensions over request data",
  macros2: "two-variable comprehensions (all(i, v, …), existsOne, transformList, transformMap) are not implemented: refused at load",
  intmath: "SECURITY-RELEVANT: negating the smallest int64 and dividing it by -1 do not raise overflow (the result is 2^63); see README \"Expressions (CEL)\"",
  tz: "numeric time-zone offsets (getHours(\"+11:00\")) are an error; IANA names work",
  tsrange: "timestamps outside years 1–9999 and durations beyond ±10000 years are not range errors",
  tsarith: "duration + timestamp (operands in that order) is refused by the type-check; timestamp nanosecond precision is lost (JavaScript Date is millisecond-precise)",
} as const;

export const KNOWN_DEVIATIONS: Readonly<Record<string, string>> = {
  // depth: 3
  "parse/nest/list_index": R.depth,
  "parse/nest/parens": R.depth,
  "parse/repeat/conditional": R.depth,

  // rawbytes: 8
  "parse/bytes_literals/raw_single_quoted_escapes": R.rawbytes,
  "parse/bytes_literals/raw_double_quoted_escapes": R.rawbytes,
  "parse/bytes_literals/raw_triple_single_quoted_escapes": R.rawbytes,
  "parse/bytes_literals/raw_triple_double_quoted_escapes": R.rawbytes,
  "parse/bytes_literals/upper_raw_single_quoted_escapes": R.rawbytes,
  "parse/bytes_literals/upper_raw_double_quoted_escapes": R.rawbytes,
  "parse/bytes_literals/upper_raw_triple_single_quoted_escapes": R.rawbytes,
  "parse/bytes_literals/upper_raw_triple_double_quoted_escapes": R.rawbytes,

  // unbound: 19
  "parse/receiver_function_names/as": R.unbound,
  "parse/receiver_function_names/break": R.unbound,
  "parse/receiver_function_names/const": R.unbound,
  "parse/receiver_function_names/continue": R.unbound,
  "parse/receiver_function_names/else": R.unbound,
  "parse/receiver_function_names/for": R.unbound,
  "parse/receiver_function_names/function": R.unbound,
  "parse/receiver_function_names/if": R.unbound,
  "parse/receiver_function_names/import": R.unbound,
  "parse/receiver_function_names/let": R.unbound,
  "parse/receiver_function_names/loop": R.unbound,
  "parse/receiver_function_names/package": R.unbound,
  "parse/receiver_function_names/namespace": R.unbound,
  "parse/receiver_function_names/return": R.unbound,
  "parse/receiver_function_names/var": R.unbound,
  "parse/receiver_function_names/void": R.unbound,
  "parse/receiver_function_names/while": R.unbound,
  "basic/variables/unbound_is_runtime_error": R.unbound,
  "basic/functions/unbound_is_runtime_error": R.unbound,

  // qualified: 5
  "fields/qualified_identifier_resolution/qualified_ident": R.qualified,
  "fields/qualified_identifier_resolution/map_field_select": R.qualified,
  "fields/qualified_identifier_resolution/qualified_identifier_resolution_unchecked": R.qualified,
  "fields/qualified_identifier_resolution/ident_with_longest_prefix_check": R.qualified,
  "namespace/qualified/self_eval_qualified_lookup": R.qualified,

  // bytesutf8: 3
  "basic/self_eval_nonzeroish/self_eval_bytes_escape": R.bytesutf8,
  "comparisons/eq_literal/eq_bytes": R.bytesutf8,
  "comparisons/ne_literal/not_ne_bytes": R.bytesutf8,

  // bytesorder: 12
  "comparisons/lt_literal/lt_bytes": R.bytesorder,
  "comparisons/lt_literal/not_lt_bytes_same": R.bytesorder,
  "comparisons/lt_literal/not_lt_bytes_width": R.bytesorder,
  "comparisons/gt_literal/gt_bytes_one": R.bytesorder,
  "comparisons/gt_literal/gt_bytes_one_to_empty": R.bytesorder,
  "comparisons/gt_literal/not_gt_bytes_sorting": R.bytesorder,
  "comparisons/lte_literal/lte_bytes_empty": R.bytesorder,
  "comparisons/lte_literal/not_lte_bytes_length": R.bytesorder,
  "comparisons/gte_literal/gte_bytes_to_empty": R.bytesorder,
  "comparisons/gte_literal/not_gte_bytes_empty_to_nonempty": R.bytesorder,
  "comparisons/gte_literal/gte_bytes_samelength": R.bytesorder,
  "comparisons/bound/bytes_gt_left_false": R.bytesorder,

  // lossy: 4
  "comparisons/lt_literal/not_lt_dyn_int_big_lossy_double": R.lossy,
  "comparisons/gt_literal/not_gt_dyn_big_double_int": R.lossy,
  "comparisons/lte_literal/lte_dyn_big_double_int": R.lossy,
  "comparisons/gte_literal/gte_dyn_int_big_lossy_double": R.lossy,

  // leadingdot: 1
  "comparisons/gt_literal/not_gt_double": R.leadingdot,

  // heteroeq: 6
  "comparisons/eq_literal/eq_list_mixed_type_numbers": R.heteroeq,
  "comparisons/eq_literal/not_eq_list_length": R.heteroeq,
  "comparisons/eq_literal/eq_map_mixed_type_numbers": R.heteroeq,
  "comparisons/eq_literal/eq_mixed_types": R.heteroeq,
  "comparisons/eq_literal/eq_list_elem_mixed_types": R.heteroeq,
  "comparisons/ne_literal/ne_mixed_types": R.heteroeq,

  // logictype: 4
  "logic/AND/short_circuit_type_left": R.logictype,
  "logic/AND/short_circuit_type_right": R.logictype,
  "logic/OR/short_circuit_type_left": R.logictype,
  "logic/OR/short_circuit_type_right": R.logictype,

  // ternary: 1
  "logic/conditional/mixed_type": R.ternary,

  // intuint: 4
  "parse/nest/funcall": R.intuint,
  "conversions/int/uint": R.intuint,
  "conversions/int/uint_zero": R.intuint,
  "conversions/int/uint_max_exact": R.intuint,

  // tsconv: 7
  "conversions/int/timestamp": R.tsconv,
  "conversions/identity/duration": R.tsconv,
  "conversions/identity/timestamp": R.tsconv,
  "timestamps/timestamp_conversions/toInt_timestamp": R.tsconv,
  "timestamps/timestamp_conversions/toString_timestamp": R.tsconv,
  "timestamps/timestamp_conversions/toString_timestamp_nanos": R.tsconv,
  "timestamps/duration_conversions/toString_duration": R.tsconv,

  // intrange: 4
  "conversions/int/double_int_max_range": R.intrange,
  "conversions/int/double_int_min_range": R.intrange,
  "conversions/int/double_range": R.intrange,
  "conversions/uint/double_uint_max_range": R.intrange,

  // bytesinvalid: 1
  "conversions/string/bytes_invalid": R.bytesinvalid,

  // nulltype: 2
  "conversions/type/null_type": R.nulltype,
  "conversions/type/null_type_denotation": R.nulltype,

  // ascii: 3
  "string_ext/ascii_casing/lowerascii_unicode": R.ascii,
  "string_ext/ascii_casing/lowerascii_unicode_with_space": R.ascii,
  "string_ext/ascii_casing/upperascii_unicode": R.ascii,

  // trim: 2
  "string_ext/trim/unicode_space_chars_1": R.trim,
  "string_ext/trim/unicode_no_trim": R.trim,

  // quote: 21
  "string_ext/quote/multiline": R.quote,
  "string_ext/quote/escaped": R.quote,
  "string_ext/quote/backspace": R.quote,
  "string_ext/quote/form_feed": R.quote,
  "string_ext/quote/carriage_return": R.quote,
  "string_ext/quote/horizontal_tab": R.quote,
  "string_ext/quote/vertical_tab": R.quote,
  "string_ext/quote/double_slash": R.quote,
  "string_ext/quote/two_escape_sequences": R.quote,
  "string_ext/quote/verbatim": R.quote,
  "string_ext/quote/ends_with": R.quote,
  "string_ext/quote/starts_with": R.quote,
  "string_ext/quote/printable_unicode": R.quote,
  "string_ext/quote/mid_string_quote": R.quote,
  "string_ext/quote/single_quote_with_double_quote": R.quote,
  "string_ext/quote/size_unicode_char": R.quote,
  "string_ext/quote/size_unicode_string": R.quote,
  "string_ext/quote/unicode": R.quote,
  "string_ext/quote/unicode_code_points": R.quote,
  "string_ext/quote/unicode_2": R.quote,
  "string_ext/quote/empty_quote": R.quote,

  // format: 75
  "string_ext/format/no-op": R.format,
  "string_ext/format/mid-string substitution": R.format,
  "string_ext/format/percent escaping": R.format,
  "string_ext/format/substitution inside escaped percent signs": R.format,
  "string_ext/format/substitution with one escaped percent sign on the right": R.format,
  "string_ext/format/substitution with one escaped percent sign on the left": R.format,
  "string_ext/format/multiple substitutions": R.format,
  "string_ext/format/percent sign escape sequence support": R.format,
  "string_ext/format/fixed point formatting clause": R.format,
  "string_ext/format/binary formatting clause": R.format,
  "string_ext/format/uint support for binary formatting": R.format,
  "string_ext/format/bool support for binary formatting": R.format,
  "string_ext/format/octal formatting clause": R.format,
  "string_ext/format/uint support for octal formatting clause": R.format,
  "string_ext/format/lowercase hexadecimal formatting clause": R.format,
  "string_ext/format/uppercase hexadecimal formatting clause": R.format,
  "string_ext/format/unsigned support for hexadecimal formatting clause": R.format,
  "string_ext/format/string support with hexadecimal formatting clause": R.format,
  "string_ext/format/string support with uppercase hexadecimal formatting clause": R.format,
  "string_ext/format/byte support with hexadecimal formatting clause": R.format,
  "string_ext/format/byte support with uppercase hexadecimal formatting clause": R.format,
  "string_ext/format/scientific notation formatting clause": R.format,
  "string_ext/format/default precision for fixed-point clause": R.format,
  "string_ext/format/default precision for scientific notation": R.format,
  "string_ext/format/NaN support for scientific notation": R.format,
  "string_ext/format/positive infinity support for scientific notation": R.format,
  "string_ext/format/negative infinity support for scientific notation": R.format,
  "string_ext/format/NaN support for decimal": R.format,
  "string_ext/format/positive infinity support for decimal": R.format,
  "string_ext/format/negative infinity support for decimal": R.format,
  "string_ext/format/NaN support for fixed-point": R.format,
  "string_ext/format/positive infinity support for fixed-point": R.format,
  "string_ext/format/negative infinity support for fixed-point": R.format,
  "string_ext/format/uint support for decimal clause": R.format,
  "string_ext/format/null support for string": R.format,
  "string_ext/format/int support for string": R.format,
  "string_ext/format/bytes support for string": R.format,
  "string_ext/format/type() support for string": R.format,
  "string_ext/format/timestamp support for string": R.format,
  "string_ext/format/duration support for string": R.format,
  "string_ext/format/list support for string": R.format,
  "string_ext/format/map support for string": R.format,
  "string_ext/format/map support (all key types)": R.format,
  "string_ext/format/boolean support for %s": R.format,
  "string_ext/format/dyntype support for string formatting clause": R.format,
  "string_ext/format/dyntype support for numbers with string formatting clause": R.format,
  "string_ext/format/dyntype support for integer formatting clause": R.format,
  "string_ext/format/dyntype support for integer formatting clause (unsigned)": R.format,
  "string_ext/format/dyntype support for hex formatting clause": R.format,
  "string_ext/format/dyntype support for hex formatting clause (uppercase)": R.format,
  "string_ext/format/dyntype support for unsigned hex formatting clause": R.format,
  "string_ext/format/dyntype support for fixed-point formatting clause": R.format,
  "string_ext/format/dyntype support for scientific notation": R.format,
  "string_ext/format/dyntype NaN/infinity support": R.format,
  "string_ext/format/dyntype support for timestamp": R.format,
  "string_ext/format/dyntype support for duration": R.format,
  "string_ext/format/dyntype support for lists": R.format,
  "string_ext/format/dyntype support for maps": R.format,
  "string_ext/format/string substitution in a string variable": R.format,
  "string_ext/format/multiple substitutions in a string variable": R.format,
  "string_ext/format/substitution inside escaped percent signs in a string variable": R.format,
  "string_ext/format/fixed point formatting clause in a string variable": R.format,
  "string_ext/format/binary formatting clause in a string variable": R.format,
  "string_ext/format/scientific notation formatting clause in a string variable": R.format,
  "string_ext/format/default precision for fixed-point clause in a string variable": R.format,
  "string_ext/format/format_%f_insignificant_zeroes_removed": R.format,
  "string_ext/format/format_%f_positive_round_to_whole_number": R.format,
  "string_ext/format/format_%f_negative_truncate_to_whole_number": R.format,
  "string_ext/format/format_%f_halfway_round_up_to_nearest_even": R.format,
  "string_ext/format/format_%f_halfway_truncate_to_nearest_even": R.format,
  "string_ext/format/format_%f_positive_round_up": R.format,
  "string_ext/format/format_%f_positive_round_down": R.format,
  "string_ext/format/format_%f_negative_round_up": R.format,
  "string_ext/format/format_%f_negative_round_down": R.format,
  "string_ext/format/format_%f_zero_padding": R.format,

  // listuint: 5
  "lists/index/zero_based_uint": R.listuint,
  "lists/in/uint_in_ints": R.listuint,
  "lists/in/uint_in_doubles": R.listuint,
  "lists/in/int_in_uints": R.listuint,
  "lists/in/double_in_uints": R.listuint,

  // has: 3
  "fields/map_has/has": R.has,
  "fields/map_has/has_not": R.has,
  "fields/map_has/has_empty": R.has,

  // backtick: 6
  "fields/quoted_map_fields/field_access_slash": R.backtick,
  "fields/quoted_map_fields/field_access_dash": R.backtick,
  "fields/quoted_map_fields/field_access_dot": R.backtick,
  "fields/quoted_map_fields/has_field_slash": R.backtick,
  "fields/quoted_map_fields/has_field_dash": R.backtick,
  "fields/quoted_map_fields/has_field_dot": R.backtick,

  // mapkeys: 4
  "fields/qualified_identifier_resolution/map_key_float": R.mapkeys,
  "fields/qualified_identifier_resolution/map_key_null": R.mapkeys,
  "fields/qualified_identifier_resolution/map_value_repeat_key": R.mapkeys,
  "fields/qualified_identifier_resolution/map_value_repeat_key_heterogeneous": R.mapkeys,

  // emptyall: 1
  "macros/all/list_empty": R.emptyall,

  // mapintkeys: 1
  "macros/exists_one/map_one": R.mapintkeys,

  // macros2: 38
  "macros2/exists/list_elem_all_true": R.macros2,
  "macros2/exists/list_elem_some_true": R.macros2,
  "macros2/exists/list_elem_none_true": R.macros2,
  "macros2/exists/list_elem_type_shortcircuit": R.macros2,
  "macros2/exists/list_elem_type_exhaustive": R.macros2,
  "macros2/exists/list_empty": R.macros2,
  "macros2/exists/map_key": R.macros2,
  "macros2/exists/not_map_key": R.macros2,
  "macros2/exists/map_key_type_shortcircuit": R.macros2,
  "macros2/exists/map_key_type_exhaustive": R.macros2,
  "macros2/all/list_elem_all_true": R.macros2,
  "macros2/all/list_elem_some_true": R.macros2,
  "macros2/all/list_elem_none_true": R.macros2,
  "macros2/all/list_elem_type_shortcircuit": R.macros2,
  "macros2/all/list_elem_type_exhaustive": R.macros2,
  "macros2/all/list_elem_error_shortcircuit": R.macros2,
  "macros2/all/list_empty": R.macros2,
  "macros2/all/map_key": R.macros2,
  "macros2/existsOne/list_empty": R.macros2,
  "macros2/existsOne/list_one_true": R.macros2,
  "macros2/existsOne/list_one_false": R.macros2,
  "macros2/existsOne/list_none": R.macros2,
  "macros2/existsOne/list_one": R.macros2,
  "macros2/existsOne/list_many": R.macros2,
  "macros2/existsOne/list_all": R.macros2,
  "macros2/existsOne/map_one": R.macros2,
  "macros2/transformList/empty": R.macros2,
  "macros2/transformList/empty_filter": R.macros2,
  "macros2/transformList/one": R.macros2,
  "macros2/transformList/one_filter": R.macros2,
  "macros2/transformList/many": R.macros2,
  "macros2/transformList/many_filter": R.macros2,
  "macros2/transformMap/empty": R.macros2,
  "macros2/transformMap/empty_filter": R.macros2,
  "macros2/transformMap/one": R.macros2,
  "macros2/transformMap/one_filter": R.macros2,
  "macros2/transformMap/many": R.macros2,
  "macros2/transformMap/many_filter": R.macros2,

  // intmath: 2
  "integer_math/int64_math/int64_min_negate": R.intmath,
  "integer_math/int64_math/int64_min_negate_div": R.intmath,

  // tz: 5
  "timestamps/timestamp_selectors_tz/getDayOfMonth_numerical_pos": R.tz,
  "timestamps/timestamp_selectors_tz/getDayOfMonth_numerical_neg": R.tz,
  "timestamps/timestamp_selectors_tz/getFullYear": R.tz,
  "timestamps/timestamp_selectors_tz/getHours": R.tz,
  "timestamps/timestamp_selectors_tz/getSeconds": R.tz,

  // tsrange: 12
  "timestamps/timestamp_range/add_duration_under": R.tsrange,
  "timestamps/timestamp_range/add_duration_over": R.tsrange,
  "timestamps/timestamp_range/add_duration_nanos_over": R.tsrange,
  "timestamps/timestamp_range/add_duration_nanos_under": R.tsrange,
  "timestamps/timestamp_range/sub_time_duration_over": R.tsrange,
  "timestamps/timestamp_range/sub_time_duration_under": R.tsrange,
  "timestamps/duration_range/from_string_under": R.tsrange,
  "timestamps/duration_range/from_string_over": R.tsrange,
  "timestamps/duration_range/add_under": R.tsrange,
  "timestamps/duration_range/add_over": R.tsrange,
  "timestamps/duration_range/sub_under": R.tsrange,
  "timestamps/duration_range/sub_over": R.tsrange,

  // tsarith: 2
  "timestamps/timestamp_arithmetic/add_time_to_duration": R.tsarith,
  "timestamps/timestamp_arithmetic/add_time_to_duration_nanos_positive": R.tsarith,

  // supplement (conformance/supplement.ts)
  "supplement/string_lt_codepoint_bmp_vs_astral": R.codepoint,
  "supplement/string_gt_codepoint_astral_vs_bmp": R.codepoint,
  "supplement/int_negate_min_var": R.intmath,
  "supplement/int_div_min_by_minus_one_var": R.intmath,
  "supplement/int_from_double_over": R.intrange,
  "supplement/lower_ascii_kelvin_sign": R.ascii,
};
