// The official cel-spec conformance cases (data from @bufbuild/cel-spec, upstream cel-spec
// v0.25.1) run through Portcullis' CEL environment, section by section, for the part of CEL a
// policy can use. A case the library gets wrong is listed with its reason in
// conformance/known-deviations.ts: the suite stays green on those, fails on any other failure
// (a library upgrade regression) and fails when a listed case starts to pass (so the list stays
// true). Cases needing what the environment does not offer by design (protobuf messages, enums,
// containers, declared functions, unknowns) count as n/a. The per-section figures are printed at
// the end and quoted in README "Expressions (CEL)".

import { writeFileSync } from 'node:fs';
import { getConformanceSuite, type IncrementalTest, type IncrementalTestSuite } from '@bufbuild/cel-spec/testdata/tests.js';
import { afterAll, describe, expect, it } from 'vitest';
import { runCase } from './conformance/harness.js';
import { KNOWN_DEVIATIONS } from './conformance/known-deviations.js';
import { supplementCases } from './conformance/supplement.js';

/** The sections of the conformance suite that cover what Portcullis exposes. */
const SECTIONS = [
  'parse',
  'basic',
  'comparisons',
  'logic',
  'conversions',
  'string',
  'string_ext',
  'lists',
  'fields',
  'namespace',
  'macros',
  'macros2',
  'bindings_ext',
  'integer_math',
  'timestamps',
  // Not from the suite: cases it lacks on semantics rules lean on (conformance/supplement.ts).
  'supplement',
] as const;

const suite = getConformanceSuite();
const cases = (s: IncrementalTestSuite, prefix: string): [string, IncrementalTest][] => [
  ...s.tests.map((t): [string, IncrementalTest] => [`${prefix}/${t.name}`, t]),
  ...s.suites.flatMap((sub) => cases(sub, `${prefix}/${sub.name}`)),
];

interface Tally {
  pass: number;
  deviation: number;
  na: number;
}
const tallies = new Map<string, Tally>();
/** CEL_CONFORMANCE_DUMP=file writes every failing case with its detail (to build the list). */
const dump: Record<string, string> = {};

describe('cel-spec conformance', () => {
  it('every listed deviation names a case of a covered section', () => {
    const known = new Set(SECTIONS.flatMap((name) => cases(section(name), name).map(([id]) => id)));
    expect(Object.keys(KNOWN_DEVIATIONS).filter((id) => !known.has(id))).toEqual([]);
  });

  for (const name of SECTIONS) {
    const all = cases(section(name), name);
    const tally: Tally = { pass: 0, deviation: 0, na: 0 };
    tallies.set(name, tally);
    describe(name, () => {
      it.each(all.map(([id, t]) => ({ id, t })))('$id', ({ id, t }) => {
        const outcome = runCase(t);
        const listed = KNOWN_DEVIATIONS[id];
        if (outcome.status === 'n/a') {
          tally.na++;
          if (process.env['CEL_CONFORMANCE_DUMP']) dump[id] = `n/a: ${t.original.expr} — ${outcome.detail}`;
          expect(listed, `${id} is n/a (${outcome.detail}); remove it from the list`).toBeUndefined();
          return;
        }
        if (outcome.status === 'fail') dump[id] = `${t.original.expr} — ${outcome.detail}`;
        if (listed !== undefined) {
          tally.deviation++;
          expect(outcome.status, `${id} now passes; remove it from known-deviations.ts`).toBe('fail');
          return;
        }
        expect(outcome, `${id}: ${t.original.expr}`).toEqual({ status: 'pass' });
        tally.pass++;
      });
    });
  }

  afterAll(() => {
    const rows = [...tallies].map(([name, t]) => {
      const run = t.pass + t.deviation;
      return `${name.padEnd(14)} ${String(t.pass).padStart(4)}/${String(run).padEnd(4)} ${run ? ((100 * t.pass) / run).toFixed(1).padStart(5) : '  -  '}%  (n/a ${t.na})`;
    });
    const sum = [...tallies.values()].reduce((a, t) => ({ pass: a.pass + t.pass, deviation: a.deviation + t.deviation, na: a.na + t.na }), { pass: 0, deviation: 0, na: 0 });
    const run = sum.pass + sum.deviation;
    rows.push(`${'all'.padEnd(14)} ${String(sum.pass).padStart(4)}/${String(run).padEnd(4)} ${run ? ((100 * sum.pass) / run).toFixed(1).padStart(5) : '  -  '}%  (n/a ${sum.na})`);
    console.log(`cel-spec conformance through Portcullis' environment (pass/run, not applicable):\n${rows.join('\n')}`);
    const file = process.env['CEL_CONFORMANCE_DUMP'];
    if (file) writeFileSync(file, JSON.stringify(dump, null, 1));
  });
});

function section(name: string): IncrementalTestSuite {
  if (name === 'supplement') return { name, suites: [], tests: supplementCases() };
  const found = suite.suites.find((s) => s.name === name);
  if (!found) throw new Error(`conformance section ${name} is missing from @bufbuild/cel-spec`);
  return found;
}
