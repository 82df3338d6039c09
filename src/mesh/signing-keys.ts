// Signing keys of the identity token (README "Identity token for upstreams"): read from files (a
// mounted Secret) holding a PEM key, a JWK or a JWK Set, several at once for rotation. Files are
// listed oldest first; the token is signed with the last key that has a private part, and every
// key's public part is published (a public-only key is published but never signs: add the next
// key that way first when verifiers cache the JWKS for long).
//
// Everything here is synchronous (node:crypto), so a policy compile can refuse bad keys at once.
// Reloads are all or nothing: a missing or invalid file keeps the last good set.

import { createHash, createPrivateKey, createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';

export type IdentityTokenAlgorithm = 'ES256' | 'EdDSA';

export interface SigningKey {
  readonly kid: string;
  /** Undefined for a public-only key (published, never used to sign). */
  readonly privateKey: KeyObject | undefined;
  /** The published JWK: public members only, plus kid, alg and use. */
  readonly publicJwk: Readonly<Record<string, string>>;
}

export interface KeySet {
  readonly keys: readonly SigningKey[];
  /** The newest key with a private part. */
  readonly signer: SigningKey;
  /** /.well-known/jwks.json, serialised once. */
  readonly jwksJson: string;
  /** What the files held (to tell a real change from a re-read). */
  readonly fingerprint: string;
}

/** A key file that cannot be used; the message never contains key material. */
export class KeyFileError extends Error {
  readonly code = 'IDENTITY_KEY_INVALID';
}

/** Read and check every file; throws KeyFileError naming the first problem. */
export function loadKeySet(files: readonly string[], algorithm: IdentityTokenAlgorithm): KeySet {
  const keys: SigningKey[] = [];
  const digest = createHash('sha256');
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new KeyFileError(`cannot read "${file}" (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    digest.update(file).update('\0').update(text).update('\0');
    for (const key of parseKeyFile(text, file, algorithm)) {
      const same = keys.find((k) => k.kid === key.kid);
      if (same && JSON.stringify(same.publicJwk) !== JSON.stringify(key.publicJwk)) throw new KeyFileError(`"${file}": kid "${key.kid}" names two different keys`);
      if (same) {
        // The same key twice (its public part published ahead, then the private key): one entry, at the later place.
        keys.splice(keys.indexOf(same), 1);
        keys.push(key.privateKey ? key : same);
        continue;
      }
      keys.push(key);
    }
  }
  const signer = [...keys].reverse().find((k) => k.privateKey !== undefined);
  if (!signer) throw new KeyFileError('no private key to sign with (every key file holds a public key only)');
  return Object.freeze({
    keys: Object.freeze(keys),
    signer,
    jwksJson: JSON.stringify({ keys: keys.map((k) => k.publicJwk) }),
    fingerprint: digest.digest('base64url'),
  });
}

function parseKeyFile(text: string, file: string, algorithm: IdentityTokenAlgorithm): SigningKey[] {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(trimmed);
    } catch {
      throw new KeyFileError(`"${file}" is neither a PEM key nor valid JSON`);
    }
    const list = Array.isArray((json as { keys?: unknown }).keys) ? ((json as { keys: unknown[] }).keys) : [json];
    if (list.length === 0) throw new KeyFileError(`"${file}": the JWK Set is empty`);
    return list.map((jwk, i) => fromJwk(jwk, list.length > 1 ? `"${file}" keys[${i}]` : `"${file}"`, algorithm));
  }
  const what = `"${file}"`;
  let key: KeyObject;
  let isPrivate: boolean;
  try {
    isPrivate = /-----BEGIN (EC |ENCRYPTED )?PRIVATE KEY-----/.test(trimmed);
    if (/ENCRYPTED PRIVATE KEY/.test(trimmed)) throw new KeyFileError(`${what}: encrypted PEM keys are not supported`);
    key = isPrivate ? createPrivateKey(trimmed) : createPublicKey(trimmed);
  } catch (err) {
    if (err instanceof KeyFileError) throw err;
    throw new KeyFileError(`${what} is not a PEM key or JWK`);
  }
  return [finish(key, isPrivate, undefined, what, algorithm)];
}

function fromJwk(value: unknown, what: string, algorithm: IdentityTokenAlgorithm): SigningKey {
  if (typeof value !== 'object' || value === null) throw new KeyFileError(`${what} is not a JWK`);
  const jwk = value as JsonWebKey & { kid?: unknown; alg?: unknown; use?: unknown };
  if (jwk.alg !== undefined && jwk.alg !== algorithm) throw new KeyFileError(`${what}: alg is "${String(jwk.alg)}" but identityToken.algorithm is ${algorithm}`);
  if (jwk.use !== undefined && jwk.use !== 'sig') throw new KeyFileError(`${what}: use is not "sig"`);
  if (jwk.kid !== undefined && (typeof jwk.kid !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(jwk.kid))) throw new KeyFileError(`${what}: kid must be 1-128 printable characters`);
  let key: KeyObject;
  const isPrivate = typeof jwk.d === 'string';
  try {
    key = isPrivate ? createPrivateKey({ key: jwk, format: 'jwk' }) : createPublicKey({ key: jwk, format: 'jwk' });
  } catch {
    throw new KeyFileError(`${what} is not a valid JWK`);
  }
  return finish(key, isPrivate, jwk.kid as string | undefined, what, algorithm);
}

function finish(key: KeyObject, isPrivate: boolean, kid: string | undefined, what: string, algorithm: IdentityTokenAlgorithm): SigningKey {
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const fits = algorithm === 'ES256' ? type === 'ec' && curve === 'prime256v1' : type === 'ed25519';
  if (!fits) throw new KeyFileError(`${what}: ${algorithm} needs ${algorithm === 'ES256' ? 'an EC P-256' : 'an Ed25519'} key (found ${type}${curve ? ` ${curve}` : ''})`);
  const publicKey = isPrivate ? createPublicKey(key) : key;
  const exported = publicKey.export({ format: 'jwk' }) as Record<string, string>;
  // Public members only, whatever the file held.
  const members: Record<string, string> = type === 'ec' ? { crv: exported.crv!, kty: exported.kty!, x: exported.x!, y: exported.y! } : { crv: exported.crv!, kty: exported.kty!, x: exported.x! };
  const id = kid ?? thumbprint(members);
  return Object.freeze({
    kid: id,
    privateKey: isPrivate ? key : undefined,
    publicJwk: Object.freeze({ ...members, kid: id, alg: algorithm, use: 'sig' }),
  });
}

/** RFC 7638 JWK thumbprint (SHA-256): the required members in lexicographic order, no spaces. */
function thumbprint(members: Record<string, string>): string {
  const canonical = JSON.stringify(Object.fromEntries(Object.keys(members).sort().map((k) => [k, members[k]])));
  return createHash('sha256').update(canonical).digest('base64url');
}

export interface KeyringOptions {
  readonly files: readonly string[];
  readonly algorithm: IdentityTokenAlgorithm;
  readonly logger: Logger;
  /** How often the files are re-read (ms); 0 = only on policy reload and reload(). */
  readonly reloadIntervalMs: number;
  readonly metrics?: Metrics;
}

/**
 * The live key set. Created once per (files, algorithm) and kept across policy reloads (the
 * runtime's resource pool); the first load throws, later ones keep the last good set.
 */
export class SigningKeyring {
  private set: KeySet;
  private timer: NodeJS.Timeout | undefined;
  private lastProblem: string | undefined;
  /** Bumped whenever the set changes, so issued tokens know to be re-signed. */
  generation = 0;
  private readonly listeners = new Set<(set: KeySet) => void>();

  private readonly reloads: { inc(labels: { result: 'changed' | 'failed' }): void } | undefined;

  constructor(private readonly options: KeyringOptions) {
    this.set = loadKeySet(options.files, options.algorithm);
    this.reloads = options.metrics?.counter('portcullis_identity_key_reloads_total', 'Re-reads of the identity token key files that changed the keys, or failed (the last good keys were kept).', ['result']);
    if (options.reloadIntervalMs > 0) {
      this.timer = setInterval(() => this.reload(), options.reloadIntervalMs);
      this.timer.unref();
    }
  }

  get current(): KeySet {
    return this.set;
  }

  /** Re-read the files. True when the set changed; a bad file keeps the last good set (logged once per problem). */
  reload(): boolean {
    let next: KeySet;
    try {
      next = loadKeySet(this.options.files, this.options.algorithm);
    } catch (err) {
      const message = (err as Error).message;
      this.reloads?.inc({ result: 'failed' });
      if (message !== this.lastProblem) this.options.logger.warn({ err: message }, 'identity token keys: reload failed; keeping the last good keys');
      this.lastProblem = message;
      return false;
    }
    this.lastProblem = undefined;
    if (next.fingerprint === this.set.fingerprint) return false;
    this.set = next;
    this.generation++;
    this.reloads?.inc({ result: 'changed' });
    for (const listener of this.listeners) listener(next);
    this.options.logger.info({ kids: next.keys.map((k) => k.kid), signer: next.signer.kid }, 'identity token keys reloaded');
    return true;
  }

  /** Told after every change of the key set; returns the unsubscribe function. */
  onChange(listener: (set: KeySet) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.listeners.clear();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** Key files are relative to the policy file's folder. */
export function resolveKeyFile(policyFile: string, file: string): string {
  return path.resolve(path.dirname(policyFile), file);
}
