// A credential an HTTP lookup cannot carry as it is never reaches the target: "." and ".." would
// be dot segments of the URL (the URL parser resolves them, so another resource would answer for
// the credential), and control or non-Latin-1 characters cannot be header values (fetch throws,
// and each such credential would have counted against the breaker every client shares).

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpTarget } from '../../src/lookup/http.js';

describe('HTTP lookup targets and credentials they cannot carry', () => {
  const seen: string[] = [];
  let server: http.Server;
  let base = '';
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      seen.push(`${req.url} ${String(req.headers['x-key'] ?? '')}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ valid: true, path: req.url }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const target = () =>
    new HttpTarget({ url: `${base}/v1/keys/{{credential}}/owner`, method: 'GET', headers: { 'x-key': '{{credential}}' }, notFound: [404], maxResponseBytes: 4096 });
  const ask = (credential: string) => target().query(credential, new AbortController().signal);

  it('"." and ".." are not found, and nothing is asked (they would have reached /v1/keys/owner and /v1/owner)', async () => {
    seen.length = 0;
    expect(await ask('..')).toEqual({ found: false });
    expect(await ask('.')).toEqual({ found: false });
    expect(seen).toEqual([]);
  });

  it('control and non-Latin-1 characters are not found, not a failure, and nothing is asked', async () => {
    seen.length = 0;
    for (const bad of ['key\r\nx-admin: 1', 'key\u0000', 'key\u0007', 'ключ']) expect(await ask(bad)).toEqual({ found: false });
    expect(seen).toEqual([]);
  });

  it('an ordinary credential is asked for, encoded in the path and as it is in the header', async () => {
    seen.length = 0;
    const answer = await ask('pk_live/1 2');
    expect(answer).toEqual({ found: true, value: { valid: true, path: '/v1/keys/pk_live%2F1%202/owner' } });
    expect(seen).toEqual(['/v1/keys/pk_live%2F1%202/owner pk_live/1 2']);
  });
});
