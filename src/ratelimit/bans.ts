// Bans: callers refused outright (429 banned) on every route. The list lives in a store (a JSON
// file or a Postgres table, written by `portcullis bans`); the server keeps an in-memory copy,
// re-read every `refresh`, so a check never waits on the store.

import net from 'node:net';
import { PortcullisError } from '../errors.js';
import { canonicalIp, clientNetwork } from '../pipeline/client-ip.js';
import type { ClientNetworkPrefixes } from './keys.js';
import type { RateLimitInput } from './types.js';

export const BAN_KINDS = ['ip', 'tenant', 'subject', 'apiKey'] as const;
export type BanKind = (typeof BAN_KINDS)[number];

export interface BanTarget {
  readonly kind: BanKind;
  /** ip: an address or CIDR block; tenant; subject (the token's sub); apiKey: the key id. */
  readonly value: string;
  /** The ban holds on this route only (escalation scope ip+route); every route when absent. */
  readonly route?: string;
}

export interface BanRecord extends BanTarget {
  readonly reason?: string;
  /** ISO 8601. */
  readonly createdAt: string;
  /** ISO 8601; permanent when absent. */
  readonly expiresAt?: string;
  readonly createdBy?: string;
  /** Automatic bans (escalation): the rate-limit policy whose lockouts led to it. */
  readonly source?: string;
  /** Automatic bans: first and latest offence (ISO 8601) and how many offences. */
  readonly firstOffence?: string;
  readonly lastOffence?: string;
  readonly offences?: number;
}

/** createdBy of the bans Portcullis writes itself. */
export const AUTOMATIC_BAN_AUTHOR = 'portcullis';

export function sameBanTarget(a: BanTarget, b: BanTarget): boolean {
  return a.kind === b.kind && a.value === b.value && (a.route ?? '') === (b.route ?? '');
}

/** Where bans are kept. Implementations: FileBanStore, PostgresBanStore. */
export interface BanStore {
  /** Every ban, expired ones included. Throws PortcullisError STORE_UNAVAILABLE. */
  list(): Promise<BanRecord[]>;
  /** Add or replace the ban of a target. */
  put(record: BanRecord): Promise<void>;
  /** False when the target was not banned. */
  remove(target: BanTarget): Promise<boolean>;
  /** A cheap token that changes when the list may have changed (file mtime); undefined = always re-read. */
  version?(): Promise<string | undefined>;
  close(): Promise<void>;
}

/** "ip:203.0.113.7", "ip:10.0.0.0/8", "tenant:acme", "subject:auth0|42", "apiKey:k_123" → target. */
export function parseBanTarget(text: string): BanTarget {
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon) as BanKind;
  const raw = text.slice(colon + 1).trim();
  if (colon <= 0 || !BAN_KINDS.includes(kind) || raw === '') {
    throw new PortcullisError('CONFIG_INVALID', `invalid ban target "${text}": use ${BAN_KINDS.map((k) => `${k}:VALUE`).join(', ')}`);
  }
  if (kind !== 'ip') return { kind, value: raw };
  const value = canonicalIpOrCidr(raw);
  if (value === undefined) throw new PortcullisError('CONFIG_INVALID', `invalid ban target "${text}": not an IP address or CIDR block`);
  return { kind, value };
}

export function formatBanTarget(target: BanTarget): string {
  return `${target.kind}:${target.value}${target.route ? ` route ${target.route}` : ''}`;
}

/** Lower-cased address (IPv4-mapped IPv6 as IPv4), or address/prefix; undefined when invalid. */
export function canonicalIpOrCidr(text: string): string | undefined {
  const slash = text.indexOf('/');
  const address = canonicalIp((slash < 0 ? text : text.slice(0, slash)).trim());
  if (address === undefined) return undefined;
  if (slash < 0) return address;
  const prefixText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > (net.isIPv4(address) ? 32 : 128)) return undefined;
  return `${address}/${prefix}`;
}


export type BanMatch = BanKind | 'unavailable' | undefined;

interface Snapshot {
  readonly ips: net.BlockList | undefined;
  /** Banned addresses and blocks narrower than a client network (an IPv6 address vs a /64). */
  readonly narrow: readonly { readonly address: string; readonly prefix: number }[];
  /** Per client-network prefixes: the networks those narrow bans fall in (built on first use). */
  readonly narrowNetworks: Map<string, ReadonlySet<string>>;
  readonly tenants: ReadonlySet<string>;
  readonly subjects: ReadonlySet<string>;
  readonly apiKeys: ReadonlySet<string>;
  /** Route-scoped ip bans (escalation scope ip+route): route → a list of that route's bans. */
  readonly routes: ReadonlyMap<string, BanList> | undefined;
  readonly size: number;
}

const EMPTY: Snapshot = { ips: undefined, narrow: [], narrowNetworks: new Map(), tenants: new Set(), subjects: new Set(), apiKeys: new Set(), routes: undefined, size: 0 };

/** The in-memory copy checked per request. Replaced whole on every refresh. */
export class BanList {
  private snapshot: Snapshot = EMPTY;
  private loaded = false;

  get size(): number {
    return this.snapshot.size;
  }

  get isLoaded(): boolean {
    return this.loaded;
  }

  /** Replace the list with the records that are in force at `nowMs`. */
  replace(records: readonly BanRecord[], nowMs: number): void {
    let ips: net.BlockList | undefined;
    const narrow: { address: string; prefix: number }[] = [];
    const tenants = new Set<string>();
    const subjects = new Set<string>();
    const apiKeys = new Set<string>();
    let byRoute: Map<string, BanRecord[]> | undefined;
    let size = 0;
    for (const record of records) {
      if (record.expiresAt !== undefined && Date.parse(record.expiresAt) <= nowMs) continue;
      size++;
      if (record.route && record.kind === 'ip') {
        byRoute ??= new Map();
        const list = byRoute.get(record.route) ?? [];
        list.push({ ...record, route: undefined });
        byRoute.set(record.route, list);
        continue;
      }
      switch (record.kind) {
        case 'ip': {
          const value = canonicalIpOrCidr(record.value);
          if (value === undefined) continue;
          ips ??= new net.BlockList();
          const slash = value.indexOf('/');
          const address = slash < 0 ? value : value.slice(0, slash);
          const family = net.isIPv4(address) ? 'ipv4' : 'ipv6';
          const prefix = slash < 0 ? (family === 'ipv4' ? 32 : 128) : Number(value.slice(slash + 1));
          if (slash < 0) ips.addAddress(value, family);
          else ips.addSubnet(address, prefix, family);
          narrow.push({ address, prefix });
          break;
        }
        case 'tenant':
          tenants.add(record.value);
          break;
        case 'subject':
          subjects.add(record.value);
          break;
        case 'apiKey':
          apiKeys.add(record.value);
          break;
      }
    }
    let routes: Map<string, BanList> | undefined;
    if (byRoute !== undefined) {
      routes = new Map();
      for (const [route, list] of byRoute) {
        const scoped = new BanList();
        scoped.replace(list, nowMs);
        routes.set(route, scoped);
      }
    }
    this.snapshot = { ips, narrow, narrowNetworks: new Map(), tenants, subjects, apiKeys, routes, size };
    this.loaded = true;
  }

  /**
   * Which ban applies to the request, 'unavailable' before the first successful load. An `ip` ban
   * matches the client's whole network (policy clientIp prefixes), as per-IP limits do: banning
   * one address of an IPv6 /64 bans the /64, and a block matches a client whose network it
   * contains or overlaps.
   */
  match(input: RateLimitInput, network: ClientNetworkPrefixes = { ipv4Prefix: 32, ipv6Prefix: 64 }): BanMatch {
    if (!this.loaded) return 'unavailable';
    const s = this.snapshot;
    if (s.size === 0) return undefined;
    if (s.ips !== undefined && input.clientIp !== '') {
      const ip = canonicalIp(input.clientIp);
      if (ip !== undefined) {
        const v4 = net.isIPv4(ip);
        if (s.ips.check(ip, v4 ? 'ipv4' : 'ipv6')) return 'ip';
        if ((v4 ? network.ipv4Prefix < 32 : network.ipv6Prefix < 128) && narrowNetworks(s, network).has(clientNetwork(ip, network.ipv4Prefix, network.ipv6Prefix))) return 'ip';
      }
    }
    if (s.routes !== undefined && s.routes.get(input.route)?.match(input, network) === 'ip') return 'ip';
    const principal = input.principal;
    if (principal) {
      if (principal.tenant !== undefined && s.tenants.has(principal.tenant)) return 'tenant';
      if (principal.subject !== undefined && s.subjects.has(principal.subject)) return 'subject';
      if (principal.keyId !== undefined && s.apiKeys.has(principal.keyId)) return 'apiKey';
    }
    return undefined;
  }
}

/** The client networks that contain a ban narrower than a client network, for these prefixes. */
function narrowNetworks(s: Snapshot, network: ClientNetworkPrefixes): ReadonlySet<string> {
  const id = `${network.ipv4Prefix}/${network.ipv6Prefix}`;
  let set = s.narrowNetworks.get(id);
  if (set === undefined) {
    const networks = new Set<string>();
    for (const { address, prefix } of s.narrow) {
      if (prefix > (net.isIPv4(address) ? network.ipv4Prefix : network.ipv6Prefix)) networks.add(clientNetwork(address, network.ipv4Prefix, network.ipv6Prefix));
    }
    set = networks;
    if (s.narrowNetworks.size >= 4) s.narrowNetworks.clear(); // bounded: one entry per prefix setting in use
    s.narrowNetworks.set(id, set);
  }
  return set;
}
