import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { IdentitySourceConfig } from '../policy/schema.js';
import { compileApiKeySource } from './api-key.js';
import { withComputedIdentity } from './computed.js';
import { compileHostSource } from './host.js';
import { compileIntrospectionSource } from './introspection.js';
import { compileJwtSource } from './jwt.js';
import { compileSessionSource } from './session.js';
import { compilePeerSource } from './peer.js';
import { compileSharedSecretSource } from './shared-secret.js';
import type { CredentialSource } from './source.js';

/** Compile one caller-resolution chain (top-level `identity` or a route's own). */
export function compileChain(entries: readonly IdentitySourceConfig[], path: PolicyPath, ctx: CompileContext): CredentialSource[] {
  const chain: CredentialSource[] = [];
  entries.forEach((entry, i) => {
    const at = [...path, i];
    const source = compileSource(entry, at, ctx);
    if (!source) return;
    if (entry.compute === undefined) chain.push(source);
    else {
      const computed = withComputedIdentity(source, entry.compute, [...at, 'compute'], ctx);
      if (computed) chain.push(computed);
    }
  });
  return chain;
}

function compileSource(entry: IdentitySourceConfig, at: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  if (entry.jwt) return compileJwtSource(entry.jwt, [...at, 'jwt'], ctx);
  if (entry.apiKey) return compileApiKeySource(entry.apiKey, [...at, 'apiKey'], ctx);
  if (entry.host) return compileHostSource(entry.host, [...at, 'host'], ctx);
  if (entry.sharedSecret) return compileSharedSecretSource(entry.sharedSecret);
  if (entry.session) return compileSessionSource(entry.session, [...at, 'session'], ctx);
  if (entry.introspection) return compileIntrospectionSource(entry.introspection, [...at, 'introspection'], ctx);
  if (entry.peer) return compilePeerSource(entry.peer, [...at, 'peer'], ctx);
  return undefined;
}
