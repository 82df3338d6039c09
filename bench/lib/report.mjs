// The one table `npm run bench` prints (and README's Benchmarks section shows): every row against
// both references measured in the same run, the grpc-js null server and the Node ceiling.

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
  ['ceiling, same req', 'right'],
  ['x ceiling', 'right'],
  ['ceiling p99', 'right'],
  ['CPU µs/check', 'right'],
  ['x ceiling CPU', 'right'],
  ['x base', 'right'],
  ['target', 'left'],
];

const verdict = (ok) => (ok ? 'met' : 'MISSED');

/** Verdicts against issue 22's targets: ratio to the ceiling and p99 at 8x16, p99 one at a time, feature cost. */
function targetCell(target, shapeId, result) {
  if (!target) return '';
  const cells = [];
  if (shapeId === '8x16') {
    if (target.ceiling !== undefined) cells.push(`>=${target.ceiling.toFixed(2)}x ceiling ${verdict(result.ratioToCeiling >= target.ceiling)} (by CPU ${verdict(result.cpuRatioToCeiling >= target.ceiling)})`);
    if (target.p99x !== undefined && Number.isFinite(result.p99ToCeiling)) cells.push(`p99<=${target.p99x}x ceiling's ${verdict(result.p99ToCeiling <= target.p99x)}`);
    if (target.within !== undefined && result.ratioToBase !== undefined) cells.push(`${target.vs} ±${Math.round(target.within * 100)}% ${verdict(Math.abs(result.ratioToBase - 1) <= target.within)} (by CPU ${verdict(Math.abs(result.cpuRatioToBase - 1) <= target.within)})`);
  }
  if (shapeId === '1x1' && target.p99Ms !== undefined) cells.push(`p99<=${target.p99Ms} ${verdict(result.p99Ms <= target.p99Ms)}`);
  return cells.join('; ');
}

const ms = (value) => (Number.isFinite(value) ? value.toFixed(3) : '-');
const mb = (value) => (value === undefined ? '-' : `${value} MB`);
const us = (value) => (Number.isFinite(value) ? value.toFixed(1) : '-');
const x = (value) => (Number.isFinite(value) ? value.toFixed(2) : '-');
const noisy = (result) => (result?.otherUserCpuCores > 0.1 ? '*' : '');
const rate = (result) => (result ? `${result.checksPerSec}${noisy(result)}` : '-');

export function tableRows(results) {
  const rows = [];
  for (const [name, reference] of [['null server (grpc-js)', results.null], ['Node ceiling', results.ceiling]]) {
    if (!reference) continue;
    for (const generator of ['h2load', 'raw']) {
      for (const shape of SHAPES) {
        const r = reference[generator][shape.id];
        const toNull = results.null?.[generator]?.[shape.id];
        rows.push([name, shape.label, generator, rate(r), ms(r.p50Ms), ms(r.p99Ms), mb(reference.peakRssMb), '', x(r.checksPerSec / toNull.checksPerSec), '', x(r.checksPerSec / (results.ceiling?.[generator]?.[shape.id]?.checksPerSec ?? NaN)), '', us(r.cpuUsPerCheck), x((results.ceiling?.[generator]?.[shape.id]?.cpuUsPerCheck ?? NaN) / r.cpuUsPerCheck), '', '']);
      }
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
      const ceiling = s.ceiling?.[shape.id];
      rows.push([
        name, shape.label, s.generator, `${r.checksPerSec}${noisy(r)}${failed}`, ms(r.p50Ms), ms(r.p99Ms), mb(s.peakRssMb),
        rate(s.null?.[shape.id]), x(r.ratioToNull), rate(ceiling), x(r.ratioToCeiling), ms(ceiling?.p99Ms), us(r.cpuUsPerCheck), x(r.cpuRatioToCeiling),
        r.ratioToBase === undefined ? '' : `${x(r.ratioToBase)} (${s.target.vs}; CPU ${x(r.cpuRatioToBase)})`, targetCell(s.target, shape.id, r),
      ]);
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
  notes.push(`gen: h2load, or raw = bench/loadgen.mjs (a new body per request). null / ceiling, same req: the grpc-js null server and the Node ceiling (node:http2, one pre-framed CheckResponse, reads nothing) sent the scenario's own requests with the same generator and load, measured just before it. x null, x ceiling: checks/s over those. CPU µs/check: the server's CPU (user + system) per answered check; x ceiling CPU: the ceiling's CPU per check over the row's (what x ceiling would be if both had a whole core: the figure to read when other processes share the cores). x base: checks/s (and CPU per check) over the row the feature row extends (its own cost).`);
  if (results.null?.rawVsH2load !== undefined) notes.push(`The raw generator drives the null server to ${results.null.rawVsH2load.toFixed(2)}x of h2load's throughput (8x16), using ${Math.round((results.null.rawGeneratorCpuCores ?? NaN) * 100)}% of its core${results.ceiling?.rawVsH2load !== undefined ? `; the ceiling to ${results.ceiling.rawVsH2load.toFixed(2)}x` : ''}.`);
  if (results.load) notes.push(`Load average when the run started: ${results.load.loadavg1} / ${results.load.loadavg5} / ${results.load.loadavg15} (1 / 5 / 15 min).`);
  for (const s of results.scenarios) if (s.note) notes.push(`(${s.id}) ${s.note}.`);
  for (const s of results.scenarios) for (const problem of [...(s.problems ?? []), ...Object.values(s.results ?? {}).flatMap((r) => r.problems)]) notes.push(`(${s.id}) PROBLEM: ${problem}`);
  if (rows.some((row) => String(row[3]).includes('*') || String(row[7] ?? '').includes('*') || String(row[9] ?? '').includes('*'))) notes.push('* other processes used more than 10% of a core during this measurement: treat it as noisy.');
  const w = results.workers;
  if (w?.status === 'measured') {
    notes.push(`serve --workers (scenario a, 8x16, unpinned, h2load on the same 2 cores): 1 worker ${w.results[1].checksPerSec}/s (${w.results[1].peakRssMb} MB), 2 workers ${w.results[2].checksPerSec}/s (${w.results[2].peakRssMb} MB): ${w.scaling.toFixed(2)}x (target >= 1.6x ${verdict(w.scaling >= 1.6)}).`);
    if (w.ceilingScaling !== undefined) notes.push(`The Node ceiling the same way (ceiling-server.mjs --workers, node:cluster): 1 process ${w.ceiling[1].checksPerSec}/s, 2 processes ${w.ceiling[2].checksPerSec}/s: ${w.ceilingScaling.toFixed(2)}x; Portcullis' scaling is ${(w.scaling / w.ceilingScaling).toFixed(2)}x the ceiling's.`);
  } else if (w) {
    notes.push(`serve --workers: ${w.status}${w.reason ? `: ${w.reason}` : ''}.`);
  }
  return `${out.join('\n')}\n\n${notes.join('\n')}`;
}
