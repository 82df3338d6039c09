// TLS and mTLS on the gRPC listener, with certificates made here by openssl: a grpc-js client over
// TLS, ALPN h2 and TLS 1.2+, client certificates (valid, none, expired, from another CA), and
// hot reload of a rotated certificate (and a broken rotation that keeps the old one).

import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { opensslInstalled, TestPki, type Issued } from '../support/certs.js';
import { CheckClient } from '../support/grpc-client.js';

const hasOpenssl = opensslInstalled();

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
