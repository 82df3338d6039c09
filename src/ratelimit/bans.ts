// Bans: callers refused outright (429 banned) on every route. The list lives in a store (a JSON
// file or a Postgres table, written by `portcullis bans`); the server keeps an in-memory copy,
// re-read every `refresh`, so a check never waits on the store.

import net from 'node:net';
import { PortcullisError } from '../errors.js';
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
  const address = canonicalIp(slash < 0 ? text : text.slice(0, slash));
  if (address === undefined) return undefined;
  if (slash < 0) return address;
  const prefixText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > (net.isIPv4(address) ? 32 : 128)) return undefined;
  return `${address}/${prefix}`;
}

function canonicalIp(text: string): string | undefined {
  let ip = text.trim().toLowerCase();
  if (ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7))) ip = ip.slice(7);
  return net.isIP(ip) === 0 ? undefined : ip;
}

export type BanMatch = BanKind | 'unavailable' | undefined;

interface Snapshot {
  readonly ips: net.BlockList | undefined;
  /** Route-scoped IP bans: route → addresses. */
  readonly routeIps: ReadonlyMap<string, net.BlockList> | undefined;
  readonly tenants: ReadonlySet<string>;
  readonly subjects: ReadonlySet<string>;
  readonly apiKeys: ReadonlySet<string>;
  readonly size: number;
}

const EMPTY: Snapshot = { ips: undefined, routeIps: undefined, tenants: new Set(), subjects: new Set(), apiKeys: new Set(), size: 0 };

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
    let routeIps: Map<string, net.BlockList> | undefined;
    const tenants = new Set<string>();
    const subjects = new Set<string>();
    const apiKeys = new Set<string>();
    let size = 0;
    for (const record of records) {
      if (record.expiresAt !== undefined && Date.parse(record.expiresAt) <= nowMs) continue;
      size++;
      switch (record.kind) {
        case 'ip': {
          const value = canonicalIpOrCidr(record.value);
          if (value === undefined) continue;
          let list: net.BlockList;
          if (record.route) {
            routeIps ??= new Map();
            list = routeIps.get(record.route) ?? new net.BlockList();
            routeIps.set(record.route, list);
          } else {
            list = ips ??= new net.BlockList();
          }
          const slash = value.indexOf('/');
          const family = net.isIPv4(slash < 0 ? value : value.slice(0, slash)) ? 'ipv4' : 'ipv6';
          if (slash < 0) list.addAddress(value, family);
          else list.addSubnet(value.slice(0, slash), Number(value.slice(slash + 1)), family);
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
    this.snapshot = { ips, routeIps, tenants, subjects, apiKeys, size };
    this.loaded = true;
  }

  /** Which ban applies to the request, 'unavailable' before the first successful load. */
  match(input: RateLimitInput): BanMatch {
    if (!this.loaded) return 'unavailable';
    const s = this.snapshot;
    if (s.size === 0) return undefined;
    const routeList = s.routeIps?.get(input.route);
    if ((s.ips !== undefined || routeList !== undefined) && input.clientIp !== '') {
      const ip = canonicalIp(input.clientIp);
      if (ip !== undefined) {
        const family = net.isIPv4(ip) ? 'ipv4' : 'ipv6';
        if (s.ips?.check(ip, family) || routeList?.check(ip, family)) return 'ip';
      }
    }
    const principal = input.principal;
    if (principal) {
      if (principal.tenant !== undefined && s.tenants.has(principal.tenant)) return 'tenant';
      if (principal.subject !== undefined && s.subjects.has(principal.subject)) return 'subject';
      if (principal.keyId !== undefined && s.apiKeys.has(principal.keyId)) return 'apiKey';
    }
    return undefined;
  }
}
