// The client's address, picked exactly as the Envoy that sends the Check picks its "trusted client
// address" (HttpConnectionManager use_remote_address + xff_num_trusted_hops), and the network a
// per-IP limit, lockout or ban keys on (IPv4 /32 and IPv6 /64 by default).
//
// What the CheckRequest carries: attributes.source.address is the downstream connection's peer as
// Envoy saw it (the load balancer or ingress gateway when there is one; a PROXY-protocol listener
// filter replaces it with the address from the PROXY header). x-forwarded-for is the header AFTER
// Envoy's connection manager processed it: with use_remote_address true Envoy has already appended
// that peer. So, with N trusted hops, the client is the (N+1)-th address from the right of the
// x-forwarded-for Portcullis sees, whether Envoy appended (use_remote_address true: the peer is the
// 1st, the N trusted proxies the next N) or not (use_remote_address false: the previous proxy's
// appended peer is the 1st). As in Envoy, too few entries or an entry that is not an IP address
// fall back to the peer.

import net from 'node:net';
import type { RequestAttributes } from '../types.js';

export interface ClientIpSettings {
  /** The calling Envoy's use_remote_address: it appended the peer to x-forwarded-for. */
  readonly useRemoteAddress: boolean;
  /** The calling Envoy's xff_num_trusted_hops (for an Istio sidecar: the gateway's numTrustedProxies). */
  readonly xffTrustedHops: number;
}

/**
 * The client address (canonical text, see canonicalIp), or the raw peer when that is not an IP.
 * Pass the policy's `clientIp` settings; a bare number is xffTrustedHops with useRemoteAddress
 * true (the default), for callers written before useRemoteAddress existed.
 */
export function clientIp(request: RequestAttributes, settings: ClientIpSettings | number): string {
  const peerText = request.sourceAddress;
  const peer = canonicalIp(peerText) ?? peerText;
  const numeric = typeof settings === 'number';
  const hops = numeric ? settings : settings.xffTrustedHops;
  const useRemoteAddress = numeric || settings.useRemoteAddress;
  // Envoy at the edge with no trusted hops: the peer, whatever x-forwarded-for says.
  if (useRemoteAddress && hops === 0) return peer;
  const xff = request.headers.get('x-forwarded-for');
  if (xff === undefined || xff === '') return peer;

  let end = xff.length;
  if (useRemoteAddress) {
    // Envoy appended the peer: the last entry must be it. When it is not, this Envoy does not
    // append (a setting that disagrees with the proxy) and every entry may be the client's own
    // writing: the peer is the only address that cannot be forged.
    const comma = xff.lastIndexOf(',');
    if (canonicalIp(trimEntry(xff.slice(comma + 1))) !== peer) return peer;
    if (comma < 0) return peer;
    end = comma;
  }
  // Skip the N trusted proxies' entries (right to left), then read one.
  let skip = useRemoteAddress ? hops - 1 : hops;
  while (skip > 0) {
    const comma = xff.lastIndexOf(',', end - 1);
    if (comma < 0) return peer; // fewer entries than trusted proxies
    end = comma;
    skip--;
  }
  const start = end === 0 ? -1 : xff.lastIndexOf(',', end - 1);
  return canonicalIp(trimEntry(xff.slice(start + 1, end))) ?? peer;
}

function trimEntry(entry: string): string {
  return entry.trim();
}

/**
 * An IP address as one text per address: IPv4 dotted quad; IPv6 lower-case, RFC 5952 compressed;
 * IPv4-mapped IPv6 (::ffff:a.b.c.d) as the IPv4 address. Undefined when not an address.
 */
export function canonicalIp(text: string): string | undefined {
  if (net.isIPv4(text)) return text;
  if (!parseIPv6(text, scratch)) return undefined;
  if (isMappedIPv4(scratch)) return mappedIPv4(scratch);
  return formatIPv6(scratch);
}

/**
 * The network a per-IP counter, lockout or ban keys on: the address itself at /32 (IPv4) or /128
 * (IPv6), otherwise "network/prefix" (e.g. 2001:db8:1:2::/64), so that every address of one
 * prefix shares one key. Anything that is not an address is returned as it is.
 */
export function clientNetwork(ip: string, ipv4Prefix: number, ipv6Prefix: number): string {
  // One request asks up to three times (limits before and after identification, bans).
  if (ip === memo.ip && ipv4Prefix === memo.ipv4Prefix && ipv6Prefix === memo.ipv6Prefix) return memo.network;
  const network = computeNetwork(ip, ipv4Prefix, ipv6Prefix);
  memo.ip = ip;
  memo.ipv4Prefix = ipv4Prefix;
  memo.ipv6Prefix = ipv6Prefix;
  memo.network = network;
  return network;
}

const memo = { ip: '', ipv4Prefix: -1, ipv6Prefix: -1, network: '' };
/** Parse target; every use is synchronous and complete before the next. */
const scratch = new Uint16Array(8);

function computeNetwork(ip: string, ipv4Prefix: number, ipv6Prefix: number): string {
  if (net.isIPv4(ip)) return ipv4Network(ip, ipv4Prefix);
  if (!parseIPv6(ip, scratch)) return ip;
  if (isMappedIPv4(scratch)) return ipv4Network(mappedIPv4(scratch), ipv4Prefix);
  if (ipv6Prefix >= 128) return formatIPv6(scratch);
  for (let i = 0; i < 8; i++) {
    const bits = Math.max(0, Math.min(16, ipv6Prefix - i * 16));
    scratch[i] = bits === 0 ? 0 : scratch[i]! & ((0xffff << (16 - bits)) & 0xffff);
  }
  return `${formatIPv6(scratch)}/${ipv6Prefix}`;
}

function ipv4Network(ip: string, prefix: number): string {
  if (prefix >= 32) return ip;
  const parts = ip.split('.');
  let value = ((Number(parts[0]) << 24) | (Number(parts[1]) << 16) | (Number(parts[2]) << 8) | Number(parts[3])) >>> 0;
  value = prefix === 0 ? 0 : (value & (~0 << (32 - prefix))) >>> 0;
  return `${value >>> 24}.${(value >>> 16) & 0xff}.${(value >>> 8) & 0xff}.${value & 0xff}/${prefix}`;
}

function isMappedIPv4(g: Uint16Array): boolean {
  return g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff;
}

function mappedIPv4(g: Uint16Array): string {
  return `${g[6]! >> 8}.${g[6]! & 0xff}.${g[7]! >> 8}.${g[7]! & 0xff}`;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/**
 * Parses an IPv6 address (RFC 4291 text forms: "::" once, an IPv4 tail, a zone index after "%"
 * ignored) into eight groups. False when the text is not one.
 */
function parseIPv6(text: string, out: Uint16Array): boolean {
  const zone = text.indexOf('%');
  const n = zone < 0 ? text.length : zone;
  if (n < 2 || n > 45) return false;
  let g = 0;
  let gap = -1;
  let i = 0;
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    if (g >= 8) return false;
    let value = 0;
    let j = i;
    for (; j < n && j - i < 5; j++) {
      const h = hexDigit(text.charCodeAt(j));
      if (h < 0) break;
      value = value * 16 + h;
    }
    if (j < n && text.charCodeAt(j) === 46) {
      // An IPv4 tail: the last two groups.
      if (g > 6 || (gap < 0 && g !== 6)) return false;
      const v4 = parseIPv4Tail(text, i, n);
      if (v4 < 0) return false;
      out[g++] = v4 >>> 16;
      out[g++] = v4 & 0xffff;
      i = n;
      break;
    }
    if (j === i || j - i > 4) return false;
    out[g++] = value;
    i = j;
    if (i === n) break;
    if (text.charCodeAt(i) !== 58) return false;
    i++;
    if (i < n && text.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = g;
      i++;
    } else if (i === n) {
      return false; // a single trailing ":"
    }
  }
  if (gap < 0) return g === 8;
  if (g > 7) return false; // "::" stands for at least one group
  const tail = g - gap;
  for (let k = 1; k <= tail; k++) out[8 - k] = out[g - k]!;
  for (let k = gap; k < 8 - tail; k++) out[k] = 0;
  return true;
}

/** a.b.c.d from `start` to `end` as a 32-bit number, -1 when malformed. */
function parseIPv4Tail(text: string, start: number, end: number): number {
  let value = 0;
  let octets = 0;
  let i = start;
  while (i <= end) {
    let octet = 0;
    let j = i;
    for (; j < end && j - i < 4; j++) {
      const c = text.charCodeAt(j);
      if (c < 48 || c > 57) break;
      octet = octet * 10 + (c - 48);
    }
    const digits = j - i;
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && text.charCodeAt(i) === 48)) return -1;
    value = value * 256 + octet;
    octets++;
    if (j === end) break;
    if (text.charCodeAt(j) !== 46 || octets === 4) return -1;
    i = j + 1;
  }
  return octets === 4 ? value : -1;
}

/** RFC 5952: lower-case hex, no leading zeros, the longest run (2+) of zero groups as "::". */
function formatIPv6(g: Uint16Array): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      text += i === 0 ? '::' : ':';
      i += bestLength - 1;
      continue;
    }
    text += g[i]!.toString(16);
    if (i < 7) text += ':';
  }
  return text;
}
