// A shared secret in a request header (seed 002: payment webhooks forwarded by the checkout app).
// Compared in constant time: both sides are hashed first so neither length nor content leaks.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { SharedSecretSourceConfig } from '../policy/schema.js';
import type { Principal, RequestAttributes } from '../types.js';
import { NOT_PRESENT, rejected, type CredentialSource, type IdentifyResult } from './source.js';

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

export function compileSharedSecretSource(config: SharedSecretSourceConfig): CredentialSource {
  const expected = digest(config.secret);
  const principal: Principal = Object.freeze({
    method: 'shared-secret',
    tenant: config.tenant,
    subject: config.subject,
    scopes: Object.freeze([...config.scopes]),
  });
  const removeHeaders = config.removeHeader ? Object.freeze([config.header]) : undefined;
  const accepted: IdentifyResult = Object.freeze({ kind: 'principal', principal, removeHeaders });
  const refused: IdentifyResult = rejected({ reason: 'invalid_shared_secret', credentialPresented: true });

  return {
    method: 'shared-secret',
    name: `shared-secret:${config.header}`,
    stripHeaders: removeHeaders,
    forwardHeaders: config.removeHeader ? undefined : Object.freeze([config.header]),
    identify(request: RequestAttributes): IdentifyResult {
      const presented = request.headers.get(config.header);
      if (presented === undefined) return NOT_PRESENT;
      return timingSafeEqual(digest(presented), expected) ? accepted : refused;
    },
  };
}
