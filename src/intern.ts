// One shared copy of the identity values that repeat across many cached callers: every token of a
// tenant carries the same tenant string and usually the same scope list, and every key row read
// from PostgreSQL arrives with fresh copies of both. With 100k cached tokens and keys, sharing
// them is worth tens of megabytes. Bounded: when a table fills up it starts over, so a spray of
// distinct values costs at most one table's worth of memory and never changes an answer.

const MAX_VALUES = 4096;

export class Interner {
  private strings = new Map<string, string>();
  private scopeLists = new Map<string, readonly string[]>();

  string(value: string): string;
  string(value: string | undefined): string | undefined;
  string(value: string | undefined): string | undefined {
    if (value === undefined) return undefined;
    const known = this.strings.get(value);
    if (known !== undefined) return known;
    if (this.strings.size >= MAX_VALUES) this.strings = new Map();
    this.strings.set(value, value);
    return value;
  }

  /** A frozen list equal to `scopes`, shared with every earlier equal list. */
  scopes(scopes: readonly string[]): readonly string[] {
    if (scopes.length === 0) return NO_SCOPES;
    // Scope tokens never contain spaces (they travel space-separated in x-auth-scopes).
    const key = scopes.length === 1 ? scopes[0]! : scopes.join(' ');
    const known = this.scopeLists.get(key);
    if (known !== undefined && sameList(known, scopes)) return known;
    if (this.scopeLists.size >= MAX_VALUES) this.scopeLists = new Map();
    const shared = Object.freeze(scopes.map((s) => this.string(s)));
    this.scopeLists.set(key, shared);
    return shared;
  }

  /** The list scopesText() made a text of, shared as scopes() shares it. */
  scopesFromText(text: string | undefined): readonly string[] {
    return text === undefined ? NO_SCOPES : this.scopes(text.split(' '));
  }
}

/**
 * A scope list as one text for a cache slot: space-joined, undefined for none, null when a scope
 * holds a space (it would not split back the same).
 */
export function scopesText(scopes: readonly string[]): string | undefined | null {
  if (scopes.length === 0) return undefined;
  for (const scope of scopes) if (scope.includes(' ')) return null;
  return scopes.join(' ');
}

const NO_SCOPES: readonly string[] = Object.freeze([]);

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
