// Answer mapping: JSON paths (a.b.c, a[0].b, literal dotted keys), own properties only, scopes,
// expiries in every shape an answer carries them, and values that cannot become headers.
import { describe, expect, it } from 'vitest';
import { compileAnswerMap, compilePath, toEpochMs, Unusable } from '../../src/lookup/mapping.js';
import { answerMapSchema } from '../../src/lookup/schema.js';

const map = (config: Record<string, unknown>, fixed: string[] = []) => compileAnswerMap(answerMapSchema.parse(config), fixed);

describe('answer mapping', () => {
  it('walks a.b.c and a[0].b, prefers a literal dotted key, and never the prototype chain', () => {
    const answer = { a: { b: { c: 'deep' } }, orgs: [{ id: 'first' }, { id: 'second' }], 'https://x.example/tenant': 't1' };
    expect(compilePath('a.b.c')(answer)).toBe('deep');
    expect(compilePath('orgs[1].id')(answer)).toBe('second');
    expect(compilePath('orgs[5].id')(answer)).toBeUndefined();
    expect(compilePath('https://x.example/tenant')(answer)).toBe('t1');
    expect(compilePath('a.constructor')(answer)).toBeUndefined();
    expect(compilePath('__proto__')(answer)).toBeUndefined();
  });

  it('maps tenant, subject, email, key id and scopes (arrays or space-separated), adding fixed scopes', () => {
    const mapped = map({ tenant: 'org', subject: 'user.id', email: 'user.email', keyId: 'key', scopes: ['perms', 'scope'] }, ['admin'])({
      org: 42,
      user: { id: 'u1', email: 'u1@example.com' },
      key: 'k1',
      perms: ['read', 'bad scope', 7],
      scope: 'write  read',
    });
    expect(mapped).toEqual({ tenant: '42', subject: 'u1', email: 'u1@example.com', keyId: 'k1', scopes: ['admin', 'read', 'write'], expiresAtMs: undefined });
  });

  it('refuses answers whose present path is empty, and values with control characters', () => {
    expect(map({ present: 'valid' })({ valid: false })).toBeInstanceOf(Unusable);
    expect(map({ present: 'session.id' })({ session: { id: 's' } })).not.toBeInstanceOf(Unusable);
    expect(map({ tenant: 't' })({ t: 'a\r\nx-injected: 1' })).toBeInstanceOf(Unusable);
    expect(map({ tenant: 't' })({ t: 'a'.repeat(257) })).toBeInstanceOf(Unusable);
    expect(map({ tenant: 't' })({ t: 'a'.repeat(256) })).not.toBeInstanceOf(Unusable);
  });

  it('reads expiries as ISO text, Date, epoch seconds or milliseconds; garbage is NaN (treated as expired)', () => {
    expect(toEpochMs('2026-01-01T00:00:00.000Z')).toBe(Date.UTC(2026, 0, 1));
    expect(toEpochMs(new Date(Date.UTC(2026, 0, 1)))).toBe(Date.UTC(2026, 0, 1));
    expect(toEpochMs(1_767_225_600)).toBe(Date.UTC(2026, 0, 1));
    expect(toEpochMs(1_767_225_600_000)).toBe(Date.UTC(2026, 0, 1));
    expect(toEpochMs('1767225600')).toBe(Date.UTC(2026, 0, 1));
    expect(toEpochMs('soon')).toBeNaN();
    expect(toEpochMs(null)).toBeUndefined();
  });
});

describe('client share keys', () => {
  it('keys IPv4 by address and IPv6 by its /64 (mapped IPv4 as IPv4)', async () => {
    const { clientShareKey } = await import('../../src/lookup/acquire.js');
    expect(clientShareKey('203.0.113.7')).toBe('203.0.113.7');
    expect(clientShareKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(clientShareKey('2001:DB8:1:2::ffff')).toBe('2001:db8:1:2::/64');
    expect(clientShareKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(clientShareKey('::1')).toBe('0:0:0:0::/64');
    expect(clientShareKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(clientShareKey('::ffff:198.51.100.4')).toBe('198.51.100.4');
    expect(clientShareKey('2001:0db8:0001:0002::')).toBe('2001:db8:1:2::/64');
  });
});
