// Route overlaps (validation warnings) and route explanations (portcullis check), against the
// precedence the RouteTable really applies.

import { describe, expect, it } from 'vitest';
import { findOverlaps, RouteTable, type RouteMatchSpec } from '../../src/authz/routes.js';

const overlaps = (...specs: RouteMatchSpec[]) => findOverlaps(specs.map((spec, index) => ({ spec, index })));

describe('findOverlaps', () => {
  it('the same pattern twice: the later route can never match, unless it lists methods the first does not', () => {
    expect(overlaps({ pathPrefix: '/v1/orders' }, { pathPrefix: '/v1/orders/' })).toEqual([
      { winner: 0, loser: 1, full: true, example: 'GET /v1/orders/x' },
    ]);
    expect(overlaps({ path: '/v1/items/{id}', methods: ['GET'] }, { path: '/v1/items/{name}' }).filter((o) => o.full)).toEqual([]);
    // The GET route is tried first and takes the GET requests of the other: partial, never full.
    expect(overlaps({ path: '/v1/items/{id}' }, { path: '/v1/items/{name}', methods: ['GET'] })).toEqual([
      { winner: 1, loser: 0, full: false, example: 'GET /v1/items/x' },
    ]);
  });

  it('a more specific route is tried first whatever the file order: no shadowing', () => {
    expect(overlaps({ pathPrefix: '/v1/' }, { pathPrefix: '/v1/admin/' })).toEqual([]);
    expect(overlaps({ path: '/v1/items/{id}' }, { path: '/v1/items/export' })).toEqual([]);
  });

  it('an earlier-tried route that takes the representative request of a later one', () => {
    expect(overlaps({ pathPrefix: '/v2' }, { pathGlob: '/v2/**' })).toEqual([{ winner: 1, loser: 0, full: false, example: 'GET /v2/x' }]);
    expect(overlaps({ pathPrefix: '/v1/items' }, { path: '/v1/{kind}/{id}' })).toEqual([{ winner: 1, loser: 0, full: false, example: 'GET /v1/items/x' }]);
  });

  it('a route for a host is tried before routes for any host, only for that host', () => {
    expect(overlaps({ pathPrefix: '/v1' }, { host: 'shop.example.com', pathPrefix: '/v1' })).toEqual([
      { winner: 1, loser: 0, full: false, example: 'GET shop.example.com/v1/x' },
    ]);
    expect(overlaps({ host: 'a.example.com', pathPrefix: '/v1' }, { host: 'b.example.com', pathPrefix: '/v1' })).toEqual([]);
  });

  it('routes for disjoint methods never overlap', () => {
    expect(overlaps({ path: '/x', methods: ['GET'] }, { path: '/x', methods: ['POST'] })).toEqual([]);
  });
});

describe('RouteTable.explain', () => {
  it('says for every route why it was or was not chosen, and agrees with match()', () => {
    const table = new RouteTable<string>([
      { spec: { pathPrefix: '/v1/' }, value: 'v1' },
      { spec: { path: '/v1/items/{id}', methods: ['GET'] }, value: 'item' },
      { spec: { host: 'admin.example.com', pathPrefix: '/' }, value: 'admin-host' },
    ]);
    const { chosen, considered } = table.explain('api.example.com', 'GET', '/v1/items/7');
    expect(chosen).toBe(table.match('api.example.com', 'GET', '/v1/items/7'));
    expect(chosen).toBe('item');
    expect(considered.map((c) => [c.value, c.matched, c.why])).toEqual([
      ['admin-host', false, 'host admin.example.com does not match "api.example.com"'],
      ['item', true, 'any host, path template match, method GET'],
      ['v1', false, 'matches, but a more specific route was chosen first'],
    ]);
    const post = table.explain('api.example.com', 'POST', '/v1/items/7');
    expect(post.chosen).toBe('v1');
    expect(post.considered.find((c) => c.value === 'item')!.why).toBe('method POST is not one of GET');
  });
});
