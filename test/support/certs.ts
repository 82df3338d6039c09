// X.509 certificates made in the test with the openssl CLI (node:crypto cannot issue certificates):
// CAs, a server certificate for localhost/127.0.0.1, client certificates valid or expired. In CI
// (CI set) a missing openssl is a FAILURE, as an unreachable Redis or PostgreSQL is
// (services.ts); on a developer machine without it the suites skip with a clear message.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Whether `openssl version` runs (looked up on env.PATH). */
export function opensslInstalled(env: NodeJS.ProcessEnv = process.env): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore', env });
    return true;
  } catch {
    return false;
  }
}

/**
 * True when the openssl CLI is there. When it is not: throws in CI, so the suite fails; elsewhere
 * prints why `what` is skipped and returns false (use with describe.skipIf).
 */
export function requireOpenssl(what: string, env: NodeJS.ProcessEnv = process.env): boolean {
  if (opensslInstalled(env)) return true;
  const message = 'the openssl CLI is not installed or not on PATH (apt-get install openssl); the tests make their certificates with it';
  if (env.CI) throw new Error(`${message}: ${what} need it in CI`);
  console.warn(`SKIPPING ${what}: ${message} (set CI=true to make this a failure)`);
  return false;
}

export interface Issued {
  cert: string; // file paths
  key: string;
  certPem: Buffer;
  keyPem: Buffer;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

export class TestPki {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  private issued(name: string): Issued {
    const cert = path.join(this.dir, `${name}.crt`);
    const key = path.join(this.dir, `${name}.key`);
    return { cert, key, certPem: readFileSync(cert), keyPem: readFileSync(key) };
  }

  ca(name: string): Issued {
    openssl(['req', '-x509', ...EC, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`], this.dir);
    return this.issued(name);
  }

  /** A leaf signed by `ca`; `san` for servers (e.g. DNS:localhost,IP:127.0.0.1). */
  leaf(name: string, ca: Issued, san?: string): Issued {
    const args = ['req', '-x509', ...EC, '-CA', ca.cert, '-CAkey', ca.key, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`];
    if (san) args.push('-addext', `subjectAltName=${san}`);
    openssl(args, this.dir);
    return this.issued(name);
  }

  /** A leaf signed by `ca` whose validity ended in 2020. */
  expiredLeaf(name: string, ca: Issued): Issued {
    const work = path.join(this.dir, `${name}-ca`);
    mkdirSync(work, { recursive: true });
    writeFileSync(path.join(work, 'index.txt'), '');
    writeFileSync(path.join(work, 'serial'), '01\n');
    writeFileSync(
      path.join(work, 'ca.cnf'),
      `[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n`,
    );
    openssl(['req', '-new', ...EC, '-keyout', path.join(this.dir, `${name}.key`), '-out', `${name}.csr`, '-subj', `/CN=${name}`], work);
    openssl(['ca', '-batch', '-config', 'ca.cnf', '-cert', ca.cert, '-keyfile', ca.key, '-in', `${name}.csr`, '-out', path.join(this.dir, `${name}.crt`), '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext'], work);
    return this.issued(name);
  }
}
