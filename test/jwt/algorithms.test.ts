// Every accepted signature algorithm verifies with real keys, and only with a key of its kind.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CredentialSource } from '../../src/identity/source.js';
import { testRuntime } from '../support/runtime.js';
import { bearer, compileReady, nowSeconds, outcome, sign, signingKey, startKeyServer, type KeyServer, type SigningKey } from './helpers.js';

const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
const AUDIENCE = 'api';

describe('signature algorithms', () => {
  const runtime = testRuntime();
  let server: KeyServer;
  let keys: Map<string, SigningKey>;
  let impostors: Map<string, SigningKey>;
  let source: CredentialSource;
  let rsOnly: CredentialSource;
  const claims = () => ({ iss: server.url, aud: AUDIENCE, exp: nowSeconds(runtime) + 60 });

  beforeAll(async () => {
    keys = new Map(await Promise.all(ALGORITHMS.map(async (alg) => [alg, await signingKey(alg, `key-${alg}`)] as const)));
    impostors = new Map(await Promise.all(ALGORITHMS.map(async (alg) => [alg, await signingKey(alg, `key-${alg}`)] as const)));
    // One RSA key published without alg: usable for every RSA algorithm.
    const bare = await signingKey('RS256', 'rsa-no-alg');
    keys.set('bare', bare);
    const { alg: _alg, ...bareJwk } = bare.publicJwk;
    server = await startKeyServer([...ALGORITHMS.map((alg) => keys.get(alg)!.publicJwk), bareJwk]);
    const issuer = { issuer: server.url, jwksUri: `${server.url}/jwks.json`, audiences: [AUDIENCE] };
    source = await compileReady({ identity: [{ jwt: { issuers: ['all'] } }], issuers: { all: issuer } }, runtime);
    rsOnly = await compileReady({ identity: [{ jwt: { issuers: ['rs'] } }], issuers: { rs: { ...issuer, algorithms: ['RS256'] } } }, runtime);
  });

  afterAll(async () => {
    await runtime.resources.closeAll();
    await server.close();
  });

  it.each(ALGORITHMS)('%s verifies, and the same token from another key does not', async (alg) => {
    expect(await outcome(source, bearer(await sign(keys.get(alg)!, claims())))).toBe('principal');
    expect(await outcome(source, bearer(await sign(impostors.get(alg)!, claims())))).toBe('invalid_signature');
  });

  it('a key published without alg serves every algorithm of its type, none of another', async () => {
    const bare = keys.get('bare')!;
    for (const alg of ['RS256', 'PS384', 'RS512']) {
      expect(await outcome(source, bearer(await sign({ ...bare, alg }, claims())))).toBe('principal');
    }
    expect(await outcome(source, bearer(await sign({ ...keys.get('ES256')!, kid: 'rsa-no-alg' }, claims())))).toBe('unknown_key');
  });

  it('a key published for one algorithm is not used for another', async () => {
    const rs256 = keys.get('RS256')!;
    expect(await outcome(source, bearer(await sign({ ...rs256, alg: 'PS256' }, claims())))).toBe('unknown_key');
  });

  it('the issuer allow-list is enforced', async () => {
    expect(await outcome(rsOnly, bearer(await sign(keys.get('RS256')!, claims())))).toBe('principal');
    expect(await outcome(rsOnly, bearer(await sign(keys.get('PS256')!, claims())))).toBe('unsupported_algorithm');
    expect(await outcome(rsOnly, bearer(await sign(keys.get('EdDSA')!, claims())))).toBe('unsupported_algorithm');
  });
});
