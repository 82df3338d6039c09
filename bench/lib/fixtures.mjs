// Credentials for the bench: an RS256 issuer whose JWKS is served over HTTP by a tiny local
// server (127.0.0.1 only), tokens signed with jose (one cached token, or a pool of distinct ones
// signed on worker threads), and API keys created with `portcullis keys`.

import http from 'node:http';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { SignJWT, exportJWK, exportPKCS8, generateKeyPair } from 'jose';

const SIGN_WORKER = fileURLToPath(new URL('./sign-worker.mjs', import.meta.url));

export const AUDIENCE = 'https://api.example.com';
export const TENANT = 'acme';
export const SCOPE = 'items:read';

/** An issuer for the bench: RS256 key pair, JWKS at http://127.0.0.1:<port>/.well-known/jwks.json. */
export async function startIssuer() {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const kid = 'bench-rs256-1';
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }] });
  let fetches = 0;
  const server = http.createServer((request, response) => {
    if (request.url === '/.well-known/jwks.json') {
      fetches++;
      response.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600' });
      response.end(jwks);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    issuer: `${base}/`,
    jwksUri: `${base}/.well-known/jwks.json`,
    kid,
    privateKey,
    get fetches() {
      return fetches;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Claims of bench token number `n` (distinct subjects make distinct tokens). */
export function tokenClaims(n) {
  return { sub: `user-${n}`, tenant_id: TENANT, scope: SCOPE };
}

export function signToken(issuer, n) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(tokenClaims(n))
    .setProtectedHeader({ alg: 'RS256', kid: issuer.kid, typ: 'JWT' })
    .setIssuer(issuer.issuer)
    .setAudience(AUDIENCE)
    .setIssuedAt(now)
    .setExpirationTime(now + 2 * 3600)
    .sign(issuer.privateKey);
}

/** `count` distinct tokens (numbers first..first+count-1), signed on one worker thread per core. */
export async function signTokenPool(issuer, count, first = 1) {
  const pkcs8 = await exportPKCS8(issuer.privateKey);
  const workers = Math.max(1, Math.min(os.availableParallelism(), 4));
  const per = Math.ceil(count / workers);
  const parts = await Promise.all(
    Array.from({ length: workers }, (_, w) => {
      const from = first + w * per;
      const to = Math.min(first + count, from + per);
      if (from >= to) return [];
      return new Promise((resolve, reject) => {
        const worker = new Worker(SIGN_WORKER, {
          execArgv: [],
          workerData: { pkcs8, kid: issuer.kid, issuer: issuer.issuer, audience: AUDIENCE, from, to },
        });
        worker.once('message', resolve);
        worker.once('error', reject);
      });
    }),
  );
  return parts.flat();
}

/** A get-session endpoint like Better Auth's, for scenario (g): one known session token. */
export async function startSessionTarget() {
  const token = 'bench-session-token.signature';
  const body = JSON.stringify({ session: { id: 's1', activeOrganizationId: TENANT }, user: { id: 'bench-user' } });
  const server = http.createServer((req, res) => {
    const known = (req.headers.cookie ?? '').includes(`better-auth.session_token=${token}`);
    res.writeHead(200, { 'content-type': 'application/json' }).end(known ? body : 'null');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    token,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}
