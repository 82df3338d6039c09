// Worker thread of signTokenPool (fixtures.mjs): signs tokens from..to-1 and posts them back.

import { parentPort, workerData } from 'node:worker_threads';
import { SignJWT, importPKCS8 } from 'jose';
import { tokenClaims } from './fixtures.mjs';

const { pkcs8, kid, issuer, audience, from, to } = workerData;
const key = await importPKCS8(pkcs8, 'RS256');
const now = Math.floor(Date.now() / 1000);
const tokens = [];
for (let n = from; n < to; n++) {
  tokens.push(
    await new SignJWT(tokenClaims(n))
      .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
      .setIssuer(issuer)
      .setAudience(audience)
      .setIssuedAt(now)
      .setExpirationTime(now + 2 * 3600)
      .sign(key),
  );
}
parentPort.postMessage(tokens);
