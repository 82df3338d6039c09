// "did you mean …": the closest known name to a misspelt one, for unknown keys and unknown
// references (issuers, rate-limit policies, routes). Runs at load time only.

import type { z } from 'zod';

/** The known name closest to `name` (case-insensitive edit distance ≤ a third of its length), or undefined. */
export function closest(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const lower = name.toLowerCase();
  for (const candidate of known) {
    if (candidate === name) continue;
    const d = distance(lower, candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  const allowed = Math.max(1, Math.floor(Math.max(name.length, 3) / 3));
  // A suggestion shares most of the name: never "a" for "b".
  return best !== undefined && bestDistance <= allowed && bestDistance < Math.min(name.length, best.length) ? best : undefined;
}

/** ' (did you mean "x"?)' or ''. */
export function didYouMean(name: string, known: Iterable<string>): string {
  const hit = closest(name, known);
  return hit === undefined ? '' : ` (did you mean "${hit}"?)`;
}

/** Levenshtein distance with adjacent transpositions counted as one edit. */
function distance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 8) return Infinity;
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push([i]);
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        rows[0]![j] = j;
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = d;
    }
  }
  return rows[a.length]![b.length]!;
}

type AnySchema = z.ZodType;
interface Def {
  type: string;
  innerType?: AnySchema;
  in?: AnySchema;
  out?: AnySchema;
  shape?: Record<string, AnySchema>;
  element?: AnySchema;
  valueType?: AnySchema;
  options?: AnySchema[];
  getter?: () => AnySchema;
}

function defOf(schema: AnySchema): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

function unwrap(schema: AnySchema): AnySchema[] {
  let current = schema;
  for (let i = 0; i < 20; i++) {
    const def = defOf(current);
    if (def.innerType && ['optional', 'nullable', 'default', 'prefault', 'readonly', 'catch', 'nonoptional'].includes(def.type)) current = def.innerType;
    else if (def.type === 'pipe' && def.in) current = def.in;
    else if (def.type === 'lazy' && def.getter) current = def.getter();
    else if (def.type === 'union' && def.options) return def.options.flatMap(unwrap);
    else return [current];
  }
  return [current];
}

/** The keys the object schema at `path` inside `schema` accepts (for unknown-key suggestions). */
export function knownKeysAt(schema: AnySchema, path: readonly (string | number)[]): string[] {
  let current = unwrap(schema);
  for (const part of path) {
    const next: AnySchema[] = [];
    for (const s of current) {
      const def = defOf(s);
      if (def.type === 'object' && typeof part === 'string' && def.shape?.[part]) next.push(...unwrap(def.shape[part]!));
      else if (def.type === 'array' && def.element) next.push(...unwrap(def.element));
      else if (def.type === 'record' && def.valueType) next.push(...unwrap(def.valueType));
    }
    current = next;
  }
  const keys = new Set<string>();
  for (const s of current) {
    const def = defOf(s);
    if (def.type === 'object' && def.shape) for (const key of Object.keys(def.shape)) keys.add(key);
  }
  return [...keys];
}
