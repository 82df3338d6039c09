// Limit keys: which counter a request is charged to. Compiled once per policy into a small
// function; per request it reads a few fields and joins them into one string.

import { createHash } from 'node:crypto';
import { clientNetwork } from '../pipeline/client-ip.js';
import type { KeyPart } from './config.js';
import type { RateLimitInput } from './types.js';

const SEPARATOR = '\u001f';
/** Values longer than this (header values, long subjects) are stored as a hash: bounded key size. */
const MAX_PLAIN_VALUE = 128;

type PartReader = (input: RateLimitInput) => string | undefined;

/**
 * The storage key of a policy for a request, or undefined when the request lacks a part the key
 * needs (no tenant on a public route, no API key id for a JWT caller, a missing header): the
 * policy is then skipped for that request.
 *
 * The whole key sits inside one Redis hash tag `{...}`, so every Redis key of one counter lands
 * in the same Cluster slot while different counters spread over the cluster.
 */
export function compileKey(
  prefix: string,
  policyName: string,
  parts: readonly KeyPart[],
  network: ClientNetworkPrefixes = { ipv4Prefix: 32, ipv6Prefix: 64 },
): (input: RateLimitInput) => string | undefined {
  const readers = parts.map((part) => readerFor(part, network));
  const head = `${prefix}{${policyName}`;
  if (readers.length === 1) {
    const only = readers[0]!;
    return (input) => {
      const value = only(input);
      return value === undefined ? undefined : `${head}${SEPARATOR}${value}}`;
    };
  }
  return (input) => {
    let key = head;
    for (const read of readers) {
      const value = read(input);
      if (value === undefined) return undefined;
      key += SEPARATOR + value;
    }
    return key + '}';
  };
}

/** What an `ip` key part keys on: the client's network of these prefix lengths (policy clientIp). */
export interface ClientNetworkPrefixes {
  readonly ipv4Prefix: number;
  readonly ipv6Prefix: number;
}

function readerFor(part: KeyPart, network: ClientNetworkPrefixes): PartReader {
  if (typeof part === 'object') {
    const name = part.header;
    return (input) => safe(input.request.headers.get(name));
  }
  switch (part) {
    case 'tenant':
      return (input) => safe(input.principal?.tenant);
    case 'apiKey':
      return (input) => safe(input.principal?.keyId);
    case 'subject':
      // Namespaced by issuer (or credential method): "123" from two issuers are two callers.
      return (input) => {
        const principal = input.principal;
        const subject = principal?.subject;
        if (!subject) return undefined;
        return safe(`${principal.issuer ?? principal.method}/${subject}`);
      };
    case 'ip': {
      // Every address of one network (an IPv6 /64 by default) is one client: one counter, one lockout.
      const { ipv4Prefix, ipv6Prefix } = network;
      return (input) => safe(input.clientIp === '' ? '' : clientNetwork(input.clientIp, ipv4Prefix, ipv6Prefix));
    }
    case 'route':
      return (input) => safe(input.route);
    case 'method':
      return (input) => safe(input.request.method);
    case 'host':
      return (input) => safe(input.request.host);
  }
}

/** Empty means absent; long values, values containing the separator or looking like a hash are hashed. */
function safe(value: string | undefined): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (value.length > MAX_PLAIN_VALUE || value.charCodeAt(0) === 35 /* # */ || value.includes(SEPARATOR)) {
    return '#' + createHash('sha256').update(value).digest('base64url').slice(0, 32);
  }
  return value;
}
