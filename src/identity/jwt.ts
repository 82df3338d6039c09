// PLACEHOLDER until the JWT issue lands (owned by the JWT work).
import type { JwtSourceConfig } from '../jwt/config.js';
import type { CompileContext, PolicyPath } from '../policy/context.js';
import type { CredentialSource } from './source.js';

export function compileJwtSource(_config: JwtSourceConfig, path: PolicyPath, ctx: CompileContext): CredentialSource | undefined {
  ctx.error(path, 'JWT sources are not implemented yet');
  return undefined;
}
