// Fetching an issuer's discovery document and key set: bounded in time and size, redirects only
// within the same origin. URLs come from the policy (or the policy issuer's discovery document),
// never from a token. Userinfo in a URL is sent as Basic credentials (fetch refuses such URLs);
// every URL in an error message is redacted to scheme://host/path (observability/redact.ts).

import { redactUrl, redactUrlsIn } from '../observability/redact.js';

/** Largest discovery or JWKS document accepted. */
export const MAX_DOCUMENT_BYTES = 512 * 1024;
const MAX_REDIRECTS = 3;

/** Why a fetch failed; the `result` label of portcullis_jwks_fetches_total. */
export type FetchFailureKind = 'timeout' | 'network_error' | 'http_error' | 'invalid';

export class FetchFailure extends Error {
  constructor(
    readonly kind: FetchFailureKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'FetchFailure';
  }
}

/** GET a JSON object. `signal` aborts it (disposal); `timeoutMs` bounds the whole exchange. */
export async function fetchJsonObject(url: string, timeoutMs: number, signal: AbortSignal): Promise<Record<string, unknown>> {
  const deadline = AbortSignal.timeout(timeoutMs);
  const combined = AbortSignal.any([signal, deadline]);
  const shown = redactUrl(url);
  try {
    const text = await fetchText(url, combined);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new FetchFailure('invalid', `${shown}: response is not JSON`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new FetchFailure('invalid', `${shown}: response is not a JSON object`);
    return parsed as Record<string, unknown>;
  } catch (err) {
    if (err instanceof FetchFailure) throw err;
    if (deadline.aborted) throw new FetchFailure('timeout', `${shown}: no answer within ${timeoutMs} ms`);
    // Library messages may quote the URL they were given: redacted, and the raw error is not kept.
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new FetchFailure('network_error', `${shown}: ${redactUrlsIn(String(cause?.code ?? cause?.message ?? (err as Error).message))}`);
  }
}

async function fetchText(url: string, signal: AbortSignal): Promise<string> {
  const target = new URL(url);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (target.username !== '' || target.password !== '') {
    const credentials = `${decodeURIComponent(target.username)}:${decodeURIComponent(target.password)}`;
    headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
    target.username = '';
    target.password = '';
  }
  const origin = target.origin;
  let current = target;
  for (let hop = 0; ; hop++) {
    const response = await fetch(current, { redirect: 'manual', signal, headers });
    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel();
      const location = response.headers.get('location');
      if (!location) throw new FetchFailure('http_error', `${redactUrl(current)}: HTTP ${response.status} without Location`);
      const next = new URL(location, current);
      // Same origin only: the credentials above never go to another host.
      if (next.origin !== origin) throw new FetchFailure('http_error', `${redactUrl(current)}: redirect to another origin (${next.origin}) refused`);
      if (hop >= MAX_REDIRECTS) throw new FetchFailure('http_error', `${redactUrl(url)}: more than ${MAX_REDIRECTS} redirects`);
      next.username = '';
      next.password = '';
      current = next;
      continue;
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new FetchFailure('http_error', `${redactUrl(current)}: HTTP ${response.status}`);
    }
    return readLimited(response, redactUrl(current));
  }
}

/** `shown` is the redacted URL, for messages. */
async function readLimited(response: Response, shown: string): Promise<string> {
  const declared = Number(response.headers.get('content-length'));
  if (declared > MAX_DOCUMENT_BYTES) {
    await response.body?.cancel();
    throw new FetchFailure('invalid', `${shown}: document of ${declared} bytes exceeds ${MAX_DOCUMENT_BYTES}`);
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > MAX_DOCUMENT_BYTES) {
      await reader.cancel();
      throw new FetchFailure('invalid', `${shown}: document exceeds ${MAX_DOCUMENT_BYTES} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
