// What a lookup target (http.ts, sql.ts) does: one question about one credential, one answer.
// Caching, single-flight, fairness, the breaker and the timeout live in cached-lookup.ts.

export type TargetAnswer = { readonly found: true; readonly value: unknown } | { readonly found: false };

export const NOT_FOUND: TargetAnswer = Object.freeze({ found: false });

export interface LookupTarget {
  readonly kind: 'http' | 'sql';
  /**
   * Ask the target about `credential`. Rejects with a LookupError when the target cannot answer
   * (down, 5xx, bad JSON, too large, aborted); never logs the credential.
   */
  query(credential: string, signal: AbortSignal): Promise<TargetAnswer>;
  close(): Promise<void>;
}

/** The target could not answer. `detail` never contains the credential or a URL carrying it. */
export class LookupError extends Error {
  constructor(
    readonly detail: string,
    readonly kind: 'error' | 'timeout' = 'error',
  ) {
    super(detail);
    this.name = 'LookupError';
  }
}

/** A template with `{{credential}}` placeholders, split once at compile time. */
export class Template {
  private readonly parts: readonly string[];
  constructor(readonly text: string) {
    this.parts = text.split('{{credential}}');
  }
  /** Placeholders other than {{credential}}, for policy errors. */
  static unknownPlaceholders(text: string): string[] {
    return [...text.matchAll(/\{\{\s*([^}]*?)\s*\}\}/g)].map((m) => m[1]!).filter((name) => name !== 'credential');
  }
  get usesCredential(): boolean {
    return this.parts.length > 1;
  }
  render(credential: string, encode: (s: string) => string = (s) => s): string {
    if (this.parts.length === 1) return this.parts[0]!;
    return this.parts.join(encode(credential));
  }
}
