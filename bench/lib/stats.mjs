// Small helpers shared by the bench scripts.

import fs from 'node:fs';

/** Value at quantile q (0..1) of an ascending-sorted array (nearest-rank). */
export function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

function statusField(pid, field) {
  try {
    const match = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Peak resident set size of a process (kB), from /proc/<pid>/status VmHWM. */
export const readVmHwmKb = (pid) => statusField(pid, 'VmHWM');
/** Current resident set size (kB). */
export const readVmRssKb = (pid) => statusField(pid, 'VmRSS');
