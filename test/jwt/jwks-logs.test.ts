// A jwksUri (or a discovered jwks_uri) carrying userinfo or a query token (issue 13 §6): the
// credentials are used, never logged. Every log line is captured and searched for them.

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import type { Runtime } from '../../src/runtime.js';
import { testRuntime } from '../support/runtime.js';
import { bearer, compileSource, nowSeconds, outcome, sign, signingKey, startServer, type LocalServer, type SigningKey } from './helpers.js';

const AUDIENCE = 'https://api.example.test';
const PASSWORD = 'pa55-W0RD-jwks';
const TOKEN = 'Q-T0KEN-in-query';

async function fetchCount(runtime: Runtime, result: string): Promise<number> {
  const metric = await runtime.metrics.registry.getSingleMetric('portcullis_jwks_fetches_total')?.get();
  return metric?.values.reduce((sum, v) => sum + (v.labels.result === result ? v.value : 0), 0) ?? 0;
}

describe('JWKS URLs with credentials', () => {
  let text: string;
  let runtime: ReturnType<typeof testRuntime>;
  let key: SigningKey;
  let server: LocalServer;
  let status: number;
  const seen: { authorization?: string; url?: string }[] = [];

  beforeEach(async () => {
    text = '';
    seen.length = 0;
    status = 200;
    runtime = testRuntime({ logger: createLogger({ level: 'debug', destination: { write: (line: string) => void (text += line) } }) });
    key = await signingKey('RS256', 'k1');
    server = await startServer((req, res) => {
      seen.push({ authorization: req.headers.authorization, url: req.url });
      if (req.url?.startsWith('/.well-known/openid-configuration')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: server.url, jwks_uri: `http://jwks-user:${PASSWORD}@${server.url.slice(7)}/discovered.json?token=${TOKEN}` }));
        return;
      }
      if (status !== 200) res.writeHead(status).end();
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [key.publicJwk] }));
    });
  });

  afterEach(async () => {
    await runtime.resources.closeAll();
    await server.close();
  });

  function expectNoSecretLogged(): void {
    expect(text).not.toContain(PASSWORD);
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain('jwks-user');
  }

  function compile(uri: string): ReturnType<typeof compileSource> {
    return compileSource(
      { identity: [{ jwt: { issuers: ['idp'] } }], issuers: { idp: { issuer: server.url, jwksUri: uri, audiences: [AUDIENCE], waitForKeys: false } } },
      runtime,
    );
  }

  it('uses userinfo as Basic credentials and keeps the query, without logging either', async () => {
    const compiled = compile(`http://jwks-user:${PASSWORD}@${server.url.slice(7)}/jwks.json?token=${TOKEN}`);
    await vi.waitFor(async () => expect(await fetchCount(runtime, 'success')).toBe(1));
    expect(seen[0]).toEqual({ authorization: `Basic ${Buffer.from(`jwks-user:${PASSWORD}`).toString('base64')}`, url: `/jwks.json?token=${TOKEN}` });
    const token = await sign(key, { iss: server.url, aud: AUDIENCE, exp: nowSeconds(runtime) + 60 });
    expect(await outcome(compiled.source!, bearer(token))).toBe('principal');
    expectNoSecretLogged();
  });

  it('logs a failed fetch (HTTP error) with scheme://host/path only', async () => {
    status = 500;
    compile(`http://jwks-user:${PASSWORD}@${server.url.slice(7)}/jwks.json?token=${TOKEN}`);
    await vi.waitFor(async () => expect(await fetchCount(runtime, 'http_error')).toBe(1));
    expect(text).toContain(`"error":"${server.url}/jwks.json: HTTP 500"`);
    expectNoSecretLogged();
  });

  it('logs a failed fetch (connection refused) with scheme://host/path only', async () => {
    await server.close();
    compile(`http://jwks-user:${PASSWORD}@${server.url.slice(7)}/jwks.json?token=${TOKEN}`);
    await vi.waitFor(async () => expect(await fetchCount(runtime, 'network_error')).toBe(1));
    expect(text).toContain(`"error":"${server.url}/jwks.json: ECONNREFUSED"`);
    expectNoSecretLogged();
  });

  it('redacts a jwks_uri found by discovery the same way', async () => {
    status = 502;
    compileSource(
      { identity: [{ jwt: { issuers: ['idp'] } }], issuers: { idp: { issuer: server.url, discovery: true, audiences: [AUDIENCE], waitForKeys: false } } },
      runtime,
    );
    await vi.waitFor(async () => expect(await fetchCount(runtime, 'http_error')).toBe(1));
    expect(seen[1]?.authorization).toBe(`Basic ${Buffer.from(`jwks-user:${PASSWORD}`).toString('base64')}`);
    expect(text).toContain(`"error":"${server.url}/discovered.json: HTTP 502"`);
    expectNoSecretLogged();
  });
});
