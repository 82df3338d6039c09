// What the key cache keeps of a store record: the fields a decision needs, with the values that
// repeat across keys (tenant, scope list) shared. A PostgreSQL row arrives with a dozen fresh
// strings (hash, prefixes, timestamps); keeping all of them for 100k cached keys would cost
// several times what the decision uses.

import type { Interner } from '../intern.js';
import type { Principal } from '../types.js';
import type { KeyRecord } from './record.js';

/** Whether x-auth-subject carries the key's id or its name (apiKey.subject in the policy). */
export type KeySubject = 'id' | 'name';

export class CachedKey {
  readonly id: string;
  readonly tenant: string;
  readonly name: string;
  readonly scopes: readonly string[];
  /** Epoch milliseconds. */
  readonly expiresAt: number;
  readonly revokedAt: number | undefined;
  private byId: Principal | undefined = undefined;
  private byName: Principal | undefined = undefined;

  constructor(id: string, tenant: string, name: string, scopes: readonly string[], expiresAt: number, revokedAt: number | undefined) {
    this.id = id;
    this.tenant = tenant;
    this.name = name;
    this.scopes = scopes;
    this.expiresAt = expiresAt;
    this.revokedAt = revokedAt;
  }

  static of(record: KeyRecord, interner: Interner): CachedKey {
    return new CachedKey(record.id, interner.string(record.tenant), record.name, interner.scopes(record.scopes), record.expiresAt, record.revokedAt);
  }

  /** The principal this key proves, made once per subject mode and shared by every hit. */
  principal(subject: KeySubject): Principal {
    const known = subject === 'id' ? this.byId : this.byName;
    if (known !== undefined) return known;
    const principal: Principal = Object.freeze({
      method: 'api-key',
      tenant: this.tenant,
      subject: subject === 'id' ? this.id : this.name,
      scopes: this.scopes,
      keyId: this.id,
      expiresAt: Math.floor(this.expiresAt / 1000),
    });
    if (subject === 'id') this.byId = principal;
    else this.byName = principal;
    return principal;
  }
}
