// Where a JWT source finds its token: `Authorization: Bearer`, a dedicated header, or a cookie.
// `find` only locates the candidate (cheap, on every request); the stricter syntax checks run on a
// verified-token cache miss, since a token that hit the cache already passed them once.

import type { TokenPlaceConfig } from './config.js';
import type { RequestHeaders } from '../types.js';

/** The place holds something that is not a well-formed credential (e.g. two Authorization headers). */
export const MALFORMED: unique symbol = Symbol('malformed credential');
export type Found = string | undefined | typeof MALFORMED;

export interface TokenPlace {
  /** For decision details, never containing the token: "authorization Bearer", "cookie sb-access-token". */
  readonly label: string;
  /**
   * True when the token follows an auth scheme that other credential kinds share (Bearer API
   * keys): a value that is not a compact JWS may belong to another source of the chain.
   */
  readonly shared: boolean;
  /** Header to strip upstream when the token must not be forwarded. */
  readonly carrier: string;
  /** The token candidate, MALFORMED, or undefined when this place holds nothing for this source. */
  find(headers: RequestHeaders): Found;
  /** Syntax of the place itself (RFC 6750 b64token after a scheme; one value per header). */
  wellFormed(token: string): boolean;
}

/** RFC 6750 b64token (RFC 7235 token68). */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

export function compileTokenPlace(config: TokenPlaceConfig): TokenPlace {
  if ('cookie' in config) return cookiePlace(config.cookie);
  return config.scheme === undefined ? rawHeaderPlace(config.header) : schemeHeaderPlace(config.header, config.scheme);
}

function schemeHeaderPlace(header: string, scheme: string): TokenPlace {
  const lowerScheme = scheme.toLowerCase();
  const prefixLength = scheme.length + 1;
  return {
    label: `${header} ${scheme}`,
    shared: true,
    carrier: header,
    find(headers) {
      const value = headers.get(header);
      if (value === undefined) return undefined;
      if (value.slice(0, scheme.length).toLowerCase() === lowerScheme) {
        const next = value.charCodeAt(scheme.length);
        if (next === 0x20) {
          const token = value.slice(prefixLength).trim();
          return token === '' ? MALFORMED : token;
        }
        // "Bearer" alone, or followed by a tab or another separator than one space.
        if (Number.isNaN(next) || /\s/.test(value.charAt(scheme.length))) return MALFORMED;
      }
      // Another scheme (Basic, ...) belongs to another source, unless a second header carries
      // ours: Envoy joins repeated headers with ",", and two credentials are never guessed at.
      if (value.includes(',') && value.split(',').some((part) => startsWithScheme(part.trimStart(), lowerScheme))) return MALFORMED;
      return undefined;
    },
    wellFormed: (token) => B64TOKEN.test(token),
  };
}

function startsWithScheme(part: string, lowerScheme: string): boolean {
  const lower = part.toLowerCase();
  return lower === lowerScheme || lower.startsWith(`${lowerScheme} `);
}

function rawHeaderPlace(header: string): TokenPlace {
  return {
    label: header,
    shared: false,
    carrier: header,
    find(headers) {
      const value = headers.get(header);
      if (value === undefined) return undefined;
      const token = value.trim();
      return token === '' ? undefined : token;
    },
    // A comma means the header was sent twice (Envoy joins repeats with ",").
    wellFormed: (token) => !token.includes(','),
  };
}

function cookiePlace(name: string): TokenPlace {
  const prefix = `${name}=`;
  return {
    label: `cookie ${name}`,
    shared: false,
    carrier: 'cookie',
    find(headers) {
      const cookies = headers.get('cookie');
      if (cookies === undefined || !cookies.includes(prefix)) return undefined;
      let found: string | undefined;
      for (const pair of cookies.split(';')) {
        const trimmed = pair.trim();
        if (!trimmed.startsWith(prefix)) continue;
        // The same cookie twice (e.g. one planted for a parent domain): refuse to pick one.
        if (found !== undefined) return MALFORMED;
        found = unquote(trimmed.slice(prefix.length));
      }
      return found === '' ? undefined : found;
    },
    wellFormed: () => true,
  };
}

function unquote(value: string): string {
  return value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
}

/** Exactly two dots: the shape of a compact JWS, checked cheaply before anything else. */
export function hasJwsShape(token: string): boolean {
  const first = token.indexOf('.');
  if (first <= 0) return false;
  const second = token.indexOf('.', first + 1);
  return second > first + 1 && token.indexOf('.', second + 1) === -1;
}

/** Full compact-JWS syntax: base64url header and payload, base64url (possibly empty) signature. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export function isCompactJws(token: string): boolean {
  return COMPACT_JWS.test(token);
}
