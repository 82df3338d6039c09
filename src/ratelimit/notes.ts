// What an allowed check's rate limiting had to say, for the decision log (the note, free text with
// policy names) and for metrics (a label from a closed set: never built from the note's text, so
// two phases' notes cannot combine into a new label value).

/** portcullis_checks_total{decision="allow"} reasons. Add values, never rename them. */
export const ALLOW_LABELS = ['ok', 'ratelimit-fail-open', 'shadow'] as const;
export type AllowLabel = (typeof ALLOW_LABELS)[number];

/** The note of a check allowed because the backend could not answer and the policy fails open. */
export const FAIL_OPEN_NOTE = 'ratelimit-fail-open';
/** Notes of shadow policies that would have refused start with this. */
export const SHADOW_NOTE_PREFIX = 'shadow:';

/** The label of an allowed check with this note: fail-open outranks shadow outranks nothing. */
export function allowLabel(note: string | undefined): AllowLabel {
  if (!note) return 'ok';
  if (note.includes(FAIL_OPEN_NOTE)) return 'ratelimit-fail-open';
  if (note.includes(SHADOW_NOTE_PREFIX)) return 'shadow';
  return 'ok';
}

/** The notes of both limit phases for the log, each once. */
export function joinNotes(a: string | undefined, b: string | undefined): string | undefined {
  if (!a) return b || undefined;
  if (!b || a === b) return a;
  return `${a},${b}`;
}
