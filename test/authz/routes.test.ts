import { describe, expect, it } from 'vitest';
import { RouteTable, type RouteMatchSpec } from '../../src/authz/routes.js';

function table(...specs: (RouteMatchSpec & { name: string })[]) {
  return new RouteTable(specs.map((spec) => ({ spec, value: spec.name })));
}

describe('route precedence', () => {
  const routes = table(
    { name: 'catch-all', pathPrefix: '/' },
    { name: 'v1', pathPrefix: '/v1/' },
    { name: 'admin', pathPrefix: '/v1/admin/' },
    { name: 'glob', pathGlob: '/v1/files/**/raw' },
    { name: 'item-template', path: '/v1/items/{id}' },
    { name: 'item-special', path: '/v1/items/{id}/history' },
    { name: 'item-get', path: '/v1/items/{id}', methods: ['GET'] },
    { name: 'admin-health', path: '/v1/admin/health' },
    { name: 'shop-items', host: 'shop.example.com', pathPrefix: '/v1/items' },
    { name: 'any-shop', host: '*.shops.example.com', pathPrefix: '/' },
    { name: 'eu-shop', host: '*.eu.shops.example.com', pathPrefix: '/' },
  );
  const m = (path: string, method = 'GET', host = 'api.example.com') => routes.match(host, method, path);

  it('prefers an exact path over any prefix, whatever the file order', () => {
    expect(m('/v1/admin/health')).toBe('admin-health');
    expect(m('/v1/admin/users')).toBe('admin');
  });

  it('prefers the longest prefix, segment-aware', () => {
    expect(m('/v1/other')).toBe('v1');
    expect(m('/v1')).toBe('v1');
    expect(m('/v1/admin')).toBe('admin');
    expect(m('/v1/administrator')).toBe('v1');
    expect(m('/elsewhere')).toBe('catch-all');
  });

  it('prefers templates over prefixes, method-specific templates first, more literal segments first', () => {
    expect(m('/v1/items/42')).toBe('item-get');
    expect(m('/v1/items/42', 'DELETE')).toBe('item-template');
    expect(m('/v1/items/42/history')).toBe('item-special');
    expect(m('/v1/items/')).toBe('v1');
  });

  it('matches globs: * within a segment, ** across segments', () => {
    expect(m('/v1/files/a/b/c/raw')).toBe('glob');
    expect(m('/v1/files/raw')).toBe('v1');
  });

  it('globs with several wildcards match in linear time: an attacker\'s long path cannot stall the check (attacker review)', () => {
    const globs = table(
      { name: 'three', pathGlob: '/files/**/**/**/x' },
      { name: 'two', pathGlob: '/a/**/b/**/c' },
      { name: 'stars', pathGlob: '/s/*a*a*a*b' },
      { name: 'png', pathGlob: '/static/**/*.png' },
      { name: 'rest', pathPrefix: '/' },
    );
    const g = (path: string) => globs.match('h', 'GET', path);
    // A backtracking engine is cubic/quadratic on these: the first would not finish.
    expect(g(`/files/${'a/'.repeat(10_000)}`)).toBe('rest');
    expect(g(`/a/${'b/'.repeat(10_000)}d`)).toBe('rest');
    expect(g(`/s/${'a'.repeat(10_000)}`)).toBe('rest');
    // And they still mean what they say.
    expect(g('/files/1/2/3/x')).toBe('three');
    expect(g('/a/1/b/2/c')).toBe('two');
    expect(g('/s/xaaab')).toBe('stars');
    expect(g('/s/xaaa/b')).toBe('rest');
    expect(g('/static/img/logo.png')).toBe('png');
    expect(g('/static/img/logo.png/x')).toBe('rest');
  });

  it('prefers exact hosts, then the longest wildcard, then host-less routes; falls through when a host level has no match', () => {
    expect(m('/v1/items/1', 'GET', 'shop.example.com')).toBe('shop-items');
    expect(m('/v1/admin/users', 'GET', 'shop.example.com')).toBe('admin');
    expect(m('/anything', 'GET', 'a.shops.example.com')).toBe('any-shop');
    expect(m('/anything', 'GET', 'a.eu.shops.example.com')).toBe('eu-shop');
    expect(m('/anything', 'GET', 'shops.example.com')).toBe('catch-all');
  });

  it('returns undefined when nothing matches', () => {
    expect(table({ name: 'x', path: '/x' }).match('h', 'GET', '/y')).toBeUndefined();
    expect(table({ name: 'x', path: '/x', methods: ['POST'] }).match('h', 'GET', '/x')).toBeUndefined();
  });
});
