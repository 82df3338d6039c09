// TLS and mTLS on the gRPC listener, with certificates made here by openssl: a grpc-js client over
// TLS, ALPN h2 and TLS 1.2+, client certificates (valid, none, expired, from another CA), and
// hot reload of a rotated certificate (and a broken rotation that keeps the old one). Without the
// openssl CLI the suite fails under CI and is skipped (with a message) elsewhere.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import https from 'node:https';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../src/observability/logger.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { opensslInstalled, requireOpenssl, TestPki, type Issued } from '../support/certs.js';
import { CheckClient } from '../support/grpc-client.js';

const hasOpenssl = requireOpenssl('TLS tests (test/transport/tls.test.ts)');

async function metric(server: RunningServer, name: string, labels: Record<string, string>): Promise<number> {
  const m = await server.runtime.metrics.registry.getSingleMetric(name)?.get();
  return m?.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value ?? 0;
}

async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`never happened: ${what}`);
}

/** One Check over a fresh channel: 'ok' or the gRPC error code. */
async function checkWith(port: number, credentials: grpc.ChannelCredentials): Promise<'ok' | number> {
  const client = new CheckClient(port, credentials);
  try {
    const response = await client.check({ path: '/health' });
    return response.http_response === 'ok_response' ? 'ok' : -1;
  } catch (err) {
    return (err as grpc.ServiceError).code;
  } finally {
    client.close();
  }
}

describe.skipIf(!hasOpenssl)('TLS on the gRPC listener', () => {
  let dir: string;
  let pki: TestPki;
  let ca: Issued;
  let otherCa: Issued;
  let serverCert: Issued;
  let tlsServer: RunningServer;
  let mtlsServer: RunningServer;
  let liveDir: string;

  const policy = (tlsBlock: string) => `
server:
  tls: ${tlsBlock}
  authzHttp: { port: 0, shape: forward-auth }
routes:
  - { name: health, match: { path: /health }, public: true }
`;

  async function serve(tlsBlock: string): Promise<RunningServer> {
    const file = path.join(mkdtempSync(path.join(dir, 'policy-')), 'policy.yaml');
    writeFileSync(file, policy(tlsBlock));
    const server = await startServer({ configFile: file, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', watch: false, logger: silentLogger(), defaultMetrics: false });
    await server.ready;
    return server;
  }

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'portcullis-tls-'));
    pki = new TestPki(path.join(dir, 'pki'));
    ca = pki.ca('ca');
    otherCa = pki.ca('other-ca');
    serverCert = pki.leaf('server', ca, 'DNS:localhost,IP:127.0.0.1');
    // The certificate files as a mounted Secret: a directory whose files are replaced on rotation.
    liveDir = mkdtempSync(path.join(dir, 'secret-'));
    writeFileSync(path.join(liveDir, 'tls.crt'), serverCert.certPem);
    writeFileSync(path.join(liveDir, 'tls.key'), serverCert.keyPem);
    writeFileSync(path.join(liveDir, 'ca.crt'), ca.certPem);
    tlsServer = await serve(`{ certFile: "${liveDir}/tls.crt", keyFile: "${liveDir}/tls.key", reloadInterval: 200ms }`);
    mtlsServer = await serve(`{ certFile: "${serverCert.cert}", keyFile: "${serverCert.key}", clientCaFile: "${liveDir}/ca.crt" }`);
  });

  afterAll(async () => {
    await tlsServer?.shutdown();
    await mtlsServer?.shutdown();
  });

  it('answers checks over TLS to a client that trusts its CA, and refuses plaintext', async () => {
    expect(await checkWith(tlsServer.grpcPort, grpc.credentials.createSsl(ca.certPem))).toBe('ok');
    expect(await checkWith(tlsServer.grpcPort, grpc.credentials.createInsecure())).toBe(grpc.status.UNAVAILABLE);
    expect(await checkWith(tlsServer.grpcPort, grpc.credentials.createSsl(otherCa.certPem))).toBe(grpc.status.UNAVAILABLE);
  });

  it('negotiates h2 by ALPN and TLS 1.2 or later; refuses TLS 1.1', async () => {
    const socket = tls.connect({ host: '127.0.0.1', port: tlsServer.grpcPort, ca: ca.certPem, ALPNProtocols: ['h2'] });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    expect(socket.alpnProtocol).toBe('h2');
    expect(['TLSv1.2', 'TLSv1.3']).toContain(socket.getProtocol());
    socket.destroy();
    const old = tls.connect({ host: '127.0.0.1', port: tlsServer.grpcPort, ca: ca.certPem, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' });
    await expect(new Promise((resolve, reject) => old.once('secureConnect', resolve).once('error', reject))).rejects.toThrow();
    old.destroy();
  });

  it('the HTTP authorization listener serves HTTPS with the same certificate and client CA (ALPN http/1.1)', async () => {
    // One forward-auth request over HTTPS: 200 for the public route, or the TLS error's code.
    const ask = (port: number, tlsOptions: https.RequestOptions) =>
      new Promise<number | string>((resolve) => {
        const req = https.request(
          { host: '127.0.0.1', port, path: '/', method: 'GET', servername: 'localhost', ...tlsOptions, headers: { 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/health', 'x-forwarded-host': 'api.example.com', 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.7' } },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        req.end();
      });
    const plainPort = tlsServer.authzHttpPort!;
    expect(await ask(plainPort, { ca: ca.certPem })).toBe(200);
    expect(await ask(plainPort, { ca: otherCa.certPem })).not.toBe(200);
    const socket = tls.connect({ host: '127.0.0.1', port: plainPort, ca: ca.certPem, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    expect(socket.alpnProtocol).toBe('http/1.1');
    socket.destroy();
    // mTLS: the client CA applies to this listener too.
    const client = pki.leaf('http-client', ca);
    const mtlsPort = mtlsServer.authzHttpPort!;
    expect(await ask(mtlsPort, { ca: ca.certPem, key: client.keyPem, cert: client.certPem })).toBe(200);
    expect(await ask(mtlsPort, { ca: ca.certPem })).not.toBe(200);
  });

  it('mTLS: a client certificate from the CA is accepted; none, expired or from another CA is refused at the handshake', async () => {
    const client = pki.leaf('client', ca);
    const expired = pki.expiredLeaf('expired-client', ca);
    const stranger = pki.leaf('stranger', otherCa);
    const before = await metric(mtlsServer, 'portcullis_tls_handshake_failures_total', { listener: 'grpc' });
    expect(await checkWith(mtlsServer.grpcPort, grpc.credentials.createSsl(ca.certPem, client.keyPem, client.certPem))).toBe('ok');
    expect(await checkWith(mtlsServer.grpcPort, grpc.credentials.createSsl(ca.certPem))).toBe(grpc.status.UNAVAILABLE);
    expect(await checkWith(mtlsServer.grpcPort, grpc.credentials.createSsl(ca.certPem, expired.keyPem, expired.certPem))).toBe(grpc.status.UNAVAILABLE);
    expect(await checkWith(mtlsServer.grpcPort, grpc.credentials.createSsl(ca.certPem, stranger.keyPem, stranger.certPem))).toBe(grpc.status.UNAVAILABLE);
    await until(async () => (await metric(mtlsServer, 'portcullis_tls_handshake_failures_total', { listener: 'grpc' })) - before >= 3, 'three handshake failures counted');
  });

  it('a half-written or empty client CA file is not used: the previous CA keeps accepting its clients (attacker review)', async () => {
    const caDir = mkdtempSync(path.join(dir, 'ca-secret-'));
    writeFileSync(path.join(caDir, 'ca.crt'), ca.certPem);
    const server = await serve(`{ certFile: "${serverCert.cert}", keyFile: "${serverCert.key}", clientCaFile: "${caDir}/ca.crt", reloadInterval: 200ms }`);
    try {
      const client = pki.leaf('ca-reload-client', ca);
      const creds = () => grpc.credentials.createSsl(ca.certPem, client.keyPem, client.certPem);
      expect(await checkWith(server.grpcPort, creds())).toBe('ok');
      let failures = await metric(server, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'failure' });
      for (const broken of [ca.certPem.subarray(0, 100), Buffer.alloc(0), Buffer.from('not a certificate\n')]) {
        replace(path.join(caDir, 'ca.crt'), broken);
        await until(async () => (await metric(server, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'failure' })) > failures, 'broken CA noticed');
        failures = await metric(server, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'failure' });
        expect(await checkWith(server.grpcPort, creds())).toBe('ok');
      }
      expect(await metric(server, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'success' })).toBe(0);
      // And a bundle of two CAs (text between them allowed) is taken.
      replace(path.join(caDir, 'ca.crt'), Buffer.concat([otherCa.certPem, Buffer.from('subject=other\n'), ca.certPem]));
      await until(async () => (await metric(server, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'success' })) >= 1, 'bundle taken');
      expect(await checkWith(server.grpcPort, creds())).toBe('ok');
      // OpenSSL's TRUSTED CERTIFICATE form (RHEL's ca-bundle.trust.crt) is a certificate too (review).
      const trusted = spawnSync('openssl', ['x509', '-in', ca.cert, '-trustout'], { encoding: 'buffer' }).stdout;
      expect(trusted.toString()).toContain('BEGIN TRUSTED CERTIFICATE');
      replace(path.join(caDir, 'ca.crt'), trusted);
      await until(async () => (await metric(server, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'success' })) >= 2, 'trusted form taken');
      expect(await checkWith(server.grpcPort, creds())).toBe('ok');
    } finally {
      await server.shutdown();
    }
  });

  it('refuses to start with a key that does not match the certificate, or a missing file (TLS_INVALID)', async () => {
    for (const block of [`{ certFile: "${serverCert.cert}", keyFile: "${otherCa.key}" }`, `{ certFile: "${dir}/nope.crt", keyFile: "${serverCert.key}" }`]) {
      const file = path.join(mkdtempSync(path.join(dir, 'policy-')), 'policy.yaml');
      writeFileSync(file, policy(block));
      await expect(startServer({ configFile: file, grpcPort: 0, httpPort: 0, bind: '127.0.0.1', watch: false, logger: silentLogger(), defaultMetrics: false })).rejects.toMatchObject({ code: 'TLS_INVALID' });
    }
  });

  it('rotation: new certificate files are used without a restart; a broken rotation keeps the previous certificate, counted once', async () => {
    const rotatedCa = pki.ca('rotated-ca');
    const rotated = pki.leaf('rotated', rotatedCa, 'DNS:localhost,IP:127.0.0.1');
    const trustsRotated = grpc.credentials.createSsl(rotatedCa.certPem);
    expect(await checkWith(tlsServer.grpcPort, trustsRotated)).toBe(grpc.status.UNAVAILABLE);

    // Broken first: a certificate whose key is not the one beside it.
    const failuresBefore = await metric(tlsServer, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'failure' });
    replace(path.join(liveDir, 'tls.crt'), rotated.certPem);
    await until(async () => (await metric(tlsServer, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'failure' })) > failuresBefore, 'broken rotation noticed');
    expect(await checkWith(tlsServer.grpcPort, grpc.credentials.createSsl(ca.certPem))).toBe('ok');
    await new Promise((r) => setTimeout(r, 500)); // several polls over the same broken files
    expect(await metric(tlsServer, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'failure' })).toBe(failuresBefore + 1);

    // Then the matching key arrives.
    replace(path.join(liveDir, 'tls.key'), rotated.keyPem);
    await until(async () => (await metric(tlsServer, 'portcullis_tls_reloads_total', { listener: 'grpc', result: 'success' })) >= 1, 'rotation noticed');
    expect(await checkWith(tlsServer.grpcPort, trustsRotated)).toBe('ok');
    expect(await checkWith(tlsServer.grpcPort, grpc.credentials.createSsl(ca.certPem))).toBe(grpc.status.UNAVAILABLE);
  });
});

/** Replace a file atomically (as a Secret update does), never half-written. */
function replace(file: string, content: Buffer): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, content);
  renameSync(tmp, file);
}

describe('openssl for the test certificates: missing is a failure in CI, a skip elsewhere', () => {
  const noOpenssl = mkdtempSync(path.join(tmpdir(), 'portcullis-no-openssl-'));
  afterAll(() => rmSync(noOpenssl, { recursive: true, force: true }));
  const envWithout = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({ ...process.env, CI: '', PATH: noOpenssl, ...extra });

  it('throws under CI when openssl is not on PATH', () => {
    expect(opensslInstalled(envWithout())).toBe(false);
    expect(() => requireOpenssl('TLS tests', envWithout({ CI: 'true' }))).toThrow(/openssl CLI is not installed.*TLS tests need it in CI/);
  });

  it('skips with a message outside CI', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      expect(requireOpenssl('TLS tests', envWithout())).toBe(false);
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/^SKIPPING TLS tests: the openssl CLI is not installed.*set CI=true/));
    } finally {
      warn.mockRestore();
    }
  });
});
