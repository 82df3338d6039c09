// Errors Portcullis raises (as opposed to denials, which are values: see reasons.ts).
// Callers switch on `code`, never on messages.

export type ErrorCode =
  | 'POLICY_INVALID' // the policy file failed to parse, validate or compile
  | 'POLICY_IO' // the policy file could not be read
  | 'CONFIG_INVALID' // a CLI flag or environment setting is wrong
  | 'STORE_UNAVAILABLE' // a key or ban store could not be reached
  | 'STORE_CONFLICT' // a store operation conflicts with existing data
  | 'NOT_FOUND' // a key / ban named in a CLI command does not exist
  | 'INTERNAL';

export class PortcullisError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PortcullisError';
    this.code = code;
  }
}

/** One problem in a policy file, located as precisely as the parser allows. */
export interface PolicyIssue {
  readonly file: string;
  /** 1-based line and column of the offending node, when known. */
  readonly line?: number;
  readonly column?: number;
  /** Path of the offending key inside the document, e.g. ["routes", 2, "require", "allOf"]. */
  readonly path: readonly (string | number)[];
  readonly message: string;
}

export function formatPolicyIssue(issue: PolicyIssue): string {
  const where = issue.line !== undefined ? `${issue.file}:${issue.line}:${issue.column ?? 1}` : issue.file;
  const path = issue.path.length > 0 ? ` ${formatPath(issue.path)}:` : '';
  return `${where}:${path} ${issue.message}`;
}

export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out === '' ? part : `.${part}`;
  return out;
}

export class PolicyError extends PortcullisError {
  readonly issues: readonly PolicyIssue[];
  /** What of the document can still be compiled (policy/load.ts PartialPolicy), for reporting every problem at once. */
  readonly partial?: unknown;
  constructor(issues: readonly PolicyIssue[], partial?: unknown) {
    super('POLICY_INVALID', issues.map(formatPolicyIssue).join('\n'));
    this.name = 'PolicyError';
    this.issues = issues;
    this.partial = partial;
  }
}
