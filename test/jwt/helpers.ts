// Shared by the JWT tests: real keys, a local JWKS/discovery server that counts its requests, a
// trap server that must never be called, and a CompileContext for compiling a jwt source alone.

import { KeyObject, sign as cryptoSign } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose';
import { compileJwtSource } from '../../src/identity/jwt.js';
import { isPromise, type RequestAttributes } from '../../src/types.js';
import type { CredentialSource, IdentifyResult } from '../../src/identity/source.js';
import type { CompileContext } from '../../src/policy/context.js';
import { policySchema } from '../../src/policy/schema.js';
import type { Runtime } from '../../src/runtime.js';
import { request } from '../support/request.js';

export interface SigningKey {
  readonly alg: string;
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

export async function signingKey(alg: string, kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, privateKey, publicJwk };
}

export function nowSeconds(runtime: Runtime): number {
  return Math.floor(runtime.clock.now() / 1000);
}

/** A token signed with `key`; `header` adds or overrides protected header members. */
export function sign(key: SigningKey, claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
  // As a KeyObject, one RSA key can sign RS* and PS* alike.
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: key.kid, ...header }).sign(KeyObject.from(key.privateKey));
}

export const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** An RS256 token over an arbitrary header (for headers jose refuses to sign, such as unknown crit). */
export function signRs256Raw(key: SigningKey, header: Record<string, unknown>, payload: unknown): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const signature = cryptoSign('sha256', Buffer.from(input), KeyObject.from(key.privateKey));
  return `${input}.${signature.toString('base64url')}`;
}

/** A compact JWS assembled by hand (for tokens no library would sign). */
export function rawToken(header: unknown, payload: unknown, signature = ''): string {
  return `${b64(header)}.${b64(payload)}.${signature}`;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export interface LocalServer {
  readonly url: string;
  readonly server: Server;
  /** Requests per path. */
  readonly hits: Map<string, number>;
  count(path: string): number;
  total(): number;
  close(): Promise<void>;
}

export async function startServer(handle: Handler): Promise<LocalServer> {
  const hits = new Map<string, number>();
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    handle(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    hits,
    count: (path) => hits.get(path) ?? 0,
    total: () => [...hits.values()].reduce((a, b) => a + b, 0),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** An issuer's key server: discovery at /.well-known/openid-configuration, keys at /jwks.json. */
export interface KeyServer extends LocalServer {
  keys: JWK[];
  /** 'ok', an HTTP status to answer with, or 'hang' (never answers). */
  mode: 'ok' | number | 'hang';
  /** While set, JWKS responses wait for it (to hold concurrent fetches open). */
  gate: Promise<void> | undefined;
  /** Overrides the discovery document's issuer. */
  discoveredIssuer: string | undefined;
  jwksRequests(): number;
}

export async function startKeyServer(keys: JWK[] = []): Promise<KeyServer> {
  // The handler reads the live settings of `self`, assigned before the first request can arrive.
  let self!: KeyServer;
  const local = await startServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (self.mode === 'hang') return; // the client's timeout must end this
    if (typeof self.mode === 'number') {
      res.writeHead(self.mode).end();
      return;
    }
    if (path === '/.well-known/openid-configuration') {
      json(res, { issuer: self.discoveredIssuer ?? self.url, jwks_uri: `${self.url}/jwks.json` });
    } else if (path === '/jwks.json') {
      const keysNow = self.keys;
      void (self.gate ?? Promise.resolve()).then(() => json(res, { keys: keysNow }));
    } else {
      res.writeHead(404).end();
    }
  });
  self = Object.assign(local, {
    keys,
    mode: 'ok' as KeyServer['mode'],
    gate: undefined,
    discoveredIssuer: undefined,
    jwksRequests: () => local.count('/jwks.json'),
  });
  return self;
}

function json(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

export interface Compiled {
  readonly source: CredentialSource | undefined;
  readonly errors: string[];
  readonly warnings: string[];
  readonly waits: Promise<void>[];
}

/**
 * Compile the jwt source at identity[0] of a policy built from `policy` (parsed with the real
 * schema, so defaults apply exactly as in production).
 */
export function compileSource(policy: Record<string, unknown>, runtime: Runtime): Compiled {
  const document = policySchema.parse(policy);
  const errors: string[] = [];
  const warnings: string[] = [];
  const waits: Promise<void>[] = [];
  const ctx: CompileContext = {
    runtime,
    policy: document,
    file: 'policy.yaml',
    error: (path, message) => errors.push(`${path.join('.')}: ${message}`),
    warn: (path, message) => warnings.push(`${path.join('.')}: ${message}`),
    waitFor: (_what, ready) => waits.push(ready),
  };
  runtime.resources.beginCompile();
  const entry = document.identity[0]!;
  const source = entry.jwt ? compileJwtSource(entry.jwt, ['identity', 0, 'jwt'], ctx) : undefined;
  return { source, errors, warnings, waits };
}

/** Compile, require success, and wait for what readiness waits for (first JWKS fetches). */
export async function compileReady(policy: Record<string, unknown>, runtime: Runtime): Promise<CredentialSource> {
  const compiled = compileSource(policy, runtime);
  if (!compiled.source) throw new Error(`compile failed: ${compiled.errors.join('; ')}`);
  await Promise.all(compiled.waits);
  return compiled.source;
}

/** Compile and require success. */
export function mustCompile(policy: Record<string, unknown>, runtime: Runtime): CredentialSource {
  const compiled = compileSource(policy, runtime);
  if (!compiled.source) throw new Error(`compile failed: ${compiled.errors.join('; ')}`);
  return compiled.source;
}

export function bearer(token: string): RequestAttributes {
  return request({ headers: { authorization: `Bearer ${token}` } });
}

export async function identify(source: CredentialSource, req: RequestAttributes): Promise<IdentifyResult> {
  const result = source.identify(req);
  return isPromise(result) ? await result : result;
}

/** The denial reason, "principal", or "none". */
export async function outcome(source: CredentialSource, req: RequestAttributes): Promise<string> {
  const result = await identify(source, req);
  return result.kind === 'deny' ? result.denial.reason : result.kind;
}
