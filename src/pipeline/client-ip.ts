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

/** The client address (canonical text, see canonicalIp), or the raw peer when that is not an IP. */
export function clientIp(request: RequestAttributes, settings: ClientIpSettings): string {
  const peerText = request.sourceAddress;
  const peer = canonicalIp(peerText) ?? peerText;
  const hops = settings.xffTrustedHops;
  // Envoy at the edge with no trusted hops: the peer, whatever x-forwarded-for says.
  if (settings.useRemoteAddress && hops === 0) return peer;
  const xff = request.headers.get('x-forwarded-for');
  if (xff === undefined || xff === '') return peer;

  let end = xff.length;
  if (settings.useRemoteAddress) {
    // Envoy appended the peer: the last entry must be it. When it is not, this Envoy does not
    // append (a setting that disagrees with the proxy) and every entry may be the client's own
    // writing: the peer is the only address that cannot be forged.
    const comma = xff.lastIndexOf(',');
    if (canonicalIp(trimEntry(xff.slice(comma + 1))) !== peer) return peer;
    if (comma < 0) return peer;
    end = comma;
  }
  // Skip the N trusted proxies' entries (right to left), then read one.
  let skip = settings.useRemoteAddress ? hops - 1 : hops;
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
  const groups = parseIPv6(text);
  if (groups === undefined) return undefined;
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    return `${groups[6]! >> 8}.${groups[6]! & 0xff}.${groups[7]! >> 8}.${groups[7]! & 0xff}`;
  }
  return formatIPv6(groups);
}

/**
 * The network a per-IP counter, lockout or ban keys on: the address itself at /32 (IPv4) or /128
 * (IPv6), otherwise "network/prefix" (e.g. 2001:db8:1:2::/64), so that every address of one
 * prefix shares one key. Anything that is not an address is returned as it is.
 */
export function clientNetwork(ip: string, ipv4Prefix: number, ipv6Prefix: number): string {
  if (net.isIPv4(ip)) {
    if (ipv4Prefix >= 32) return ip;
    const parts = ip.split('.');
    let value = ((Number(parts[0]) << 24) | (Number(parts[1]) << 16) | (Number(parts[2]) << 8) | Number(parts[3])) >>> 0;
    value = ipv4Prefix === 0 ? 0 : (value & (~0 << (32 - ipv4Prefix))) >>> 0;
    return `${value >>> 24}.${(value >>> 16) & 0xff}.${(value >>> 8) & 0xff}.${value & 0xff}/${ipv4Prefix}`;
  }
  const groups = parseIPv6(ip);
  if (groups === undefined) return ip;
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    return clientNetwork(canonicalIp(ip)!, ipv4Prefix, ipv6Prefix);
  }
  if (ipv6Prefix >= 128) return formatIPv6(groups);
  for (let i = 0; i < 8; i++) {
    const bits = Math.max(0, Math.min(16, ipv6Prefix - i * 16));
    groups[i] = bits === 0 ? 0 : groups[i]! & ((0xffff << (16 - bits)) & 0xffff);
  }
  return `${formatIPv6(groups)}/${ipv6Prefix}`;
}

/** The eight 16-bit groups of an IPv6 address (zone index dropped); undefined when not IPv6. */
function parseIPv6(text: string): number[] | undefined {
  if (!net.isIPv6(text)) return undefined;
  let s = text;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) >= 0) {
    const v4 = s.slice(lastColon + 1).split('.').map(Number);
    s = `${s.slice(0, lastColon + 1)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const gap = s.indexOf('::');
  let parts: string[];
  if (gap < 0) {
    parts = s.split(':');
  } else {
    const head = gap === 0 ? [] : s.slice(0, gap).split(':');
    const tail = gap + 2 === s.length ? [] : s.slice(gap + 2).split(':');
    parts = [...head, ...new Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  }
  if (parts.length !== 8) return undefined;
  return parts.map((p) => parseInt(p, 16));
}

/** RFC 5952: lower-case hex, no leading zeros, the longest run (2+) of zero groups as "::". */
function formatIPv6(groups: readonly number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}
