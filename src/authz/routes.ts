// Route matching, compiled once per policy into per-host tables.
//
// Precedence (README "Route precedence"), most specific first, file order only breaking ties:
//   1. host: exact host  >  "*.domain" wildcard (longest first)  >  routes without a host
//   2. within a host level, path: exact  >  template (more literal segments first)  >
//      prefix or glob (more literal characters first: "/v1/files/**/raw" beats "/v1/")
//   3. for the same path pattern, routes listing methods before routes for any method
// A request that matches nothing at one host level falls through to the next.

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
  const base = { value, index, methods };
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
  const re = new RegExp(`^${globToRegExp(glob)}$`);
  const literal = glob.replace(/\*/g, '').length;
  return { candidate: { ...base, kind: Kind.Pattern, specificity: literal, test: (p) => re.test(p) } };
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

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export function describeMatch(spec: RouteMatchSpec): string {
  const methods = spec.methods ? spec.methods.join(',') + ' ' : '';
  const host = spec.host ? spec.host : '';
  const path = spec.path ?? (spec.pathPrefix !== undefined ? `${spec.pathPrefix}*` : spec.pathGlob ?? '');
  return `${methods}${host}${path}`;
}
