import type { Runtime } from '../runtime.js';
import type { PolicyDocument } from './schema.js';

export type PolicyPath = readonly (string | number)[];

/**
 * Handed to every module that compiles a part of the policy. Compilation happens once per load;
 * nothing here is touched per request.
 */
export interface CompileContext {
  readonly runtime: Runtime;
  /** The whole validated document (read-only), for cross-references such as issuer names. */
  readonly policy: PolicyDocument;
  /** Path of the policy file, for messages. */
  readonly file: string;
  /** Report a semantic problem at a document path; the compile fails with every problem found. */
  error(path: PolicyPath, message: string): void;
  /** Something odd but allowed; logged at warn on load and printed by `validate`. */
  warn(path: PolicyPath, message: string): void;
  /** Readiness (gRPC health, /readyz) waits for this, e.g. the first JWKS fetch. */
  waitFor(what: string, ready: Promise<void>): void;
}
