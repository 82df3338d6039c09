// Path normalisation for route matching. Routes are matched on the normalised path so that
// "/public/../admin", "//admin" or "/%61dmin" cannot slip past a rule meant for "/admin". The request
// Envoy forwards is unchanged: configure Envoy to normalise too (README, examples/envoy).

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * RFC 3986 normalisation: percent-decode unreserved characters, upper-case remaining escapes,
 * merge repeated slashes, resolve "." and ".." segments (never above the root). Returns undefined
 * for a path that is not a path (no leading "/", control characters, a bad escape).
 */
export function normalizePath(raw: string): string | undefined {
  if (raw.length === 0 || raw.charCodeAt(0) !== 47 /* / */) return undefined;
  // Fast path: nothing to decode, no dot segments, no double slashes, no control bytes.
  if (isPlain(raw)) return raw;

  let decoded = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return undefined;
    if (c === 37 /* % */) {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
      const ch = String.fromCharCode(parseInt(hex, 16));
      decoded += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
      i += 2;
    } else {
      decoded += raw[i];
    }
  }

  const out: string[] = [];
  const segments = decoded.split('/');
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    const last = i === segments.length - 1;
    if (segment === '.' || segment === '..') {
      if (segment === '..') out.pop();
      if (last) out.push('');
    } else if (segment === '') {
      if (last) out.push(''); // keep one trailing slash
    } else {
      out.push(segment);
    }
  }
  return '/' + out.join('/');
}

function isPlain(path: string): boolean {
  let prev = 0;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c < 0x20 || c === 0x7f || c === 37 /* % */) return false;
    if (c === 47 /* / */ && prev === 47) return false;
    if (c === 46 /* . */ && prev === 47) {
      const next = path.charCodeAt(i + 1);
      // "/." or "/.." followed by "/" or end → a dot segment
      if (Number.isNaN(next) || next === 47) return false;
      if (next === 46) {
        const after = path.charCodeAt(i + 2);
        if (Number.isNaN(after) || after === 47) return false;
      }
    }
    prev = c;
  }
  return true;
}
