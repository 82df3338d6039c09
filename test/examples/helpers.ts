// Shared by the seed example tests: read an example policy, point its network and file locations at
// local stand-ins (text substitution only — everything else stays exactly as in the file), run
// requests through the real authorize(), and read decisions.

import { generateKeyPairSync } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JWK } from 'jose';
import { expect } from 'vitest';
import { runCli } from '../../src/cli.js';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import type { AllowDecision, Decision, DenyDecision } from '../../src/types.js';
import { startServer, type LocalServer } from '../jwt/helpers.js';
import { request, type RequestInit } from '../support/request.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const EXAMPLES = path.join(ROOT, 'examples');

/** The identity token signing key of examples/mesh-service-to-service.yaml: a fresh ES256 key per run. */
const IDENTITY_KEY_FILE = path.join(mkdtempSync(path.join(tmpdir(), 'portcullis-example-key-')), 'key.pem');
writeFileSync(IDENTITY_KEY_FILE, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });

/** Test values for the secrets the examples read from the environment. */
export const TEST_ENV = {
  IDENTITY_KEY_FILE,
  CHECKOUT_API_SECRET: 'checkout-secret-for-the-example-tests-0123',
  SUPABASE_JWT_SECRET: 'supabase-jwt-secret-for-the-example-tests-0123456789',
  TRONEXUS_JWT_SECRET: 'tronexus-jwt-secret-for-the-example-tests-0123456789',
  // Seed 004's thresholds (".env variables"), at the values its documentation gives.
  RATE_LIMIT_REQUESTS: '20',
  RATE_LIMIT_WINDOW: '60s',
  RATE_LIMIT_LOCKOUT_AFTER: '10',
  RATE_LIMIT_LOCKOUT_DURATION: '15m',
  RATE_LIMIT_BAN_AFTER: '3',
  // Seed 002's lookups (validate connects to nothing; the seed-002 test points them at real ones).
  COMMERCE_DATABASE_URL: 'postgres://portcullis@127.0.0.1:5432/commerce',
  BETTER_AUTH_URL: 'http://127.0.0.1:3000',
} as const;

export function readExample(name: string): string {
  return readFileSync(path.join(EXAMPLES, name), 'utf8');
}

/** Replace `from` (which must occur in the text) everywhere. */
export function substitute(text: string, from: string, to: string): string {
  expect(text, `example text should contain ${from}`).toContain(from);
  return text.split(from).join(to);
}

export async function check(policy: CompiledPolicy, init: RequestInit): Promise<Decision> {
  return authorize(policy, request(init));
}

export function allowed(decision: Decision): AllowDecision {
  if (!decision.allowed) throw new Error(`expected allow, got ${decision.status} ${decision.reason} (${decision.detail ?? ''})`);
  return decision;
}

export function denied(decision: Decision): DenyDecision {
  if (decision.allowed) throw new Error(`expected a denial, got allow on route ${decision.route}`);
  return decision;
}

/** Identity headers sent upstream, as a plain object. */
export function upstream(decision: Decision): Record<string, string> {
  return Object.fromEntries(allowed(decision).upstreamHeaders.map((h) => [h.name, h.value]));
}

/** A header of a denial (WWW-Authenticate, Retry-After, RateLimit). */
export function denialHeader(decision: Decision, name: string): string | undefined {
  return denied(decision).headers.find((h) => h.name === name)?.value;
}

export function body(decision: Decision): Record<string, unknown> {
  return JSON.parse(denied(decision).body) as Record<string, unknown>;
}

/** A temporary directory removed by `cleanup`. */
export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Copy an example key file into `dir`; returns the copy's path. */
export function copyKeyFile(name: string, dir: string): string {
  const target = path.join(dir, name);
  copyFileSync(path.join(EXAMPLES, 'keys', name), target);
  return target;
}

/** Run the real `portcullis` CLI in-process. */
export async function cli(argv: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(argv, { out: (s) => (out += s), err: (s) => (err += s), env });
  return { code, out, err };
}

/** `portcullis keys create ... --json` → the printed key and its id. */
export async function createKey(args: string[], env: Record<string, string> = {}): Promise<{ key: string; id: string }> {
  const result = await cli(['keys', 'create', ...args, '--json'], env);
  expect(result.err).toBe('');
  expect(result.code).toBe(0);
  return JSON.parse(result.out) as { key: string; id: string };
}

/**
 * An Auth0-like identity provider on 127.0.0.1: discovery at /.well-known/openid-configuration
 * (issuer = `<url>/`), keys at /.well-known/jwks.json, and at `extraJwksPaths`.
 */
export interface LocalIdp extends LocalServer {
  keys: JWK[];
}

export async function startIdp(keys: JWK[], extraJwksPaths: string[] = []): Promise<LocalIdp> {
  let self!: LocalIdp;
  const jwksPaths = new Set(['/.well-known/jwks.json', ...extraJwksPaths]);
  const local = await startServer((req, res) => {
    const p = (req.url ?? '/').split('?')[0]!;
    const json = (value: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(value));
    if (p === '/.well-known/openid-configuration') json({ issuer: `${self.url}/`, jwks_uri: `${self.url}/.well-known/jwks.json` });
    else if (jwksPaths.has(p)) json({ keys: self.keys });
    else res.writeHead(404).end();
  });
  self = Object.assign(local, { keys });
  return self;
}
