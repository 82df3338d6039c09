// Workload identities (README "Workload identities (peer)"): the caller is the workload whose
// client certificate Envoy verified on an mTLS connection — Envoy's source.principal, e.g. the
// SPIFFE ID spiffe://cluster.local/ns/checkout/sa/payments — matched exactly or by a pattern of
// named path segments to a tenant, subject and scopes. Read from RequestAttributes.peer; a request
// header (x-forwarded-client-cert) only where the policy says the proxy sets it and strips client
// copies (forwardedClientCert).

import { LRUCache } from 'lru-cache';
import type { PeerSourceConfig } from '../mesh/config.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { Principal, RequestAttributes } from '../types.js';
import { NOT_PRESENT, rejected, type CredentialSource, type IdentifyResult } from './source.js';

/** A named segment's value: what a SPIFFE path segment may hold (letters, digits, ".", "_", "-"). */
const SEGMENT_VALUE = /^[A-Za-z0-9._-]+$/;
const SEGMENT_NAME = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
const TEMPLATE_REF = /\{([^{}]*)\}/g;
/** Distinct principals matched by patterns whose principal objects are kept (stable objects keep the allow cache warm). */
const MAX_CACHED_PRINCIPALS = 10_000;

type Segment = string | { readonly name: string };

interface Pattern {
  readonly segments: readonly Segment[];
  readonly make: (values: ReadonlyMap<string, string>, principal: string) => IdentifyResult;
}

const UNMATCHED = Object.freeze({ reason: 'peer_not_allowed', credentialPresented: true } as const);

export function compilePeerSource(config: PeerSourceConfig, at: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  const exact = new Map<string, IdentifyResult>();
  const patterns: Pattern[] = [];
  let ok = true;
  for (const [key, entry] of Object.entries(config.principals)) {
    const path = [...at, 'principals', key];
    const parts = key.split('/');
    const names: string[] = [];
    const segments: Segment[] = [];
    for (const part of parts) {
      if (!part.includes('{') && !part.includes('}')) {
        segments.push(part);
        continue;
      }
      const m = SEGMENT_NAME.exec(part);
      if (!m) {
        ctx.error(path, `"${part}" is not a pattern segment: a {name} stands for a whole path segment ({namespace}, not ns-{namespace})`);
        ok = false;
        continue;
      }
      if (names.includes(m[1]!)) {
        ctx.error(path, `{${m[1]}} appears twice`);
        ok = false;
      }
      names.push(m[1]!);
      segments.push({ name: m[1]! });
    }
    for (const [field, value] of templateFields(entry)) {
      for (const ref of value.matchAll(TEMPLATE_REF)) {
        if (!names.includes(ref[1]!)) {
          ctx.error([...path, ...field], names.length === 0 ? `"{${ref[1]}}": the principal has no {name} segments` : `"{${ref[1]}}" is not a segment of the principal (${names.map((n) => `{${n}}`).join(', ')})`);
          ok = false;
        }
      }
    }
    if (entry.next) {
      if (names.length === 0) exact.set(key, NOT_PRESENT);
      else patterns.push({ segments, make: () => NOT_PRESENT });
    } else if (names.length === 0) {
      exact.set(key, identified({ method: 'peer', tenant: entry.tenant, subject: entry.subject ?? key, scopes: Object.freeze([...entry.scopes]) }));
    } else {
      const fill = (text: string, values: ReadonlyMap<string, string>) => text.replace(TEMPLATE_REF, (_, name: string) => values.get(name)!);
      patterns.push({
        segments,
        make: (values, principal) =>
          identified({
            method: 'peer',
            tenant: entry.tenant === undefined ? undefined : fill(entry.tenant, values),
            subject: entry.subject === undefined ? principal : fill(entry.subject, values),
            scopes: Object.freeze(entry.scopes.map((s) => fill(s, values))),
          }),
      });
    }
  }
  if (!ok) return undefined;

  const miss: IdentifyResult = config.unmatched === 'deny' ? rejected(UNMATCHED) : NOT_PRESENT;
  const byPattern = patterns.length > 0 ? new LRUCache<string, IdentifyResult>({ max: MAX_CACHED_PRINCIPALS }) : undefined;

  const xfccHeader = config.forwardedClientCert?.header;
  return {
    method: 'peer',
    name: 'peer',
    identify(request: RequestAttributes): IdentifyResult {
      let principal = request.peer?.principal;
      if ((principal === undefined || principal === '') && xfccHeader !== undefined) principal = xfccUri(request.headers.get(xfccHeader));
      if (principal === undefined || principal === '') return NOT_PRESENT;
      const hit = exact.get(principal);
      if (hit !== undefined) return hit;
      if (byPattern === undefined) return miss;
      const cached = byPattern.get(principal);
      if (cached !== undefined) return cached;
      const result = matchPatterns(patterns, principal);
      // Misses are not cached: any client certificate could fill the cache with them.
      if (result === undefined) return miss;
      byPattern.set(principal, result);
      return result;
    },
  };
}

/** Longer XFCC values are not read (a chain of certificates has no business in an identity check). */
const MAX_XFCC_LENGTH = 16_384;

/**
 * The URI of the last element of an XFCC header (Envoy's format: elements separated by ",", pairs
 * key=value separated by ";", values double-quoted when they contain , ; or =, \" inside quotes).
 * The last element is the one the nearest proxy added. Undefined when absent or malformed.
 */
export function xfccUri(value: string | undefined): string | undefined {
  if (value === undefined || value === '' || value.length > MAX_XFCC_LENGTH) return undefined;
  // Pairs of the last element, found in one pass that honours quotes.
  let pairs: [string, string][] = [];
  let key = '';
  let current = '';
  let inQuotes = false;
  let quoted = false;
  let readingKey = true;
  const endPair = () => {
    if (!readingKey) pairs.push([key.trim().toLowerCase(), current]);
    else if (current.trim() !== '') pairs.push(['', current]);
    key = '';
    current = '';
    readingKey = true;
    quoted = false;
  };
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (inQuotes) {
      if (c === '\\' && i + 1 < value.length) current += value[++i];
      else if (c === '"') inQuotes = false;
      else current += c;
      continue;
    }
    if (c === '"' && !readingKey && current === '' && !quoted) {
      inQuotes = quoted = true;
    } else if (c === '=' && readingKey) {
      key = current;
      current = '';
      readingKey = false;
    } else if (c === ';') endPair();
    else if (c === ',') {
      endPair();
      pairs = [];
    } else current += c;
  }
  if (inQuotes) return undefined;
  endPair();
  const uri = pairs.find(([k]) => k === 'uri')?.[1];
  return uri === undefined || uri === '' ? undefined : uri;
}

function matchPatterns(patterns: readonly Pattern[], principal: string): IdentifyResult | undefined {
  const parts = principal.split('/');
  for (const pattern of patterns) {
    if (pattern.segments.length !== parts.length) continue;
    const values = new Map<string, string>();
    let matched = true;
    for (let i = 0; i < parts.length && matched; i++) {
      const seg = pattern.segments[i]!;
      const part = parts[i]!;
      if (typeof seg === 'string') matched = seg === part;
      else if (SEGMENT_VALUE.test(part)) values.set(seg.name, part);
      else matched = false;
    }
    if (matched) return pattern.make(values, principal);
  }
  return undefined;
}

function identified(principal: Principal): IdentifyResult {
  return Object.freeze({ kind: 'principal', principal: Object.freeze(principal) });
}

function templateFields(entry: PeerSourceConfig['principals'][string]): [PolicyPath, string][] {
  const out: [PolicyPath, string][] = [];
  if (entry.tenant !== undefined) out.push([['tenant'], entry.tenant]);
  if (entry.subject !== undefined) out.push([['subject'], entry.subject]);
  entry.scopes.forEach((s, i) => out.push([['scopes', i], s]));
  return out;
}
