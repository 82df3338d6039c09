// `portcullis test`: policy unit tests in YAML, like `opa test`. Each case is a request and what
// Portcullis must answer. Fixtures stand in for the outside world, never for the pipeline:
//   - tokens are minted at test time with test keys that replace each issuer's keys for the run
//     (JWKS issuers: a key set served on 127.0.0.1; secret issuers: a generated secret);
//   - API keys are created in a throwaway key file (deleted after the run);
//   - the clock is frozen (per case, `advance` moves it);
//   - rate limits count in memory, fresh for every case (`repeat: 21` → the 21st answer is judged).
// Everything else — routes, sources, rules, limits, headers — is the real compiled policy.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { isMap, isScalar, LineCounter, parseDocument } from 'yaml';
import { ManualClock } from '../clock.js';
import { PolicyError, formatPolicyIssue } from '../errors.js';
import { createKey, importKey, revokeKey, type KeyAdmin } from '../keys/admin.js';
import { keyStoreSchema, type ImportedFormat } from '../keys/config.js';
import { FileKeyStore } from '../keys/file-store.js';
import { KeyHasher } from '../keys/hashing.js';
import { silentLogger } from '../observability/logger.js';
import { loadPolicyFileWithLocator, type LoadedPolicy } from '../policy/load.js';
import type { PolicyDocument } from '../policy/schema.js';
import { parseDuration } from '../policy/units.js';
import { parseCommand, usageError } from './args.js';
import { allProblems } from './problems.js';
import { buildRequest, decide, type DecisionReport } from './decide.js';
import type { CliIo } from './io.js';
import { jwksIssuers, openSession } from './session.js';
import { testFileSchema, type Expectation, type TestCase, type TestFile } from './test-file.js';

export const TEST_USAGE = `Usage: portcullis test [--config FILE] [--junit FILE] TESTS...

Runs policy unit tests: YAML files of requests and the answers Portcullis must give.

  -c, --config FILE   the policy under test (default: the test file's policy: key)
      --junit FILE    also write a JUnit XML report (CI)
  -h, --help          this help

A test file:
  policy: portcullis.yaml            # relative to the test file
  env: { WEBHOOK_SECRET: "…" }        # for \${VAR} in the policy
  clock: 2026-01-01T00:00:00Z        # frozen clock
  keys:                              # API keys, created in a throwaway store
    ci: { tenant: acme, scopes: [catalog:read] }
  cases:
    - name: a reader may list products
      request: GET https://api.example.com/v1/products
      apiKey: ci                     # sent as x-api-key (or use {{apiKey}} in headers)
      expect: { decision: allow, upstreamHeaders: { x-tenant-id: acme } }
    - name: tokens are minted with test keys for the issuer
      request: GET https://api.example.com/v1/items/1
      token: { issuer: auth0, claims: { permissions: [items:read] } }   # variant: expired | not-yet-valid | wrong-key | alg-none | tampered
      expect: { status: 403, reason: insufficient_scope }
    - name: the 21st login attempt is limited
      request: POST https://api.example.com/login
      repeat: 21
      expect: { status: 429 }

Exit status: 0 every case passed, 1 a case failed or a file is invalid, 2 usage error.
`;

interface CaseResult {
  readonly name: string;
  readonly failures: readonly string[];
  readonly summary: string;
}

interface FileResult {
  readonly file: string;
  readonly cases: CaseResult[];
  /** The file could not be run at all (invalid test file or policy). */
  readonly error?: string;
}

export async function runTestCommand(args: string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(args, { config: { type: 'string', short: 'c' }, junit: { type: 'string' } }, TEST_USAGE, io, true);
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  if (positionals.length === 0) return usageError('test needs at least one test file', TEST_USAGE, io);

  const results: FileResult[] = [];
  for (const file of positionals) {
    const result = await runFile(file, values.config as string | undefined, io);
    results.push(result);
    io.out(`${file}\n`);
    if (result.error) io.out(`  ERROR ${result.error.split('\n').join('\n        ')}\n`);
    for (const c of result.cases) {
      io.out(c.failures.length === 0 ? `  ok    ${c.name}  (${c.summary})\n` : `  FAIL  ${c.name}\n${c.failures.map((f) => `          ${f}\n`).join('')}`);
    }
  }
  const total = results.reduce((n, r) => n + r.cases.length, 0);
  const failed = results.reduce((n, r) => n + r.cases.filter((c) => c.failures.length > 0).length, 0);
  const broken = results.filter((r) => r.error).length;
  io.out(`\n${total} case${total === 1 ? '' : 's'}: ${total - failed} passed, ${failed} failed${broken > 0 ? `; ${broken} file${broken === 1 ? '' : 's'} could not run` : ''}\n`);
  if (values.junit) writeFileSync(values.junit as string, junit(results));
  return failed > 0 || broken > 0 ? 1 : 0;
}

async function runFile(file: string, configFlag: string | undefined, io: CliIo): Promise<FileResult> {
  let spec: TestFile;
  try {
    spec = readTestFile(file);
  } catch (err) {
    return { file, cases: [], error: (err as Error).message };
  }
  const policyFile = configFlag ?? (spec.policy !== undefined ? path.resolve(path.dirname(file), spec.policy) : undefined);
  if (policyFile === undefined) return { file, cases: [], error: 'no policy: give --config FILE or a policy: key in the test file' };
  const env = { ...io.env, ...spec.env };
  const frozen = Date.parse(spec.clock);
  if (Number.isNaN(frozen)) return { file, cases: [], error: `clock: "${spec.clock}" is not an ISO 8601 time` };

  let loaded: LoadedPolicy;
  try {
    loaded = await loadPolicyFileWithLocator(policyFile, env);
  } catch (err) {
    const message = err instanceof PolicyError ? (await allProblems(err, policyFile, env)).map(formatPolicyIssue).join('\n') : (err as Error).message;
    return { file, cases: [], error: message };
  }

  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-test-'));
  try {
    const issuers = await testIssuers(loaded.document);
    const keyFile = path.join(dir, 'keys.yaml');
    const keys = await createKeys(spec, loaded.document, keyFile, frozen);
    const rewrite = (document: PolicyDocument) => {
      for (const [name, key] of issuers) {
        if (key.secret !== undefined) {
          const issuer = document.issuers[name] as { secret?: string; secretEncoding: string };
          issuer.secret = key.secret;
          issuer.secretEncoding = 'utf8';
        }
      }
      const usesKeys = [...document.identity, ...document.routes.flatMap((r) => r.identity ?? [])].some((entry) => entry.apiKey !== undefined);
      if (usesKeys || document.keyStore !== undefined) {
        const store = document.keyStore ?? keyStoreSchema.parse({});
        (document as { keyStore?: unknown }).keyStore = { ...store, type: 'file', file: { path: keyFile, reloadInterval: 60_000 }, postgres: undefined };
      }
      if (document.rateLimits) {
        (document.rateLimits as { backend: unknown }).backend = { memory: { maxKeys: 100_000 } };
        (document.rateLimits as { bans?: unknown }).bans = undefined;
        // Without a ban store nothing escalates (and a test never writes bans).
        for (const p of (document.rateLimits as { policies?: { escalate?: unknown }[] }).policies ?? []) delete p.escalate;
      }
    };
    const keySets = new Map([...issuers].filter(([, k]) => k.jwks !== undefined).map(([name, k]) => [name, k.jwks!]));
    const cases: CaseResult[] = [];
    for (const testCase of spec.cases) {
      cases.push(await runCase(testCase, { loaded, policyFile, env, frozen, issuers, keys, keySets, rewrite }));
    }
    return { file, cases };
  } catch (err) {
    return { file, cases: [], error: (err as Error).message };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function readTestFile(file: string): TestFile {
  const text = readFileSync(file, 'utf8');
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const { line, col } = lineCounter.linePos(e.pos[0]);
    throw new Error(`${file}:${line}:${col}: YAML: ${e.message.split('\n')[0]}`);
  }
  const result = testFileSchema.safeParse(doc.toJS());
  if (result.success) return result.data;
  const locate = (p: (string | number)[], key?: string): string => {
    let node: unknown;
    for (let n = p.length; n >= 0 && node === undefined; n--) node = n === 0 ? doc.contents : doc.getIn(p.slice(0, n), true);
    let offset = (node as { range?: [number] } | undefined)?.range?.[0];
    if (key !== undefined && isMap(node)) {
      const pair = node.items.find((item) => isScalar(item.key) && String(item.key.value) === key);
      offset = (pair?.key as { range?: [number] } | undefined)?.range?.[0] ?? offset;
    }
    if (offset === undefined) return file;
    const { line, col } = lineCounter.linePos(offset);
    return `${file}:${line}:${col}`;
  };
  const messages = result.error.issues.flatMap((issue) => {
    const p = issue.path as (string | number)[];
    const at = p.join('.') || '(top)';
    if (issue.code === 'unrecognized_keys') return issue.keys.map((k) => `${locate(p, k)}: ${at}: unknown key "${k}"`);
    const missing = issue.code === 'invalid_type' && issue.message.endsWith('received undefined');
    return [`${locate(p)}: ${at}: ${missing ? 'is required' : issue.message.replace(/^Invalid input: /, '')}`];
  });
  return fail(messages.join('\n'));
}

function fail(message: string): never {
  throw new Error(message);
}

// ---- issuers: test keys that replace the real ones for the run ----

interface IssuerKey {
  readonly alg: string;
  readonly kid: string;
  readonly sign: CryptoKey | Uint8Array;
  /** A key of the same kind the issuer does not trust (variant: wrong-key). */
  readonly wrong: CryptoKey | Uint8Array;
  readonly secret?: string;
  readonly jwks?: string;
  readonly iss?: string;
  readonly aud?: string;
}

async function testIssuers(document: PolicyDocument): Promise<Map<string, IssuerKey>> {
  const out = new Map<string, IssuerKey>();
  const jwks = new Set(jwksIssuers(document));
  for (const [name, config] of Object.entries(document.issuers)) {
    const base = { kid: 'portcullis-test', iss: config.issuer, aud: config.audiences?.[0] };
    if (!jwks.has(name)) {
      const alg = config.algorithms?.[0] ?? 'HS256';
      const secret = randomBytes(64).toString('hex');
      out.set(name, { ...base, alg, sign: new TextEncoder().encode(secret), wrong: randomBytes(64), secret });
      continue;
    }
    const alg = config.algorithms?.[0] ?? 'RS256';
    const genAlg = alg === 'Ed25519' ? 'EdDSA' : alg;
    const pair = await generateKeyPair(genAlg, { extractable: true });
    const other = await generateKeyPair(genAlg, { extractable: true });
    const jwk: JWK = { ...(await exportJWK(pair.publicKey)), kid: base.kid, alg, use: 'sig' };
    out.set(name, { ...base, alg, sign: pair.privateKey, wrong: other.privateKey, jwks: JSON.stringify({ keys: [jwk] }) });
  }
  return out;
}

async function mintToken(fixture: Exclude<TestCase['token'], string | undefined>, issuers: Map<string, IssuerKey>, now: number): Promise<string> {
  const key = issuers.get(fixture.issuer);
  if (!key) fail(`token: the policy has no issuer named "${fixture.issuer}"${issuers.size > 0 ? ` (issuers: ${[...issuers.keys()].join(', ')})` : ''}`);
  const seconds = Math.floor(now / 1000);
  const lifetime = fixture.expiresIn === undefined ? 3600 : Math.floor((parseDuration(fixture.expiresIn) ?? fail(`token.expiresIn: "${fixture.expiresIn}" is not a duration`)) / 1000);
  const claims: Record<string, unknown> = { sub: 'test-user', iat: seconds, exp: seconds + lifetime };
  if (key.iss !== undefined) claims.iss = key.iss;
  if (key.aud !== undefined) claims.aud = key.aud;
  if (fixture.variant === 'expired') Object.assign(claims, { iat: seconds - 7200, exp: seconds - 3600 });
  if (fixture.variant === 'not-yet-valid') claims.nbf = seconds + 3600;
  for (const [name, value] of Object.entries(fixture.claims)) {
    if (value === null) delete claims[name];
    else claims[name] = value;
  }
  const header = { alg: key.alg, kid: key.kid, typ: 'JWT' };
  if (fixture.variant === 'alg-none') {
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
  }
  const token = await new SignJWT(claims).setProtectedHeader(header).sign(fixture.variant === 'wrong-key' ? key.wrong : key.sign);
  if (fixture.variant === 'tampered') {
    const [h, , s] = token.split('.');
    return `${h}.${Buffer.from(JSON.stringify({ ...claims, sub: `${String(claims.sub)}-admin` })).toString('base64url')}.${s}`;
  }
  return token;
}

// ---- API keys: a throwaway file store ----

async function createKeys(spec: TestFile, document: PolicyDocument, keyFile: string, frozen: number): Promise<Map<string, string>> {
  const keys = new Map<string, string>();
  if (Object.keys(spec.keys).length === 0) return keys;
  const config = document.keyStore ?? keyStoreSchema.parse({});
  const store = new FileKeyStore({ path: keyFile, logger: silentLogger(), reloadIntervalMs: 0 });
  const formats: ImportedFormat[] = [];
  for (const entry of [...document.identity, ...document.routes.flatMap((r) => r.identity ?? [])]) {
    if (entry.apiKey) formats.push(...entry.apiKey.importedFormats);
  }
  try {
    for (const [fixtureName, fixture] of Object.entries(spec.keys)) {
      // An expired key was created two days before the frozen clock and lived one day.
      const clock = new ManualClock(fixture.expired ? frozen - 2 * 86_400_000 : frozen);
      const admin: KeyAdmin = { store, hasher: new KeyHasher(config.pepper), clock, maxExpiryMs: config.maxExpiry };
      const attributes = { tenant: fixture.tenant, name: fixture.name ?? fixtureName, scopes: fixture.scopes, environment: fixture.environment };
      const lifetime = fixture.expired ? 86_400_000 : Math.min(30 * 86_400_000, config.maxExpiry);
      const prefix = fixture.prefix ?? config.defaultPrefix;
      const format = formats.find((f) => f.prefix === prefix);
      let id: string;
      if (format) {
        const key = prefix + randomKeyBody(format);
        id = (await importKey(admin, { ...attributes, expiresAt: clock.now() + lifetime }, { kind: 'plaintext', key, prefix })).id;
        keys.set(fixtureName, key);
      } else {
        const created = await createKey(admin, { ...attributes, prefix, expiresInMs: lifetime });
        id = created.record.id;
        keys.set(fixtureName, created.key);
      }
      if (fixture.revoked) await revokeKey({ ...admin, clock: new ManualClock(frozen - 60_000) }, id);
    }
  } finally {
    await store.close();
  }
  return keys;
}

function randomKeyBody(format: ImportedFormat): string {
  const alphabet = format.charset === 'hex' ? '0123456789abcdef' : format.charset === 'base62' ? '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz' : '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_';
  const length = format.length ?? Math.max(format.minLength ?? 32, 32);
  const bytes = randomBytes(length);
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[bytes[i]! % alphabet.length];
  return out;
}

// ---- one case ----

interface FileContext {
  readonly loaded: LoadedPolicy;
  readonly policyFile: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly frozen: number;
  readonly issuers: Map<string, IssuerKey>;
  readonly keys: Map<string, string>;
  readonly keySets: Map<string, string>;
  readonly rewrite: (document: PolicyDocument) => void;
}

async function runCase(testCase: TestCase, ctx: FileContext): Promise<CaseResult> {
  const advance = testCase.advance === undefined ? 0 : parseDuration(testCase.advance);
  if (advance === undefined) return { name: testCase.name, failures: [`advance: "${testCase.advance}" is not a duration`], summary: '' };
  const clock = new ManualClock(ctx.frozen + advance);
  let session;
  try {
    const token =
      testCase.token === undefined ? undefined : typeof testCase.token === 'string' ? testCase.token : await mintToken(testCase.token, ctx.issuers, clock.now());
    let apiKey: string | undefined;
    if (testCase.apiKey !== undefined) {
      apiKey = ctx.keys.get(testCase.apiKey);
      if (apiKey === undefined) fail(`apiKey: no key named "${testCase.apiKey}" under keys:`);
    }
    const request = testCase.request;
    const base = typeof request === 'string' ? { method: request.split(' ')[0]!, url: request.split(' ')[1]!, headers: {}, sourceIp: undefined, sourcePrincipal: undefined } : request;
    const headers: Record<string, string> = { ...base.headers, ...testCase.headers };
    const used = { token: false, apiKey: false };
    const resolved = Object.entries(headers).map(([name, value]): [string, string] => [
      name,
      value.replace(/\{\{\s*(token|apiKey|env:([A-Za-z_][A-Za-z0-9_]*))\s*\}\}/g, (_m, what: string, envName?: string) => {
        if (what === 'token') {
          used.token = true;
          return token ?? fail('{{token}} is used but the case has no token:');
        }
        if (what === 'apiKey') {
          used.apiKey = true;
          return apiKey ?? fail('{{apiKey}} is used but the case has no apiKey:');
        }
        return ctx.env[envName!] ?? fail(`{{env:${envName}}}: ${envName} is not set (add it under env:)`);
      }),
    ]);
    if (token !== undefined && !used.token) resolved.push(['authorization', `Bearer ${token}`]);
    if (apiKey !== undefined && !used.apiKey) resolved.push(['x-api-key', apiKey]);

    session = await openSession(ctx.loaded, { file: ctx.policyFile, env: ctx.env, clock, keySets: ctx.keySets, rewrite: ctx.rewrite });
    let result: DecisionReport | undefined;
    for (let i = 0; i < testCase.repeat; i++) {
      const attributes = buildRequest({ method: base.method, url: base.url, headers: resolved, sourceIp: testCase.sourceIp ?? base.sourceIp ?? '203.0.113.10', sourcePrincipal: testCase.sourcePrincipal ?? base.sourcePrincipal });
      result = await decide(session.policy, attributes);
    }
    const failures = compare(testCase.expect, result!);
    const summary = `${result!.decision} ${result!.status} ${result!.reason}, route ${result!.route}${testCase.repeat > 1 ? `, request ${testCase.repeat} of ${testCase.repeat}` : ''}`;
    return { name: testCase.name, failures, summary };
  } catch (err) {
    return { name: testCase.name, failures: [`error: ${(err as Error).message}`], summary: '' };
  } finally {
    await session?.close();
  }
}

function compare(expect: Expectation, got: DecisionReport): string[] {
  const failures: string[] = [];
  const gotLine = `got ${got.decision} ${got.status} ${got.reason} on route ${got.route}${got.detail ? ` (${got.detail})` : ''}`;
  const check = (what: string, want: unknown, have: unknown) => {
    if (want !== undefined && want !== have) failures.push(`expected ${what} ${JSON.stringify(want)}, ${gotLine}`);
  };
  check('decision', expect.decision, got.decision);
  check('status', expect.status, got.status);
  check('reason', expect.reason, got.reason);
  check('route', expect.route, got.route);
  for (const [name, value] of Object.entries(expect.upstreamHeaders ?? {})) {
    const have = got.upstreamHeaders[name.toLowerCase()];
    if (value === null ? have !== undefined : have !== value) {
      failures.push(`expected upstream header ${name} ${value === null ? 'not to be set' : JSON.stringify(value)}, got ${have === undefined ? 'none' : JSON.stringify(have)}`);
    }
  }
  for (const name of expect.removedHeaders ?? []) {
    if (!got.removedHeaders.includes(name.toLowerCase())) failures.push(`expected ${name} to be removed upstream; removed: ${got.removedHeaders.join(', ') || 'none'}`);
  }
  for (const [name, value] of Object.entries(expect.responseHeaders ?? {})) {
    const have = got.responseHeaders[name.toLowerCase()];
    if (value === null ? have !== undefined : have !== value) {
      failures.push(`expected response header ${name} ${value === null ? 'to be absent' : JSON.stringify(value)}, got ${have === undefined ? 'none' : JSON.stringify(have)}`);
    }
  }
  return failures;
}

// ---- JUnit ----

function junit(results: readonly FileResult[]): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  const suites = results.map((r) => {
    const failures = r.cases.filter((c) => c.failures.length > 0).length;
    const cases = r.cases.map((c) =>
      c.failures.length === 0
        ? `    <testcase classname="${esc(r.file)}" name="${esc(c.name)}"/>`
        : `    <testcase classname="${esc(r.file)}" name="${esc(c.name)}">\n      <failure message="${esc(c.failures[0]!)}">${esc(c.failures.join('\n'))}</failure>\n    </testcase>`,
    );
    const error = r.error ? `    <testcase classname="${esc(r.file)}" name="(load)">\n      <error message="${esc(r.error.split('\n')[0]!)}">${esc(r.error)}</error>\n    </testcase>` : undefined;
    return `  <testsuite name="${esc(r.file)}" tests="${r.cases.length + (error ? 1 : 0)}" failures="${failures}" errors="${error ? 1 : 0}">\n${[...cases, ...(error ? [error] : [])].join('\n')}\n  </testsuite>`;
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n${suites.join('\n')}\n</testsuites>\n`;
}
