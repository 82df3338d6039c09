// Route matching, compiled once per policy into per-host tables.
//
// Precedence (README "Route precedence"), most specific first, file order only breaking ties:
//   1. host: exact host  >  "*.domain" wildcard (longest first)  >  routes without a host
//   2. within a host level, path: exact  >  template (more literal segments first)  >
//      prefix or glob (more literal characters first: "/v1/files/**/raw" beats "/v1/")
//   3. for the same path pattern, routes listing methods before routes for any method
// A request that matches nothing at one host level falls through to the next.

import { RE2JS } from 're2js';

export interface RouteMatchSpec {
  readonly host?: string;
  readonly methods?: readonly string[];
  readonly path?: string;
  readonly pathPrefix?: string;
  readonly pathGlob?: string;
}

const enum Kind {
  Exact = 0,
  Template = 1,
  /** Prefixes and globs share a tier, ranked by how many literal characters they pin down. */
  Pattern = 2,
}

interface Candidate<T> {
  readonly value: T;
  readonly index: number;
  readonly kind: Kind;
  /** Higher is more specific within a kind. */
  readonly specificity: number;
  readonly methods: ReadonlySet<string> | undefined;
  readonly test: (path: string) => boolean;
  /** The route's match as written (explanations and validation warnings; never read per request). */
  readonly spec: RouteMatchSpec;
}

/** One route as `explain` saw it for a request. */
export interface ConsideredRoute<T> {
  readonly value: T;
  readonly spec: RouteMatchSpec;
  readonly matched: boolean;
  readonly why: string;
}

class HostTable<T> {
  private readonly exact = new Map<string, Candidate<T>[]>();
  private readonly others: Candidate<T>[] = [];

  add(candidate: Candidate<T>, exactPath: string | undefined): void {
    if (exactPath !== undefined) {
      const list = this.exact.get(exactPath) ?? [];
      list.push(candidate);
      this.exact.set(exactPath, list);
    } else {
      this.others.push(candidate);
    }
  }

  seal(): void {
    for (const list of this.exact.values()) list.sort(compareCandidates);
    this.others.sort(compareCandidates);
  }

  match(method: string, path: string): T | undefined {
    const exact = this.exact.get(path);
    if (exact) {
      for (const c of exact) if (c.methods === undefined || c.methods.has(method)) return c.value;
    }
    for (const c of this.others) {
      if ((c.methods === undefined || c.methods.has(method)) && c.test(path)) return c.value;
    }
    return undefined;
  }

  get size(): number {
    return this.exact.size + this.others.length;
  }

  /** Every candidate in the order match() tries them (exact paths first), for explanations. */
  ordered(): Candidate<T>[] {
    const out: Candidate<T>[] = [];
    for (const list of this.exact.values()) out.push(...list);
    out.sort(compareCandidates);
    return [...out, ...this.others];
  }
}

function compareCandidates<T>(a: Candidate<T>, b: Candidate<T>): number {
  return (
    a.kind - b.kind ||
    b.specificity - a.specificity ||
    (a.methods ? 0 : 1) - (b.methods ? 0 : 1) ||
    a.index - b.index
  );
}

export class RouteTable<T> {
  private readonly exactHosts = new Map<string, HostTable<T>>();
  private readonly wildcardHosts: { suffix: string; table: HostTable<T> }[] = [];
  private readonly anyHost = new HostTable<T>();

  constructor(routes: readonly { spec: RouteMatchSpec; value: T }[]) {
    routes.forEach(({ spec, value }, index) => {
      const { candidate, exactPath } = compileCandidate(spec, value, index);
      this.tableFor(spec.host).add(candidate, exactPath);
    });
    this.wildcardHosts.sort((a, b) => b.suffix.length - a.suffix.length);
    for (const table of this.exactHosts.values()) table.seal();
    for (const { table } of this.wildcardHosts) table.seal();
    this.anyHost.seal();
  }

  /** `host` as authz/host.ts's hostKey gives it, `path` one reading of the raw path (pipeline/route-candidates.ts). */
  match(host: string, method: string, path: string): T | undefined {
    if (this.exactHosts.size > 0) {
      const hit = this.exactHosts.get(host)?.match(method, path);
      if (hit !== undefined) return hit;
    }
    for (const { suffix, table } of this.wildcardHosts) {
      if (host.length > suffix.length && host.endsWith(suffix)) {
        const hit = table.match(method, path);
        if (hit !== undefined) return hit;
      }
    }
    return this.anyHost.match(method, path);
  }

  /** The host tables in the order a request tries them (for validation). */
  levels(): { host: string | undefined; table: HostTable<T> }[] {
    return [
      ...[...this.exactHosts].map(([host, table]) => ({ host, table })),
      ...this.wildcardHosts.map(({ suffix, table }) => ({ host: `*${suffix}`, table })),
      { host: undefined, table: this.anyHost },
    ];
  }

  /**
   * What match() does, step by step: every route with whether it matched and why it was or was
   * not chosen. For `portcullis check` and server.explain only; match() is the hot path.
   */
  explain(host: string, method: string, path: string): { chosen: T | undefined; considered: ConsideredRoute<T>[] } {
    const considered: ConsideredRoute<T>[] = [];
    let chosen: T | undefined;
    const levels: { label: string; table: HostTable<T>; applies: boolean }[] = [];
    for (const [name, table] of this.exactHosts) levels.push({ label: `host ${name}`, table, applies: name === host });
    for (const { suffix, table } of this.wildcardHosts) {
      levels.push({ label: `host *${suffix}`, table, applies: host.length > suffix.length && host.endsWith(suffix) });
    }
    levels.push({ label: 'any host', table: this.anyHost, applies: true });
    for (const level of levels) {
      for (const c of level.table.ordered()) {
        const pathOk = c.spec.path !== undefined && !c.spec.path.includes('{') ? c.spec.path === path : c.test(path);
        const methodOk = c.methods === undefined || c.methods.has(method);
        let why: string;
        let matched = false;
        if (!level.applies) why = `${level.label} does not match "${host}"`;
        else if (!pathOk) why = `path "${path}" does not match`;
        else if (!methodOk) why = `method ${method} is not one of ${[...c.methods!].join(', ')}`;
        else if (chosen !== undefined) why = 'matches, but a more specific route was chosen first';
        else {
          chosen = c.value;
          matched = true;
          why = `${level.label}, ${kindLabel(c.kind)} match${c.methods ? `, method ${method}` : ''}`;
        }
        considered.push({ value: c.value, spec: c.spec, matched, why });
      }
    }
    return { chosen, considered };
  }

  private tableFor(host: string | undefined): HostTable<T> {
    if (host === undefined) return this.anyHost;
    const name = host.toLowerCase();
    if (name.startsWith('*.')) {
      const suffix = name.slice(1);
      let entry = this.wildcardHosts.find((w) => w.suffix === suffix);
      if (!entry) {
        entry = { suffix, table: new HostTable<T>() };
        this.wildcardHosts.push(entry);
      }
      return entry.table;
    }
    let table = this.exactHosts.get(name);
    if (!table) {
      table = new HostTable<T>();
      this.exactHosts.set(name, table);
    }
    return table;
  }
}

const TEMPLATE_PARAM = /^\{[A-Za-z_][A-Za-z0-9_]*\}$/;

function compileCandidate<T>(spec: RouteMatchSpec, value: T, index: number): { candidate: Candidate<T>; exactPath?: string } {
  const methods = spec.methods ? new Set(spec.methods) : undefined;
  const base = { value, index, methods, spec };
  if (spec.path !== undefined) {
    if (!spec.path.includes('{')) {
      return { candidate: { ...base, kind: Kind.Exact, specificity: 0, test: () => true }, exactPath: spec.path };
    }
    const segments = spec.path.split('/');
    const literal = segments.filter((s) => s !== '' && !TEMPLATE_PARAM.test(s)).length;
    const pattern = segments.map((s) => (TEMPLATE_PARAM.test(s) ? '[^/]+' : escapeRegExp(s))).join('/');
    const re = new RegExp(`^${pattern}$`);
    return { candidate: { ...base, kind: Kind.Template, specificity: literal * 1000 + segments.length, test: (p) => re.test(p) } };
  }
  if (spec.pathPrefix !== undefined) {
    // Segment-aware: "/v1/admin" and "/v1/admin/" both match "/v1/admin" and "/v1/admin/x",
    // never "/v1/administrator".
    const prefix = spec.pathPrefix.endsWith('/') ? spec.pathPrefix.slice(0, -1) : spec.pathPrefix;
    const withSlash = prefix + '/';
    const test = prefix === '' ? () => true : (p: string) => p === prefix || p.startsWith(withSlash);
    return { candidate: { ...base, kind: Kind.Pattern, specificity: prefix.length, test } };
  }
  const glob = spec.pathGlob!;
  const literal = glob.replace(/\*/g, '').length;
  return { candidate: { ...base, kind: Kind.Pattern, specificity: literal, test: globTest(glob) } };
}

/**
 * A glob's test on a path. One wildcard compiles to a JavaScript RegExp, which is linear for it
 * (and the fastest); two or more can overlap ("/a/**" + "/b/**" + "/c" on "/a/b/b/b/…" is
 * quadratic, three "**" cubic: an attacker's 30 KB path would stop the event loop for seconds on
 * every check), so such globs run on RE2's DFA (testExact), linear whatever the path.
 */
function globTest(glob: string): (path: string) => boolean {
  const source = `^${globToRegExp(glob)}$`;
  if ((glob.match(/\*\*?/g) ?? []).length <= 1) {
    const re = new RegExp(source);
    return (path) => re.test(path);
  }
  const re2 = RE2JS.compile(source);
  return (path) => re2.testExact(path);
}

/** "**" matches any number of characters including "/", "*" any characters but "/". */
export function globToRegExp(glob: string): string {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!;
    if (ch === '*') {
      if (glob[i + 1] === '*') {
        out += '.*';
        i++;
      } else {
        out += '[^/]*';
      }
    } else {
      out += escapeRegExp(ch);
    }
  }
  return out;
}

/** A template is valid when every {…} is a whole segment with a simple name. */
export function templateProblem(path: string): string | undefined {
  for (const segment of path.split('/')) {
    if (segment.includes('{') || segment.includes('}')) {
      if (!TEMPLATE_PARAM.test(segment)) return `template segment "${segment}" must be a whole segment like {id}`;
    }
  }
  return undefined;
}

function kindLabel(kind: Kind): string {
  return kind === Kind.Exact ? 'exact path' : kind === Kind.Template ? 'path template' : 'prefix/glob';
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export function describeMatch(spec: RouteMatchSpec): string {
  const methods = spec.methods ? spec.methods.join(',') + ' ' : '';
  const host = spec.host ? spec.host : '';
  const path = spec.path ?? (spec.pathPrefix !== undefined ? `${spec.pathPrefix}*` : spec.pathGlob ?? '');
  return `${methods}${host}${path}`;
}

export interface RouteOverlap {
  /** Index of the route tried first. */
  readonly winner: number;
  /** Index of the route that loses the requests. */
  readonly loser: number;
  /** The loser can never match: the winner takes every request it would. */
  readonly full: boolean;
  /** A request the loser was written for that the winner takes ("GET /v1/items/x"). */
  readonly example: string;
}

/**
 * Routes that lose requests to a route tried before them (load-time validation warnings). Full:
 * the earlier route matches everything the later one does. Otherwise: the earlier route takes a
 * representative request of the later one (its own path, with parameters and wildcards filled in).
 */
export function findOverlaps(routes: readonly { spec: RouteMatchSpec; index: number }[]): RouteOverlap[] {
  const table = new RouteTable(routes.map((r) => ({ spec: r.spec, value: r.index })));
  const levels = table.levels();
  const out: RouteOverlap[] = [];
  const seen = new Set<string>();
  for (let li = 0; li < levels.length; li++) {
    for (let lj = li; lj < levels.length; lj++) {
      const a = levels[li]!;
      const b = levels[lj]!;
      if (li !== lj && !hostLevelPrecedes(a.host, b.host)) continue;
      const first = a.table.ordered();
      const second = li === lj ? first : b.table.ordered();
      for (let i = 0; i < first.length; i++) {
        for (let j = li === lj ? i + 1 : 0; j < second.length; j++) {
          const A = first[i]!;
          const B = second[j]!;
          const methods = sharedMethod(A.methods, B.methods);
          if (methods === undefined) continue;
          const key = `${A.value}:${B.value}`;
          if (seen.has(key)) continue;
          const full = li === lj && superset(A.methods, B.methods) && covers(A.spec, B.spec);
          const sample = samplePaths(B.spec).find((p) => matches(A, p));
          if (!full && sample === undefined) continue;
          seen.add(key);
          out.push({ winner: A.value, loser: B.value, full, example: `${methods} ${b.host && !b.host.startsWith('*') ? b.host : a.host && !a.host.startsWith('*') ? a.host : ''}${sample ?? samplePaths(B.spec)[0]}` });
        }
      }
    }
  }
  return out;
}

function hostLevelPrecedes(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined) return false;
  if (b === undefined) return true;
  if (!a.startsWith('*.') && b.startsWith('*.')) return a.endsWith(b.slice(1));
  if (a.startsWith('*.') && b.startsWith('*.')) return a.length > b.length && a.endsWith(b.slice(1));
  return false;
}

function sharedMethod(a: ReadonlySet<string> | undefined, b: ReadonlySet<string> | undefined): string | undefined {
  if (a === undefined) return b === undefined ? 'GET' : [...b][0];
  if (b === undefined) return [...a][0];
  for (const m of a) if (b.has(m)) return m;
  return undefined;
}

function superset(a: ReadonlySet<string> | undefined, b: ReadonlySet<string> | undefined): boolean {
  if (a === undefined) return true;
  if (b === undefined) return false;
  for (const m of b) if (!a.has(m)) return false;
  return true;
}

function matches<T>(c: Candidate<T>, path: string): boolean {
  return c.spec.path !== undefined && !c.spec.path.includes('{') ? c.spec.path === path : c.test(path);
}

function samplePaths(spec: RouteMatchSpec): string[] {
  if (spec.path !== undefined) return [spec.path.replace(/\{[A-Za-z_][A-Za-z0-9_]*\}/g, 'x')];
  if (spec.pathPrefix !== undefined) {
    const prefix = spec.pathPrefix.endsWith('/') ? spec.pathPrefix.slice(0, -1) : spec.pathPrefix;
    return [`${prefix}/x`, prefix === '' ? '/' : prefix];
  }
  return [spec.pathGlob!.replace(/\*\*/g, 'x/x').replace(/\*/g, 'x')];
}

/** Whether `a` matches every path `b` matches (same kind of pattern only). */
function covers(a: RouteMatchSpec, b: RouteMatchSpec): boolean {
  if (a.path !== undefined && b.path !== undefined) {
    const as = a.path.split('/');
    const bs = b.path.split('/');
    return as.length === bs.length && as.every((s, i) => s === bs[i] || (TEMPLATE_PARAM.test(s) && TEMPLATE_PARAM.test(bs[i]!)) || (TEMPLATE_PARAM.test(s) && !bs[i]!.includes('{') && bs[i] !== ''));
  }
  if (a.pathPrefix !== undefined && b.pathPrefix !== undefined) {
    const pa = a.pathPrefix.replace(/\/$/, '');
    const pb = b.pathPrefix.replace(/\/$/, '');
    return pa === '' || pb === pa || pb.startsWith(pa + '/');
  }
  return a.pathGlob !== undefined && a.pathGlob === b.pathGlob;
}
