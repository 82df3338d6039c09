// Repeat offenders become bans (issue 17 §1, seed 004: "permanent bans stored in Postgres for
// repeat offenders"). A lockout is reported once, by the check that caused it (the store's
// lockedNow), and counted in the rate-limit backend itself — one atomic counter per offender and
// policy, shared by every instance on the same Redis — so instances never double-count or miss
// one. The check that brings the count to `after` writes the ban, exactly once, through the ban
// watcher (enforced here at once, written and retried in the background). Nothing of this runs on
// the request's path: the request is already refused as locked_out.

import type { Counter } from 'prom-client';
import type { Clock } from '../clock.js';
import { clientNetwork } from '../pipeline/client-ip.js';
import type { ClientNetworkPrefixes } from './keys.js';
import type { Logger } from '../observability/logger.js';
import { AUTOMATIC_BAN_AUTHOR, canonicalIpOrCidr, type BanRecord } from './bans.js';
import type { BanWatcher } from './bans-watcher.js';
import type { EscalateConfig } from './config.js';
import type { LimitStore, RateLimitInput } from './types.js';

const SEPARATOR = '\u001f';

/** The backend key of an offender's offence count (its own Redis hash tag). */
export function offenceKey(prefix: string, policy: string, ip: string, route: string | undefined): string {
  return `${prefix}{escalate${SEPARATOR}${policy}${SEPARATOR}${ip}${route ? `${SEPARATOR}${route}` : ''}}`;
}

/** 86_400_000 → "24h", 2_592_000_000 → "30d": the units a policy writes. */
export function formatDuration(ms: number): string {
  const units: [number, string][] = [[86_400_000, 'd'], [3_600_000, 'h'], [60_000, 'm'], [1000, 's']];
  for (const [size, unit] of units) {
    if (ms % size === 0 && (unit !== 'd' || ms >= 2 * size)) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

export interface EscalationCounters {
  readonly offences: Counter.Internal;
  readonly bans: Counter.Internal;
  readonly errors: Counter.Internal;
}

export class Escalation {
  private readonly reason: string;

  constructor(
    private readonly policy: string,
    private readonly config: EscalateConfig,
    private readonly store: LimitStore,
    private readonly keyPrefix: string,
    private readonly bans: BanWatcher,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly counters: EscalationCounters,
    /** Offences are counted per client network (an IPv6 /64 by default), like the lockouts. */
    private readonly network: ClientNetworkPrefixes,
  ) {
    this.reason = `${config.after} lockouts within ${formatDuration(config.within)} (rate-limit policy ${policy})`;
  }

  /** The request just locked its key out: count the offence; the `after`-th writes the ban. */
  offend(input: RateLimitInput): void {
    const ip = canonicalIpOrCidr(input.clientIp);
    if (ip === undefined) return;
    const route = this.config.scope === 'ip+route' ? input.route : undefined;
    // Rotating addresses inside one network does not spread the offences: they count per network,
    // and the ban on the address covers its network (BanList.match).
    const client = clientNetwork(ip, this.network.ipv4Prefix, this.network.ipv6Prefix);
    this.counters.offences.inc();
    this.store.recordOffence(offenceKey(this.keyPrefix, this.policy, client, route), this.config.within).then(
      (offences) => {
        // Exactly one check sees the count reach `after` (the backend counts atomically).
        if (offences.count !== this.config.after) return;
        const now = this.clock.now();
        const record: BanRecord = {
          kind: 'ip',
          value: ip,
          ...(route !== undefined ? { route } : {}),
          reason: this.reason,
          createdAt: new Date(now).toISOString(),
          ...(this.config.ban !== 'permanent' ? { expiresAt: new Date(now + this.config.ban).toISOString() } : {}),
          createdBy: AUTOMATIC_BAN_AUTHOR,
          source: this.policy,
          firstOffence: new Date(offences.firstMs).toISOString(),
          lastOffence: new Date(offences.lastMs).toISOString(),
          offences: offences.count,
        };
        this.counters.bans.inc();
        this.bans.ban(record);
      },
      (err: unknown) => {
        // The backend is down: the lockout itself still applies; this offence is not counted.
        this.counters.errors.inc();
        this.logger.warn({ err: (err as Error).message, policy: this.policy }, 'could not count a lockout towards escalation');
      },
    );
  }
}
