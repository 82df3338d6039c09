// Where an API key travels in a request: one of the configured headers, or `Authorization: Bearer`
// with a configured prefix. The built-in and the external key sources both read a request through
// this one function, so they can never disagree about what counts as a key or as two keys, and
// both take their removal rule (what never reaches the upstream) from keyRemoval below.

import type { RequestAttributes } from '../types.js';

const BEARER = /^bearer +/i;

/**
 * What findApiKey found, written into an object the source owns (no allocation per request;
 * read synchronously right after the call). `slot` is the header's index in `headers`, or
 * `headers.length` for the Bearer value; `extraSlots` lists other slots carrying the same key.
 */
export interface FoundKey {
  key: string;
  slot: number;
  extraSlots: number[] | undefined;
}

export function newFoundKey(): FoundKey {
  return { key: '', slot: -1, extraSlots: undefined };
}

/**
 * 'found' (into `out`), 'none' (no key of ours in the request) or 'malformed': an empty value, a
 * value with "," (repeated headers joined by Envoy), or two different keys — the request carries
 * more than one credential and none is guessed.
 */
export function findApiKey(request: { readonly headers: { get(name: string): string | undefined } }, headers: readonly string[], bearerPrefixes: readonly string[], out: FoundKey): 'found' | 'none' | 'malformed' {
  let key: string | undefined;
  out.slot = -1;
  out.extraSlots = undefined;
  for (let i = 0; i < headers.length; i++) {
    const value = request.headers.get(headers[i]!);
    if (value === undefined) continue;
    const candidate = value.trim();
    if (candidate === '' || candidate.includes(',')) return 'malformed';
    if (key === undefined) {
      key = candidate;
      out.slot = i;
    } else if (candidate !== key) return 'malformed';
    else (out.extraSlots ??= []).push(i);
  }
  if (bearerPrefixes.length > 0) {
    const authorization = request.headers.get('authorization');
    if (authorization !== undefined) {
      const token = bearerKey(authorization, bearerPrefixes);
      if (token === 'malformed') return 'malformed';
      if (token !== undefined) {
        if (key === undefined) {
          key = token;
          out.slot = headers.length;
        } else if (token !== key) return 'malformed';
        else (out.extraSlots ??= []).push(headers.length);
      }
    }
  }
  if (key === undefined) return 'none';
  out.key = key;
  return 'found';
}

/**
 * The key in an Authorization value when it is `Bearer <token>` with one of our prefixes;
 * undefined when the header is someone else's (a JWT); 'malformed' when duplicated Authorization
 * headers (joined with ",") include one of our keys.
 */
function bearerKey(authorization: string, prefixes: readonly string[]): string | 'malformed' | undefined {
  if (authorization.includes(',')) return prefixes.some((p) => authorization.includes(p)) ? 'malformed' : undefined;
  const scheme = BEARER.exec(authorization);
  if (scheme === null) return undefined;
  const token = authorization.slice(scheme[0].length).trim();
  for (const prefix of prefixes) if (token.startsWith(prefix)) return token;
  return undefined;
}

/** An API key source's removal rule: the key never reaches the upstream unless `forward: true`. */
export interface KeyRemoval {
  /** Its headers, stripped on every allow of its routes, whoever was identified, public routes too. */
  readonly stripHeaders: readonly string[] | undefined;
  readonly forwardHeaders: readonly string[] | undefined;
  /** Authorization when it carries one of our Bearer prefixes (public routes, other callers). */
  readonly carrier: ((request: RequestAttributes) => readonly string[] | undefined) | undefined;
  /** The headers to remove for the key just found: every place it was in. Allocates only for a key sent in two places. */
  removeFor(found: FoundKey): readonly string[] | undefined;
}

export function keyRemoval(headers: readonly string[], bearerPrefixes: readonly string[], forward: boolean): KeyRemoval {
  if (forward) return { stripHeaders: undefined, forwardHeaders: headers, carrier: undefined, removeFor: () => undefined };
  // Where the key was found → headers to strip: one per configured header, then Authorization.
  const removals = [...headers.map((h) => Object.freeze([h])), Object.freeze(['authorization'])];
  const authorization = removals[headers.length]!;
  return {
    stripHeaders: headers,
    forwardHeaders: undefined,
    carrier:
      bearerPrefixes.length === 0
        ? undefined
        : (request) => {
            const value = request.headers.get('authorization');
            return value !== undefined && bearerPrefixes.some((p) => value.includes(p)) ? authorization : undefined;
          },
    removeFor: (found) => (found.extraSlots === undefined ? removals[found.slot] : [found.slot, ...found.extraSlots].flatMap((s) => removals[s]!)),
  };
}
