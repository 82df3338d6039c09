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
  if ('supabaseCookie' in config) {
    const { projectRef, name } = config.supabaseCookie;
    return supabaseCookiePlace(name ?? `sb-${projectRef}-auth-token`);
  }
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

/** Bound on a reassembled Supabase session (all chunks together, before decoding). */
export const MAX_SUPABASE_SESSION = 65_536;
/** Chunk suffixes as @supabase/ssr writes them: `.0`, `.1`, … without leading zeros. */
const CHUNK_INDEX = /^(?:0|[1-9][0-9]{0,4})$/;
const BASE64_PREFIX = 'base64-';
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * @supabase/ssr's session cookie: one cookie `<name>` or chunks `<name>.0` … `<name>.n` (split
 * when the value exceeds ~3 KB), whose value is `base64-` + base64url(JSON session) (the default
 * cookieEncoding) or the URI-encoded JSON (cookieEncoding "raw"). The session's access_token is the
 * token. Anything that cannot be read one way only — a cookie or chunk sent twice, the whole cookie
 * next to chunks, a gap in the chunks, an empty part, more than MAX_SUPABASE_SESSION bytes, a value
 * that does not decode to a session with a string access_token — is MALFORMED, never guessed at.
 */
function supabaseCookiePlace(name: string): TokenPlace {
  const chunkPrefix = `${name}.`;
  return {
    label: `supabase cookie ${name}`,
    shared: false,
    carrier: 'cookie',
    find(headers) {
      const cookies = headers.get('cookie');
      if (cookies === undefined || !cookies.includes(name)) return undefined;
      let whole: string | undefined;
      let chunks: Map<number, string> | undefined;
      let total = 0;
      for (const pair of cookies.split(';')) {
        const trimmed = pair.trim();
        if (!trimmed.startsWith(name)) continue;
        const eq = trimmed.indexOf('=');
        if (eq < 0) continue;
        const cookieName = trimmed.slice(0, eq);
        const value = unquote(trimmed.slice(eq + 1));
        if (cookieName === name) {
          if (whole !== undefined) return MALFORMED;
          whole = value;
        } else if (cookieName.startsWith(chunkPrefix)) {
          const suffix = cookieName.slice(chunkPrefix.length);
          if (!CHUNK_INDEX.test(suffix)) continue; // `<name>-code-verifier` and the like are not ours
          const index = Number(suffix);
          chunks ??= new Map();
          if (chunks.has(index)) return MALFORMED;
          chunks.set(index, value);
        } else {
          continue;
        }
        if (value === '') return MALFORMED;
        total += value.length;
        if (total > MAX_SUPABASE_SESSION) return MALFORMED;
      }
      if (whole !== undefined) return chunks === undefined ? sessionAccessToken(whole) : MALFORMED;
      if (chunks === undefined) return undefined;
      let joined = '';
      for (let i = 0; i < chunks.size; i++) {
        const chunk = chunks.get(i);
        if (chunk === undefined) return MALFORMED; // a gap: some chunk is missing or misnumbered
        joined += chunk;
      }
      return sessionAccessToken(joined);
    },
    wellFormed: () => true,
  };
}

function sessionAccessToken(value: string): Found {
  let json: string;
  try {
    if (value.startsWith(BASE64_PREFIX)) {
      let end = value.length;
      while (end > BASE64_PREFIX.length && value.charCodeAt(end - 1) === 0x3d /* = */ && value.length - end < 2) end--;
      const length = end - BASE64_PREFIX.length;
      if (length % 4 === 1) return MALFORMED;
      const bytes = Buffer.from(value.slice(BASE64_PREFIX.length, end), 'base64url');
      // Node's decoder skips characters outside the alphabet (and stops at "="): any such
      // character leaves fewer bytes than the length promises. (A regex over a 10 KB value costs
      // about as much as everything else together.)
      if (bytes.length !== Math.floor((length * 3) / 4)) return MALFORMED;
      json = utf8.decode(bytes);
    } else {
      json = decodeURIComponent(value);
    }
    if (!json.startsWith('{')) return MALFORMED;
    const session: unknown = JSON.parse(json);
    const token = (session as { access_token?: unknown }).access_token;
    return typeof token === 'string' && token !== '' ? token : MALFORMED;
  } catch {
    // URIError, invalid UTF-8, SyntaxError: not a session.
    return MALFORMED;
  }
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
