// `request` and `auth` as CEL sees them. Every field is computed on first read and kept for the
// rest of the evaluation: an expression that reads request.method never parses the query string,
// and a route without expressions never builds a view at all.

import type { Principal, RequestAttributes } from '../types.js';

/** Query parameters beyond this many make request.query / queryAll an evaluation error (deny). */
export const MAX_QUERY_PARAMS = 128;

const EMPTY_MAP: ReadonlyMap<string, unknown> = new Map();
const NO_STRINGS: readonly string[] = Object.freeze([]);

/** What a route knows about a request beyond its attributes (compiled once per route). */
export interface RequestFacts {
  /** Named template segments of the matched route ({company_id} → value), or undefined. */
  readonly params: ((path: string) => Map<string, string> | undefined) | undefined;
  /**
   * The header names the route's expressions read (literal names, checked at load), minus every
   * header a credential source of the identity chain reads: those are never visible.
   */
  readonly headerNames: readonly string[];
  readonly clientIp: (request: RequestAttributes) => string;
}

export class RequestView {
  private paramsMap: Map<string, string> | undefined;
  private queryMaps: [Map<string, string>, Map<string, string[]>] | undefined;
  private headersMap: Map<string, string> | undefined;
  private ipValue: string | undefined;

  constructor(
    private readonly request: RequestAttributes,
    private readonly normalizedPath: string,
    private readonly facts: RequestFacts,
  ) {}

  get method(): string {
    return this.request.method;
  }
  get scheme(): string {
    return this.request.scheme.toLowerCase();
  }
  get host(): string {
    return this.request.host;
  }
  get path(): string {
    return this.normalizedPath;
  }
  get params(): Map<string, string> {
    return (this.paramsMap ??= this.facts.params?.(this.normalizedPath) ?? new Map());
  }
  get query(): Map<string, string> {
    return (this.queryMaps ??= parseQuery(this.request.query))[0];
  }
  get queryAll(): Map<string, string[]> {
    return (this.queryMaps ??= parseQuery(this.request.query))[1];
  }
  get headers(): Map<string, string> {
    if (this.headersMap === undefined) {
      const map = new Map<string, string>();
      for (const name of this.facts.headerNames) {
        const value = this.request.headers.get(name);
        if (value !== undefined) map.set(name, value);
      }
      this.headersMap = map;
    }
    return this.headersMap;
  }
  get ip(): string {
    return (this.ipValue ??= this.facts.clientIp(this.request));
  }
}

/** Claims of the verified token (JWT callers), read once per evaluation when an expression asks. */
export type ClaimsReader = () => Readonly<Record<string, unknown>> | undefined;

export class AuthView {
  private claimsValue: Readonly<Record<string, unknown>> | undefined;

  constructor(
    private readonly principal: Principal | undefined,
    private readonly readClaims: ClaimsReader | undefined,
  ) {}

  get method(): string {
    return this.principal?.method ?? '';
  }
  get tenant(): string {
    return this.principal?.tenant ?? '';
  }
  get subject(): string {
    return this.principal?.subject ?? '';
  }
  get scopes(): readonly string[] {
    return this.principal?.scopes ?? NO_STRINGS;
  }
  get keyId(): string {
    return this.principal?.keyId ?? '';
  }
  get email(): string {
    return this.principal?.email ?? '';
  }
  get claims(): Readonly<Record<string, unknown>> | ReadonlyMap<string, unknown> {
    if (this.claimsValue === undefined) this.claimsValue = this.readClaims?.() ?? (EMPTY_MAP as unknown as Record<string, unknown>);
    return this.claimsValue;
  }
}

/**
 * "a=1&b=2&a=3" → first values and all values. `+` is a space and %XX is decoded (the form
 * encoding browsers and most clients use); a malformed escape or more than MAX_QUERY_PARAMS
 * parameters throws, which denies (condition_error) rather than guess.
 */
export function parseQuery(query: string): [Map<string, string>, Map<string, string[]>] {
  const first = new Map<string, string>();
  const all = new Map<string, string[]>();
  if (query === '') return [first, all];
  let count = 0;
  for (const part of query.split('&')) {
    if (part === '') continue;
    if (++count > MAX_QUERY_PARAMS) throw new RangeError(`more than ${MAX_QUERY_PARAMS} query parameters`);
    const eq = part.indexOf('=');
    const key = decodeComponent(eq < 0 ? part : part.slice(0, eq));
    const value = eq < 0 ? '' : decodeComponent(part.slice(eq + 1));
    if (!first.has(key)) first.set(key, value);
    const list = all.get(key);
    if (list) list.push(value);
    else all.set(key, [value]);
  }
  return [first, all];
}

function decodeComponent(text: string): string {
  const spaced = text.includes('+') ? text.replace(/\+/g, ' ') : text;
  return spaced.includes('%') ? decodeURIComponent(spaced) : spaced;
}
