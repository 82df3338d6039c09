// Builders for plain RequestAttributes in unit tests.
import type { RequestAttributes } from '../../src/types.js';

export interface RequestInit {
  method?: string;
  host?: string;
  path?: string;
  query?: string;
  headers?: Record<string, string>;
  sourceAddress?: string;
  requestId?: string;
  scheme?: string;
}

export function request(init: RequestInit = {}): RequestAttributes {
  return {
    requestId: init.requestId ?? 'req-1',
    method: init.method ?? 'GET',
    host: init.host ?? 'api.example.com',
    path: init.path ?? '/',
    query: init.query ?? '',
    scheme: init.scheme ?? 'https',
    protocol: 'HTTP/2',
    headers: new Map(Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
    sourceAddress: init.sourceAddress ?? '203.0.113.7',
    contextExtensions: new Map(),
  };
}
