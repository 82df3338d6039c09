// API keys in a request header (seed 002: x-api-key) or as `Authorization: Bearer <key>` when the
// token carries a configured key prefix (seed 003). Order of checks, cheapest first:
//   1. find the key: none → NOT_PRESENT (the next source in the chain decides); the same header
//      twice (Envoy joins them with ","), or two different keys → malformed_credential;
//   2. offline shape check (Portcullis checksum, or a declared imported format) → invalid_api_key
//      without touching the store;
//   3. the verifier: cached answers are synchronous, only a store miss returns a promise; the
//      client IP (for fair lookup shares and bcrypt budgets) is resolved only on a miss.
// The key is removed from the upstream request unless `forward: true`; the key id goes upstream
// as x-auth-key-id (principal.keyId), never the key.

import { PortcullisError } from '../errors.js';
import { effectiveKeyStoreConfig, storeLocation } from '../keys/settings.js';
import type { ApiKeySourceConfig } from '../keys/config.js';
import { fairnessClient } from '../keys/fair-lookups.js';
import { isPlausibleKey, type ShapeRules } from '../keys/format.js';
import { acquireVerifier } from '../keys/open.js';
import type { ClientOf, KeyCheck, KeyVerifier } from '../keys/verifier.js';
import { clientIp } from '../pipeline/client-ip.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import { isPromise, type RequestAttributes } from '../types.js';
import { findApiKey, keyRemoval, newFoundKey } from './api-key-carrier.js';
import { compileExternalKeySource } from './api-key-external.js';
import { NOT_PRESENT, rejected, type CredentialSource, type IdentifyResult, type Identified } from './source.js';

const MALFORMED = rejected({ reason: 'malformed_credential', credentialPresented: true, detail: 'more than one API key, or an empty one' });
const BAD_SHAPE = rejected({ reason: 'invalid_api_key', credentialPresented: true, detail: 'key fails its checksum or format' });
const UNKNOWN = rejected({ reason: 'invalid_api_key', credentialPresented: true, detail: 'unknown key' });
const REVOKED = rejected({ reason: 'key_revoked', credentialPresented: true });
const EXPIRED = rejected({ reason: 'key_expired', credentialPresented: true });
const LIMITED = rejected({ reason: 'key_lookup_limited', credentialPresented: true, retryAfter: 1, detail: 'over this client\'s share of key lookups, or failed bcrypt comparisons over budget' });
const OFFLINE = rejected({ reason: 'store_unavailable', credentialPresented: true, retryAfter: 1, detail: 'key store not opened (offline runtime)' });


export function compileApiKeySource(config: ApiKeySourceConfig, path: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  if (config.external) return compileExternalKeySource(config, path, ctx);
  const storeConfig = effectiveKeyStoreConfig(ctx.policy.keyStore);
  checkPrefixes(config, path, ctx);

  let verifier: KeyVerifier | undefined;
  try {
    if (ctx.runtime.offline) {
      storeLocation(storeConfig, ctx.file, ctx.runtime.env); // validate only: connect to nothing
    } else {
      const acquired = acquireVerifier(ctx.runtime, storeConfig, ctx.file);
      verifier = acquired.verifier;
      if (acquired.ready) ctx.waitFor('API key store', acquired.ready);
    }
  } catch (err) {
    if (!(err instanceof PortcullisError)) throw err;
    ctx.error(ctx.policy.keyStore ? ['keyStore'] : path, err.message);
    return undefined;
  }

  const headers = Object.freeze([...config.headers]);
  const bearerPrefixes = Object.freeze([...config.bearerPrefixes]);
  const rules: ShapeRules = { prefixes: config.prefixes, importedFormats: config.importedFormats };
  const removal = keyRemoval(headers, bearerPrefixes, config.forward);
  const carried = newFoundKey();
  const subject = config.subject;
  // Lookup shares and bcrypt budgets count per client IP; resolved only when the store is asked.
  const ipSettings = ctx.policy.clientIp;
  const clientOf: ClientOf<RequestAttributes> = (request) => fairnessClient(clientIp(request, ipSettings));

  function toResult(check: KeyCheck, removeHeaders: readonly string[] | undefined): IdentifyResult {
    if (check.ok) {
      const identified: Identified = { kind: 'principal', principal: check.record.principal(subject), removeHeaders };
      return identified;
    }
    switch (check.reason) {
      case 'invalid_api_key':
        return UNKNOWN;
      case 'key_revoked':
        return REVOKED;
      case 'key_expired':
        return EXPIRED;
      case 'store_unavailable':
        return verifier ? rejected({ reason: 'store_unavailable', credentialPresented: true, retryAfter: 1, detail: check.detail }) : OFFLINE;
      case 'key_lookup_limited':
        return LIMITED;
    }
  }

  return {
    method: 'api-key',
    name: `api-key:${[...headers, ...(bearerPrefixes.length > 0 ? ['bearer'] : [])].join(',')}`,
    stripHeaders: removal.stripHeaders,
    forwardHeaders: removal.forwardHeaders,
    carrier: removal.carrier,
    identify(request: RequestAttributes) {
      const found = findApiKey(request, headers, bearerPrefixes, carried);
      if (found === 'malformed') return MALFORMED;
      if (found === 'none') return NOT_PRESENT;
      const key = carried.key;
      if (!isPlausibleKey(key, rules)) return BAD_SHAPE;

      const removeHeaders = removal.removeFor(carried);
      const check = verifier ? verifier.check(key, request, clientOf) : undefined;
      if (check === undefined) return OFFLINE;
      if (isPromise(check)) return check.then((resolved) => toResult(resolved, removeHeaders));
      return toResult(check, removeHeaders);
    },
  };
}


function checkPrefixes(config: ApiKeySourceConfig, path: PolicyPath, ctx: CompileContext): void {
  if (config.prefixes === undefined) return;
  config.bearerPrefixes.forEach((prefix, i) => {
    if (!config.prefixes!.some((p) => prefix.startsWith(p))) {
      ctx.error([...path, 'bearerPrefixes', i], `"${prefix}" is not allowed by prefixes: keys sent this way would always be refused`);
    }
  });
  config.importedFormats.forEach((format, i) => {
    if (!config.prefixes!.some((p) => format.prefix.startsWith(p))) {
      ctx.warn([...path, 'importedFormats', i], `prefix "${format.prefix}" is not allowed by prefixes: such keys are refused`);
    }
  });
}
