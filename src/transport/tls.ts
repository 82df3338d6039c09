// TLS for the authorization listeners (gRPC today; the HTTP authorization listener takes the same
// piece): certificate and key files, an optional CA bundle that client certificates must chain to
// (mTLS), TLS 1.2 or later, and hot reload when the files change — Kubernetes updates a mounted
// Secret by swapping a symlink in its directory, so the directories are watched (plus a slow poll
// as a backstop for volumes without inotify). A new certificate is validated before it is used;
// a broken one (a key that does not match, half-written files) keeps the one in force and is
// logged and counted once per distinct content.

import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import type { Clock } from '../clock.js';
import { PortcullisError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { ThrottledLog } from '../observability/throttled-log.js';

export interface TlsSettings {
  /** PEM certificate chain presented by Portcullis (tls.crt of a Kubernetes TLS Secret). */
  certFile: string;
  /** PEM private key (tls.key). */
  keyFile: string;
  /** PEM CA bundle: when set, clients must present a certificate that chains to it (mTLS). */
  clientCaFile?: string;
  /** Lowest protocol version accepted (default TLSv1.2). */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** Backstop poll of the files, ms (default 10 s); directory watches usually notice sooner. */
  reloadIntervalMs?: number;
}

/** What a secure context is built from: the files' bytes. */
interface Material {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  digest: string;
}

/** The options of a TLS server for `settings`, with `alpn` (['h2'] for gRPC). */
export function secureServerOptions(settings: TlsSettings, alpn: string[]): tls.TlsOptions {
  let material: Material;
  let context: tls.SecureContextOptions;
  try {
    material = readMaterial(settings);
    context = contextOptions(settings, material);
    if (material.ca !== undefined) checkCaBundle(material.ca, settings.clientCaFile!);
    tls.createSecureContext(context); // a key that does not match its certificate fails here, at start
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? `${(err as NodeJS.ErrnoException).path ?? 'a file'} does not exist` : (err as Error).message;
    throw new PortcullisError('TLS_INVALID', `TLS certificate files cannot be used (${settings.certFile}): ${reason}`, { cause: err });
  }
  return {
    ...context,
    ALPNProtocols: alpn,
    // mTLS: a client without a certificate, with an expired one or one from another CA never
    // finishes the handshake.
    requestCert: settings.clientCaFile !== undefined,
    rejectUnauthorized: settings.clientCaFile !== undefined,
  };
}

function contextOptions(settings: TlsSettings, material: Material): tls.SecureContextOptions {
  return {
    cert: material.cert,
    key: material.key,
    ca: material.ca,
    minVersion: settings.minVersion ?? 'TLSv1.2',
  };
}

function readMaterial(settings: TlsSettings): Material {
  const cert = readFileSync(settings.certFile);
  const key = readFileSync(settings.keyFile);
  const ca = settings.clientCaFile !== undefined ? readFileSync(settings.clientCaFile) : undefined;
  const digest = createHash('sha256').update(cert).update('\0').update(key).update('\0').update(ca ?? '').digest('hex');
  return { cert, key, ca, digest };
}

const PEM_CERTIFICATE = /-----BEGIN (TRUSTED |X509 )?CERTIFICATE-----[\s\S]*?-----END \1?CERTIFICATE-----/g;
const PEM_BEGIN = /-----BEGIN (?:TRUSTED |X509 )?CERTIFICATE-----/g;

/**
 * node:tls takes an empty, truncated or garbage CA bundle without a word, and then refuses every
 * client certificate: a half-written ca.crt (a Secret being updated) would lock out every mTLS
 * client (attacker review). The bundle must hold at least one PEM certificate (also TRUSTED or
 * X509 ones), every certificate it begins must end, and each plain one must parse. Text between
 * certificates, as some tools write, is allowed. A file cut exactly between two certificates
 * cannot be told from a shorter bundle.
 */
function checkCaBundle(ca: Buffer, file: string): void {
  const text = ca.toString('latin1');
  const blocks = text.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new Error(`${file}: no PEM certificate`);
  if ((text.match(PEM_BEGIN) ?? []).length !== blocks.length) throw new Error(`${file}: a certificate that does not end (half-written?)`);
  // Plain certificates must parse (a TRUSTED one carries OpenSSL trust data X509Certificate does not read).
  for (const block of blocks) if (block.startsWith('-----BEGIN CERTIFICATE-----')) new X509Certificate(block);
}

/** A server whose certificate can be replaced without a restart (tls.Server, http2 secure servers). */
export interface SecureContextTarget {
  setSecureContext(options: tls.SecureContextOptions): void;
}

/**
 * Watches the certificate, key and CA files and swaps the server's secure context when their
 * content changes. New connections get the new certificate; open ones keep theirs.
 */
export class TlsReloader {
  private current: string;
  private lastFailure: string | undefined;
  private readonly watchers: FSWatcher[] = [];
  private readonly poll: NodeJS.Timeout;
  private pending: NodeJS.Timeout | undefined;
  private readonly reloads;

  constructor(
    private readonly settings: TlsSettings,
    private readonly target: SecureContextTarget,
    private readonly logger: Logger,
    metrics: Metrics,
    private readonly listener: string,
  ) {
    this.current = readMaterial(settings).digest;
    const counter = metrics.counter('portcullis_tls_reloads_total', 'Certificate reloads of the TLS listeners, by result (success, failure: the previous certificate stays in force).', ['listener', 'result']);
    this.reloads = { success: counter.labels(listener, 'success'), failure: counter.labels(listener, 'failure') };
    const files = [settings.certFile, settings.keyFile, settings.clientCaFile].filter((f): f is string => f !== undefined);
    for (const dir of new Set(files.map((f) => path.dirname(path.resolve(f))))) {
      try {
        const watcher = watch(dir, { persistent: false }, () => this.soon());
        watcher.on('error', () => undefined); // the poll still runs
        this.watchers.push(watcher);
      } catch {
        // a directory that cannot be watched: the poll covers it
      }
    }
    this.poll = setInterval(() => this.check(), settings.reloadIntervalMs ?? 10_000);
    this.poll.unref();
  }

  /** Several events arrive for one Secret update (files and symlinks): check once, shortly after. */
  private soon(): void {
    if (this.pending !== undefined) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.check();
    }, 100);
    this.pending.unref();
  }

  /** Read the files; if they changed and make a valid context, use them. Never throws. */
  check(): boolean {
    let material: Material;
    try {
      material = readMaterial(this.settings);
    } catch (err) {
      this.failed('unknown', (err as NodeJS.ErrnoException).code ?? (err as Error).message);
      return false;
    }
    if (material.digest === this.current) return false;
    const options = contextOptions(this.settings, material);
    try {
      if (material.ca !== undefined) checkCaBundle(material.ca, this.settings.clientCaFile!);
      tls.createSecureContext(options); // a key that does not match the certificate throws here
      this.target.setSecureContext(options);
    } catch (err) {
      this.failed(material.digest, (err as Error).message);
      return false;
    }
    this.current = material.digest;
    this.lastFailure = undefined;
    this.reloads.success.inc();
    this.logger.info({ listener: this.listener, certFile: this.settings.certFile }, 'TLS certificate reloaded');
    return true;
  }

  /** Logged and counted once per distinct broken content, not per poll. */
  private failed(digest: string, reason: string): void {
    if (this.lastFailure === digest) return;
    this.lastFailure = digest;
    this.reloads.failure.inc();
    this.logger.warn({ listener: this.listener, certFile: this.settings.certFile, err: reason }, 'TLS certificate files changed but cannot be used; keeping the previous certificate');
  }

  close(): void {
    clearInterval(this.poll);
    if (this.pending !== undefined) clearTimeout(this.pending);
    for (const w of this.watchers) w.close();
  }
}

/**
 * Failed handshakes of `server` counted and logged (at most one line per interval), and its
 * certificate files watched: what both authorization listeners do once they serve TLS.
 */
export function watchSecureServer(
  server: SecureContextTarget & { on(event: 'tlsClientError', listener: (err: Error) => void): unknown },
  settings: TlsSettings,
  listener: 'grpc' | 'authz-http',
  deps: { readonly logger: Logger; readonly metrics: Metrics; readonly clock: Clock },
): TlsReloader {
  const failures = deps.metrics
    .counter('portcullis_tls_handshake_failures_total', 'TLS handshakes that failed (no, expired or untrusted client certificate, protocol or ALPN mismatch, timeout).', ['listener'])
    .labels(listener);
  const failureLog = new ThrottledLog({ logger: deps.logger, clock: deps.clock, level: 'info', message: `TLS handshakes failed on the ${listener} listener`, counter: failures });
  server.on('tlsClientError', (err: Error) => failureLog.note({ err: err.message }));
  return new TlsReloader(settings, server, deps.logger, deps.metrics, listener);
}
