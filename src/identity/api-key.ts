// PLACEHOLDER until the API-key issue lands (owned by the API-key work).
import type { ApiKeySourceConfig } from '../keys/config.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { CredentialSource } from './source.js';

export function compileApiKeySource(_config: ApiKeySourceConfig, path: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  ctx.error(path, 'API key sources are not implemented yet');
  return undefined;
}
