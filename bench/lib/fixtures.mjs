// Credentials for the bench: an RS256 issuer whose JWKS is served over HTTP by a tiny local
// server (127.0.0.1 only), tokens signed with jose (one cached token, or a pool of distinct ones
// signed on worker threads), and API keys created with `portcullis keys`.

import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { SignJWT, exportJWK, exportPKCS8, generateKeyPair } from 'jose';
import { runToCompletion } from './processes.mjs';
import { ROOT } from './proto.mjs';

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

/**
 * A lookup target for the lookup rows: a get-session endpoint like Better Auth's (g), an RFC 7662
 * introspection endpoint (l) and an external API-key verifier (m), each knowing one credential.
 */
export async function startSessionTarget() {
  const token = 'bench-session-token.signature';
  const opaqueToken = 'bench-opaque-access-token-0123456789abcdefghij';
  const apiKey = 'bench_external_key_0123456789abcdefghijklmnop';
  const body = JSON.stringify({ session: { id: 's1', activeOrganizationId: TENANT }, user: { id: 'bench-user' } });
  const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      let answer = 'null';
      if (req.url === '/introspect') {
        const known = new URLSearchParams(raw).get('token') === opaqueToken;
        answer = JSON.stringify(known ? { active: true, sub: 'bench-client', client_id: 'bench-client', scope: SCOPE, org_id: TENANT, exp: Math.floor(Date.now() / 1000) + 3600 } : { active: false });
      } else if (req.url === '/verify-api-key') {
        let key;
        try {
          key = JSON.parse(raw).key;
        } catch {
          // not JSON: unknown
        }
        answer = JSON.stringify(key === apiKey ? { valid: true, key: { id: 'bench-key', tenant: TENANT, scopes: [SCOPE] } } : { valid: false });
      } else if ((req.headers.cookie ?? '').includes(`better-auth.session_token=${token}`)) {
        answer = body;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(answer);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    token,
    opaqueToken,
    apiKey,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

/**
 * What the fixed-request scenarios' prepare() needs, for the tools that run one server per
 * scenario (profile.mjs, alloc-profile.mjs, ab-cpu.mjs): a token issuer (started on first use) and
 * an API key made with `cli`'s `keys create` into `workDir`. close() stops the issuer.
 */
export function scenarioContext(workDir, cli) {
  let issuer;
  const ctx = {
    issuer: async () => (issuer ??= await startIssuer()),
    token: async () => signToken(await ctx.issuer(), 0),
    apiKey: async () => {
      const file = path.join(workDir, 'keys.yaml');
      const run = await runToCompletion({ command: process.execPath, args: [cli, 'keys', 'create', '--store', `file:${file}`, '--tenant', TENANT, '--name', 'bench', '--scopes', SCOPE, '--expires-in', '1d', '--json'], env: process.env, timeoutMs: 30_000, cwd: ROOT });
      return { env: { BENCH_KEYS_FILE: file }, key: JSON.parse(run.stdout).key };
    },
    close: async () => issuer?.close(),
  };
  return ctx;
}
