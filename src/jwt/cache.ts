// Verified tokens, so a repeated token skips signature verification. Keyed by the SHA-256 of the
// token (the cache never holds a usable credential), bounded by entry count (CLOCK, an LRU
// approximation). Entries carry their time claims: every hit re-applies the time rules, so an
// entry never outlives exp (nor maxTokenAge), and one whose key was rotated out is dropped.
//
// Entries live in a DigestTable (src/cache/digest-table.ts): times, issuer and key as numbers,
// tenant, subject, scopes and email as text, ~180 bytes per token and nothing for the garbage
// collector to walk. A hit on a token seen recently returns the very same VerifiedToken; older
// ones are rebuilt from their slot.

import { hash } from 'node:crypto';
import { DigestTable } from '../cache/digest-table.js';
import { scopesText, type Interner } from '../intern.js';
import type { Metrics } from '../observability/metrics.js';
import type { CompiledIssuer } from './issuer.js';
import type { KeyRecord } from './keys.js';
import { jwtPrincipal, VerifiedToken } from './verifier.js';

// Number fields of an entry.
const EXP = 0;
const NBF = 1;
const IAT = 2;
const ISSUER = 3;
const KEY = 4;
// Text fields.
const TENANT = 0;
const SUBJECT = 1;
const SCOPES = 2;
const EMAIL = 3;

/** Bytes of text per entry: tenant, subject, scopes and email of most tokens fit. */
const TEXT_BYTES = 80;
/** Signing keys remembered by number. Past this (a JWKS that keeps rotating) the cache starts over. */
const MAX_KEYS = 1024;

export class VerifiedTokenCache {
  private readonly table: DigestTable<VerifiedToken>;
  private readonly keyNumbers = new Map<KeyRecord, number>();
  private keys: KeyRecord[] = [];
  private readonly hits: { inc(): void };
  private readonly misses: { inc(): void };

  constructor(
    maxEntries: number,
    private readonly issuers: readonly CompiledIssuer[],
    private readonly interner: Interner,
    metrics: Metrics,
  ) {
    this.table = new DigestTable(maxEntries, { numbers: 5, texts: 4, textBytes: TEXT_BYTES });
    const counter = metrics.counter('portcullis_jwt_cache_total', 'Verified-token cache lookups by result (hit, miss).', ['result']);
    // Counted on every check: batched children (an addition each, handed over when read).
    this.hits = metrics.batchedChild(counter, { result: 'hit' });
    this.misses = metrics.batchedChild(counter, { result: 'miss' });
  }

  /** Cache key of a token: its SHA-256, as a 32-character binary string. */
  keyOf(token: string): string {
    return hash('sha256', token, 'binary');
  }

  get(digest: string): VerifiedToken | undefined {
    const slot = this.table.find(digest);
    if (slot < 0) {
      this.misses.inc();
      return undefined;
    }
    this.hits.inc();
    return this.table.objectAt(slot, this.rebuild);
  }

  set(digest: string, token: VerifiedToken): void {
    let keyNumber = this.keyNumbers.get(token.key);
    if (keyNumber === undefined) {
      if (this.keys.length >= MAX_KEYS) this.clear();
      keyNumber = this.keys.push(token.key) - 1;
      this.keyNumbers.set(token.key, keyNumber);
    }
    const slot = this.table.claim(digest);
    const t = this.table;
    t.setNumber(slot, EXP, token.exp);
    t.setNumber(slot, NBF, token.nbf ?? Number.NaN);
    t.setNumber(slot, IAT, token.iat ?? Number.NaN);
    t.setNumber(slot, ISSUER, this.issuers.indexOf(token.issuer));
    t.setNumber(slot, KEY, keyNumber);
    const { tenant, subject, scopes, email } = token.principal;
    const scopeText = scopesText(scopes);
    t.store(slot, scopeText === null ? undefined : [tenant, subject, scopeText, email], token);
  }

  delete(digest: string): void {
    const slot = this.table.find(digest);
    if (slot >= 0) this.table.remove(slot);
  }

  get size(): number {
    return this.table.size;
  }

  private readonly rebuild = (slot: number): VerifiedToken => {
    const t = this.table;
    const issuer = this.issuers[t.number(slot, ISSUER)]!;
    const exp = t.number(slot, EXP);
    const nbf = t.number(slot, NBF);
    const iat = t.number(slot, IAT);
    const scopes = this.interner.scopesFromText(t.text(slot, SCOPES));
    const principal = jwtPrincipal(this.interner, t.text(slot, TENANT), t.text(slot, SUBJECT), scopes, t.text(slot, EMAIL), issuer.name, exp);
    return new VerifiedToken(principal, issuer, this.keys[t.number(slot, KEY)]!, exp, Number.isNaN(nbf) ? undefined : nbf, Number.isNaN(iat) ? undefined : iat);
  };

  private clear(): void {
    this.table.clear();
    this.keyNumbers.clear();
    this.keys = [];
  }
}
