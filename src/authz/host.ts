// Which host a request is for, read the way Envoy's virtual hosts read it (README "Paths, hosts
// and client addresses"). One rule for routes and for the `host` credential source:
//   - case is ignored;
//   - a port is kept in the key unless it is the scheme's default (80 for http, 443 for https):
//     "docs.example.com:443" over https is "docs.example.com"; a port with leading zeros
//     ("docs.example.com:0443") is refused. A port no route rule names is judged as the host as
//     sent and as its name (pipeline/authorize.ts); the host source matches its domains exactly;
//   - a trailing dot ("docs.example.com.") is refused (400 invalid_host): Envoy's virtual hosts do
//     not treat it as the same name unless strip_trailing_host_dot is on, and then Portcullis never
//     sees the dot;
//   - anything that is not a DNS name, an IPv4 address or a bracketed IPv6 literal, with an optional
//     port, is refused.

/** Returned by hostKey for a host that must be refused. */
export const INVALID_HOST = '\u0000invalid';

const NAME_CHAR = new Uint8Array(128);
for (const ch of 'abcdefghijklmnopqrstuvwxyz0123456789-_.') NAME_CHAR[ch.charCodeAt(0)] = 1;

/**
 * The host as rules see it: `host` is already lower-case (decode). Returns `host` itself when it is
 * a plain name without port (the hot path allocates nothing), the name without a default port, or
 * INVALID_HOST.
 */
export function hostKey(host: string, scheme: string): string {
  const n = host.length;
  if (n === 0) return host;
  if (host.charCodeAt(0) === 91 /* [ */) return ipv6Key(host, scheme);
  let colon = -1;
  for (let i = 0; i < n; i++) {
    const c = host.charCodeAt(i);
    if (c === 58 /* : */) {
      colon = i;
      break;
    }
    if (c >= 128 || NAME_CHAR[c] === 0) {
      // Transports lower-case the host; one that did not is not refused for it.
      if (c >= 65 && c <= 90) return hostKey(host.toLowerCase(), scheme);
      return INVALID_HOST;
    }
  }
  const nameEnd = colon < 0 ? n : colon;
  if (nameEnd === 0 || !labelsOk(host, nameEnd)) return INVALID_HOST;
  if (colon < 0) return host;
  return withPort(host, colon, host.slice(0, colon), scheme);
}

/** No empty label: no leading dot, no "..", no trailing dot. */
function labelsOk(host: string, end: number): boolean {
  if (host.charCodeAt(0) === 46 || host.charCodeAt(end - 1) === 46) return false;
  for (let i = 1; i < end; i++) if (host.charCodeAt(i) === 46 && host.charCodeAt(i - 1) === 46) return false;
  return true;
}

function withPort(host: string, colon: number, name: string, scheme: string): string {
  const port = host.slice(colon + 1);
  // One spelling per port: "0443" is not "443" to Envoy's virtual hosts (they compare text).
  if (!/^(?:0|[1-9][0-9]{0,4})$/.test(port) || Number(port) > 65535) return INVALID_HOST;
  const value = Number(port);
  if ((value === 443 && scheme === 'https') || (value === 80 && scheme === 'http')) return name;
  return `${name}:${value}`;
}

function ipv6Key(host: string, scheme: string): string {
  const close = host.indexOf(']');
  if (close < 0 || !/^\[[0-9a-f:.]+\]$/i.test(host.slice(0, close + 1))) return INVALID_HOST;
  if (close === host.length - 1) return host;
  if (host.charCodeAt(close + 1) !== 58) return INVALID_HOST;
  return withPort(host, close + 1, host.slice(0, close + 1), scheme);
}

/** The name of a host key that carries a port ("a.example.com:8443" → "a.example.com"), else undefined. */
export function withoutPort(key: string): string | undefined {
  if (key.charCodeAt(0) === 91 /* [ */) {
    const close = key.indexOf(']');
    return close < key.length - 1 ? key.slice(0, close + 1) : undefined;
  }
  const colon = key.indexOf(':');
  return colon < 0 ? undefined : key.slice(0, colon);
}

/** Policy-side check of a host rule (route match host, host source domain). */
export function hostRuleProblem(rule: string): string | undefined {
  const name = rule.startsWith('*.') ? rule.slice(2) : rule;
  const colon = name.indexOf(':');
  const bare = colon < 0 ? name : name.slice(0, colon);
  if (bare.endsWith('.')) return 'must not end with "." (requests for "name." are refused; write the name without the dot)';
  if (colon >= 0) {
    const port = Number(name.slice(colon + 1));
    if (port === 80 || port === 443) return 'names a default port: write the host without it (it matches the scheme\'s default port)';
  }
  return undefined;
}
