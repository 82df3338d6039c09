// `request` and `auth` as CEL sees them. Every field is computed on first read and kept for the
// rest of the evaluation: an expression that reads request.method never parses the query string,
// and a route without expressions never builds a view at all.

import type { Clock } from '../clock.js';
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
  private queryFirst: Map<string, string> | undefined;
  private queryAllMap: Map<string, string[]> | undefined;
  private headersMap: Map<string, string> | undefined;
  private ipValue: string | undefined;

  constructor(
    private readonly request: RequestAttributes,
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
  /**
   * The path as sent (what the upstream serves). Non-canonical paths never reach an expression
   * unless the policy judges them by every reading (paths.nonCanonical: strictest); then params
   * that do not match the raw path are absent, and an expression reading them denies.
   */
  get path(): string {
    return this.request.path;
  }
  get params(): Map<string, string> {
    return (this.paramsMap ??= this.facts.params?.(this.path) ?? new Map());
  }
  get query(): Map<string, string> {
    return (this.queryFirst ??= parseQuery(this.request.query));
  }
  get queryAll(): Map<string, string[]> {
    return (this.queryAllMap ??= parseQueryAll(this.request.query));
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
  /** Claims `enrich:` steps looked up (never the token's: those are `claims`). */
  get enriched(): Readonly<Record<string, unknown>> | ReadonlyMap<string, unknown> {
    return this.principal?.enriched ?? (EMPTY_MAP as unknown as Record<string, unknown>);
  }
  get claims(): Readonly<Record<string, unknown>> | ReadonlyMap<string, unknown> {
    if (this.claimsValue === undefined) this.claimsValue = this.readClaims?.() ?? (EMPTY_MAP as unknown as Record<string, unknown>);
    return this.claimsValue;
  }
}

/**
 * "a=1&b=2&a=3" → first value per name (parseQuery) or every value (parseQueryAll). `+` is a space
 * and %XX is decoded (the form encoding browsers and most clients use); a malformed escape or more
 * than MAX_QUERY_PARAMS parameters throws, which denies (condition_error) rather than guess.
 */
export function parseQuery(query: string): Map<string, string> {
  const first = new Map<string, string>();
  eachParam(query, (key, value) => {
    if (!first.has(key)) first.set(key, value);
  });
  return first;
}

export function parseQueryAll(query: string): Map<string, string[]> {
  const all = new Map<string, string[]>();
  eachParam(query, (key, value) => {
    const list = all.get(key);
    if (list) list.push(value);
    else all.set(key, [value]);
  });
  return all;
}

function eachParam(query: string, add: (key: string, value: string) => void): void {
  let count = 0;
  let start = 0;
  while (start <= query.length) {
    let end = query.indexOf('&', start);
    if (end < 0) end = query.length;
    if (end > start) {
      if (++count > MAX_QUERY_PARAMS) throw new RangeError(`more than ${MAX_QUERY_PARAMS} query parameters`);
      const eq = query.indexOf('=', start);
      if (eq < 0 || eq > end) add(decodeComponent(query.slice(start, end)), '');
      else add(decodeComponent(query.slice(start, eq)), decodeComponent(query.slice(eq + 1, end)));
    }
    start = end + 1;
  }
}

function decodeComponent(text: string): string {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 43 /* + */ || c === 37 /* % */) return decodeURIComponent(text.replace(/\+/g, ' '));
  }
  return text;
}

/** The variables an expression is evaluated with; `now` is read from the clock only if used. */
export class ExpressionScope {
  private nowValue: Date | undefined;
  constructor(
    readonly request: RequestView,
    readonly auth: AuthView,
    private readonly clock: Clock,
  ) {}
  get now(): Date {
    return (this.nowValue ??= new Date(this.clock.now()));
  }
}
