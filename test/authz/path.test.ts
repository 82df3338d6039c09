import { describe, expect, it } from 'vitest';
import { normalizePath } from '../../src/authz/path.js';

describe('normalizePath', () => {
  it.each([
    ['/v1/items', '/v1/items'],
    ['/v1/items/', '/v1/items/'],
    ['//v1///items', '/v1/items'],
    ['/v1/./items', '/v1/items'],
    ['/v1/admin/../public', '/v1/public'],
    ['/public/../../admin', '/admin'],
    ['/v1/items/..', '/v1/'],
    ['/%61dmin', '/admin'],
    ['/%2e%2e/admin', '/admin'],
    ['/a/%2E%2E/b', '/b'],
    ['/files/a%2fb', '/files/a%2Fb'],
    ['/files/%7euser', '/files/~user'],
    ['/', '/'],
  ])('%s → %s', (raw, expected) => {
    expect(normalizePath(raw)).toBe(expected);
  });

  it.each([[''], ['relative/path'], ['*'], ['/bad%zz'], ['/bad%4'], ['/nul\u0000byte'], ['/line\nfeed']])('rejects %j', (raw) => {
    expect(normalizePath(raw)).toBeUndefined();
  });
});
