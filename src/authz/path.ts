// What a request path means to the upstream. Portcullis never normalises a path and then allows
// it: the upstream serves the raw path Envoy forwards, read its own way (Tomcat/Jetty/Spring drop
// ";…" path parameters, WSGI decodes %2F, Express and ASP.NET ignore case, nobody resolves "..."
// when Envoy's normalize_path is off). So a path is either canonical — every common upstream reads
// it the same way — or it is refused, or (policy opt-in) judged by every route any reading reaches
// (pipeline/route-candidates.ts). README "Paths, hosts and client addresses".

/** How a raw path looks to Portcullis. */
export const enum PathShape {
  /** Every common upstream reads it the same way. */
  Canonical = 0,
  /** Readable, but upstreams may read it differently: refused unless the policy opts in. */
  NonCanonical = 1,
  /** Not a path any reading can be trusted for (no leading "/", raw controls, a bad escape, …). */
  Invalid = 2,
}

// Characters allowed raw in a canonical path: RFC 3986 pchar minus ";" (path parameters) plus "/".
// unreserved: A-Z a-z 0-9 - . _ ~ ; sub-delims except ";": ! $ & ' ( ) * + , = ; and ":" "@".
const PLAIN = new Uint8Array(128);
for (const ch of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,=:@/") PLAIN[ch.charCodeAt(0)] = 1;
const UNRESERVED = new Uint8Array(128);
for (const ch of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~') UNRESERVED[ch.charCodeAt(0)] = 1;

/** Longest path for which readings are computed (the strictest mode); longer non-canonical ones are refused. */
export const MAX_READINGS_PATH_LENGTH = 4096;
/**
 * At most this many distinct readings per path, and this many characters in all of them together;
 * a path with more is refused. Each reading goes through every transform and every route table, so
 * these bound the CPU one unauthenticated request can cost: 192 readings of a 3.5 KiB path took
 * ~15 ms per check, 192 readings of a 40-character path ~1.7 ms; a path a client really sends has
 * one or two features some upstream reads differently (a handful of readings).
 */
export const MAX_READINGS = 64;
export const MAX_READINGS_CHARS = 8 * 1024;

/**
 * The fast check for the hot path: true when `raw` is canonical, has only plain characters (no
 * escapes), no upper-case letter and no trailing slash: every upstream reads it one way, whether it
 * ignores case or not. "/v1/items/42" → true; "/v1/Items", "/v1/items/", "/a%20b" → false (the
 * slower classifyPath decides).
 */
export function isSimplePath(raw: string): boolean {
  const n = raw.length;
  if (n === 0 || raw.charCodeAt(0) !== 47) return false;
  let prev = 47;
  for (let i = 1; i < n; i++) {
    const c = raw.charCodeAt(i);
    if (c >= 128 || PLAIN[c] === 0 || (c >= 65 && c <= 90)) return false;
    if (prev === 47 && (c === 47 || (c === 46 && isDotSegment(raw, i)))) return false;
    prev = c;
  }
  return prev !== 47 || n === 1;
}

/** True when raw[i] starts a "." or ".." segment (raw[i-1] is "/"). */
function isDotSegment(raw: string, i: number): boolean {
  const next = raw.charCodeAt(i + 1);
  if (Number.isNaN(next) || next === 47) return true;
  if (next !== 46) return false;
  const after = raw.charCodeAt(i + 2);
  return Number.isNaN(after) || after === 47;
}

/** True when the path contains an ASCII upper-case letter outside percent escapes. */
export function hasUpperCase(raw: string): boolean {
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 37) i += 2;
    else if (c >= 65 && c <= 90) return true;
  }
  return false;
}

/**
 * Full classification, for paths isPlainCanonical() did not accept. Canonical: only plain
 * characters and escapes that every upstream decodes to the same non-separator character (a space,
 * a UTF-8 letter). Non-canonical: ";", "\", "//", "." or ".." segments, escapes of unreserved
 * characters (%61, %2E), of "/", "\", ";" or of an escape (%25 followed by two hex digits).
 * Invalid: no leading "/", raw bytes outside printable ASCII, a malformed escape, an escaped
 * control character, escaped bytes that are not UTF-8, or a character whose upper or lower case
 * is ASCII although it is not (ı, ſ, K, …: ASP.NET's OrdinalIgnoreCase reads "adm%C4%B1n" as ADMIN).
 */
export function classifyPath(raw: string): PathShape {
  const n = raw.length;
  if (n === 0 || raw.charCodeAt(0) !== 47) return PathShape.Invalid;
  let shape = PathShape.Canonical;
  let prev = 0;
  for (let i = 0; i < n; i++) {
    const c = raw.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return PathShape.Invalid;
    if (c === 37 /* % */) {
      const byte = hexByte(raw, i + 1);
      if (byte < 0) return PathShape.Invalid;
      if (byte < 0x20 || byte === 0x7f) return PathShape.Invalid;
      if (byte >= 0x80) {
        const end = utf8Run(raw, i);
        if (end < 0) return PathShape.Invalid;
        i = end - 1;
        prev = 0;
        continue;
      }
      if (UNRESERVED[byte] === 1 || byte === 47 || byte === 92 || byte === 59) shape = PathShape.NonCanonical;
      else if (byte === 37 && hexByte(raw, i + 3) >= 0) shape = PathShape.NonCanonical;
      i += 2;
      prev = 0;
      continue;
    }
    if (PLAIN[c] === 0) {
      // ";" and "\" are read differently by different upstreams; anything else is not a URI character.
      if (c === 59 || c === 92) shape = PathShape.NonCanonical;
      else return PathShape.Invalid;
    } else if (prev === 47 && (c === 47 || (c === 46 && isDotSegment(raw, i)))) {
      shape = PathShape.NonCanonical;
    }
    prev = c;
  }
  return shape;
}

function hexByte(s: string, at: number): number {
  const h = hexDigit(s.charCodeAt(at));
  const l = hexDigit(s.charCodeAt(at + 1));
  return h < 0 || l < 0 ? -1 : (h << 4) | l;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A run of escaped non-ASCII bytes starting at `start`: returns the index after the run, or -1
 * when the bytes are not UTF-8 or decode to a character whose case mapping is ASCII.
 */
function utf8Run(raw: string, start: number): number {
  const bytes: number[] = [];
  let i = start;
  while (i < raw.length && raw.charCodeAt(i) === 37) {
    const b = hexByte(raw, i + 1);
    if (b < 0x80) break;
    bytes.push(b);
    i += 3;
  }
  let text: string;
  try {
    text = UTF8.decode(Uint8Array.from(bytes));
  } catch {
    return -1;
  }
  for (const ch of text) {
    if (/[\x00-\x7f]/.test(ch.toLowerCase()) || /[\x00-\x7f]/.test(ch.toUpperCase())) return -1;
    if (ch.codePointAt(0)! < 0xa0) return -1; // C1 controls
  }
  return i;
}

// ---- readings ------------------------------------------------------------------------------

/** One way some upstream may read a path. Each maps a path to a path (possibly unchanged). */
const TRANSFORMS: readonly ((p: string) => string)[] = [
  decodeUnreserved,
  decodeSeparators,
  decodeAll,
  stripParameters,
  backslashToSlash,
  removeDotSegments,
  mergeSlashes,
  stripTrailingSlash,
];

/**
 * Every plausible reading of a path: the closure of `raw` under the transforms upstreams apply
 * (decode unreserved escapes, decode %2F/%5C, decode everything once more (double decoding), drop
 * ";" parameters, "\" as "/", resolve dot segments, merge slashes, ignore a trailing slash), in any
 * order. Undefined when there are more than MAX_READINGS, or more than MAX_READINGS_CHARS characters
 * in all (the path is refused).
 */
export function pathReadings(raw: string): string[] | undefined {
  if (raw.length > MAX_READINGS_PATH_LENGTH) return undefined;
  const seen = new Set<string>([raw]);
  const queue = [raw];
  let chars = raw.length;
  while (queue.length > 0) {
    const p = queue.pop()!;
    for (const t of TRANSFORMS) {
      const next = t(p);
      if (seen.has(next)) continue;
      chars += next.length;
      if (seen.size >= MAX_READINGS || chars > MAX_READINGS_CHARS) return undefined;
      seen.add(next);
      queue.push(next);
    }
  }
  return [...seen];
}

function decodeWhere(p: string, pick: (byte: number) => boolean, as?: (byte: number) => string): string {
  if (!p.includes('%')) return p;
  let out = '';
  let last = 0;
  for (let i = 0; i < p.length; i++) {
    if (p.charCodeAt(i) !== 37) continue;
    const b = hexByte(p, i + 1);
    if (b < 0 || b >= 0x80 || !pick(b)) continue;
    out += p.slice(last, i) + (as ? as(b) : String.fromCharCode(b));
    last = i + 3;
    i += 2;
  }
  return last === 0 ? p : out + p.slice(last);
}

/** RFC 3986 §6.2.2.2: %61 → a, %2E → . */
export function decodeUnreserved(p: string): string {
  return decodeWhere(p, (b) => UNRESERVED[b] === 1);
}

/** %2F and %5C as path separators (WSGI, and IIS/ASP.NET for the backslash). */
function decodeSeparators(p: string): string {
  return decodeWhere(p, (b) => b === 47 || b === 92, () => '/');
}

/** Every ASCII escape decoded once (%25 too, so "%252F" → "%2F": double-decoding upstreams). */
function decodeAll(p: string): string {
  return decodeWhere(p, (b) => b >= 0x20 && b !== 0x7f);
}

/** Tomcat/Jetty/Spring: "/a;x=1/b;jsessionid=2" → "/a/b"; "/..;/" → "/../". */
function stripParameters(p: string): string {
  if (!p.includes(';')) return p;
  return p.replace(/;[^/]*/g, '');
}

function backslashToSlash(p: string): string {
  return p.includes('\\') ? p.replace(/\\/g, '/') : p;
}

function mergeSlashes(p: string): string {
  return p.includes('//') ? p.replace(/\/{2,}/g, '/') : p;
}

/** Express (non-strict routing), Spring's trailing-slash match: "/admin/" is "/admin". */
function stripTrailingSlash(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

/** RFC 3986 §5.2.4, never above the root; "/a/.." → "/". */
export function removeDotSegments(p: string): string {
  if (!p.includes('.')) return p;
  const segments = p.split('/');
  const out: string[] = [];
  let changed = false;
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    const last = i === segments.length - 1;
    if (segment === '.' || segment === '..') {
      changed = true;
      if (segment === '..') out.pop();
      if (last) out.push('');
    } else {
      out.push(segment);
    }
  }
  return changed ? '/' + out.join('/') : p;
}
