// The one table `npm run bench` prints (and README's Benchmarks section shows).

import { SHAPES } from './measure.mjs';

const COLUMNS = [
  ['scenario', 'left'],
  ['load', 'left'],
  ['gen', 'left'],
  ['checks/s', 'right'],
  ['p50 ms', 'right'],
  ['p99 ms', 'right'],
  ['peak RSS', 'right'],
  ['null, same req', 'right'],
  ['x null', 'right'],
  ['target', 'left'],
];

/** Verdict against issue 7's targets: throughput ratio at 8x16, p99 one at a time. */
function targetCell(target, shapeId, result) {
  if (!target) return '';
  if (shapeId === '8x16' && target.ratio !== undefined) return `>=${target.ratio.toFixed(2)}x ${result.ratioToNull >= target.ratio ? 'met' : 'MISSED'}`;
  if (shapeId === '1x1' && target.p99Ms !== undefined) return `p99<=${target.p99Ms} ${result.p99Ms <= target.p99Ms ? 'met' : 'MISSED'}`;
  return '';
}

const ms = (value) => (Number.isFinite(value) ? value.toFixed(3) : '-');
const mb = (value) => (value === undefined ? '-' : `${value} MB`);
const noisy = (result) => (result.otherUserCpuCores > 0.1 ? '*' : '');

export function tableRows(results) {
  const rows = [];
  for (const generator of ['h2load', 'raw']) {
    for (const shape of SHAPES) {
      const r = results.null[generator][shape.id];
      rows.push([`null server`, shape.label, generator, `${r.checksPerSec}${noisy(r)}`, ms(r.p50Ms), ms(r.p99Ms), mb(results.null.peakRssMb), '', '1.00', '']);
    }
  }
  for (const s of results.scenarios) {
    const name = `(${s.id}) ${s.title}`;
    if (s.status === 'not available') {
      rows.push([name, `not available: ${s.reason}`]);
      continue;
    }
    if (Object.keys(s.results).length === 0) {
      rows.push([name, `FAILED: ${s.problems.join('; ')}`]);
      continue;
    }
    for (const shape of SHAPES) {
      const r = s.results[shape.id];
      const failed = r.problems.length > 0 ? ' FAILED' : '';
      const reference = s.null?.[shape.id];
      const referenceCell = reference ? `${reference.checksPerSec}${noisy(reference)}` : '-';
      rows.push([name, shape.label, s.generator, `${r.checksPerSec}${noisy(r)}${failed}`, ms(r.p50Ms), ms(r.p99Ms), mb(s.peakRssMb), referenceCell, r.ratioToNull.toFixed(2), targetCell(s.target, shape.id, r)]);
    }
  }
  return rows;
}

/** A Markdown table (readable in a terminal as well). */
export function formatTable(results) {
  const rows = tableRows(results);
  const full = rows.filter((row) => row.length === COLUMNS.length);
  const widths = COLUMNS.map(([title], i) => Math.max(title.length, ...full.map((row) => String(row[i]).length)));
  const line = (cells) => `| ${cells.map((cell, i) => (COLUMNS[i][1] === 'right' ? String(cell).padStart(widths[i]) : String(cell).padEnd(widths[i]))).join(' | ')} |`;
  const out = [line(COLUMNS.map(([title]) => title)), `|${widths.map((w, i) => (COLUMNS[i][1] === 'right' ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`];
  for (const row of rows) {
    out.push(row.length === COLUMNS.length ? line(row) : `| ${row[0]} | ${row[1]} |${' |'.repeat(COLUMNS.length - 2)}`);
  }
  const notes = [];
  notes.push(`gen: h2load, or raw = bench/loadgen.mjs (a new body per request). null, same req: the null server sent the scenario's own requests with the same generator and load, measured just before it. x null: checks/s over that.`);
  notes.push(`The raw generator drives the null server to ${results.null.rawVsH2load.toFixed(2)}x of h2load's throughput (8x16), using ${Math.round((results.null.rawGeneratorCpuCores ?? NaN) * 100)}% of its core.`);
  for (const s of results.scenarios) if (s.note) notes.push(`(${s.id}) ${s.note}.`);
  for (const s of results.scenarios) for (const problem of [...(s.problems ?? []), ...Object.values(s.results ?? {}).flatMap((r) => r.problems)]) notes.push(`(${s.id}) PROBLEM: ${problem}`);
  if (rows.some((row) => String(row[3]).includes('*') || String(row[7] ?? '').includes('*'))) notes.push('* other processes used more than 10% of a core during this measurement: treat it as noisy.');
  const w = results.workers;
  if (w?.status === 'measured') {
    notes.push(`serve --workers (scenario a, 8x16, unpinned, h2load on the same 2 cores): 1 worker ${w.results[1].checksPerSec}/s (${w.results[1].peakRssMb} MB), 2 workers ${w.results[2].checksPerSec}/s (${w.results[2].peakRssMb} MB): ${w.scaling.toFixed(2)}x.`);
  } else if (w) {
    notes.push(`serve --workers: ${w.status}${w.reason ? `: ${w.reason}` : ''}.`);
  }
  return `${out.join('\n')}\n\n${notes.join('\n')}`;
}
