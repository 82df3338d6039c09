// HTTP lookups: one request per question, built from templates that may carry the credential
// (e.g. the Cookie header forwarded to Better Auth's /api/auth/get-session). Redirects are never
// followed (a 3xx is a failure), the body is read as a stream and abandoned past the size limit,
// the caller's AbortSignal (the lookup timeout) cancels connect, request and body alike.
// Statuses in `notFound` mean "unknown credential"; other non-2xx statuses are failures.

import { LookupError, NOT_FOUND, Template, type LookupTarget, type TargetAnswer } from './target.js';

/** Control characters and anything outside Latin-1. */
const UNSENDABLE = /[\u0000-\u001f\u007f]|[^\u0000-\u00ff]/;

export interface HttpTargetOptions {
  readonly url: string;
  readonly method: 'GET' | 'POST';
  readonly headers: Readonly<Record<string, string>>;
  readonly json?: Readonly<Record<string, unknown>>;
  readonly form?: Readonly<Record<string, string>>;
  readonly notFound: readonly number[];
  readonly maxResponseBytes: number;
}

/** Problems with the templates (for policy errors); empty when fine. */
export function httpTemplateProblems(options: Pick<HttpTargetOptions, 'url' | 'headers' | 'json' | 'form'>): { at: (string | number)[]; message: string }[] {
  const problems: { at: (string | number)[]; message: string }[] = [];
  const check = (at: (string | number)[], text: string) => {
    const unknown = Template.unknownPlaceholders(text);
    if (unknown.length > 0) problems.push({ at, message: `unknown placeholder {{${unknown[0]}}}: only {{credential}} is available` });
  };
  check(['url'], options.url);
  let url: URL | undefined;
  try {
    url = new URL(new Template(options.url).render('x'));
  } catch {
    problems.push({ at: ['url'], message: 'must be an absolute http(s) URL' });
  }
  if (url && url.protocol !== 'http:' && url.protocol !== 'https:') problems.push({ at: ['url'], message: 'must be an absolute http(s) URL' });
  if (url && options.url.split('{{credential}}')[0]!.length < url.origin.length) {
    problems.push({ at: ['url'], message: '{{credential}} may not appear in the scheme or host of the URL' });
  }
  for (const [name, value] of Object.entries(options.headers)) check(['headers', name], value);
  for (const [name, value] of Object.entries(options.form ?? {})) check(['form', name], value);
  walkStrings(options.json, ['json'], check);
  if (options.json && options.form) problems.push({ at: [], message: 'an http lookup has at most one of json or form' });
  return problems;
}

function walkStrings(node: unknown, at: (string | number)[], visit: (at: (string | number)[], text: string) => void): void {
  if (typeof node === 'string') visit(at, node);
  else if (Array.isArray(node)) node.forEach((v, i) => walkStrings(v, [...at, i], visit));
  else if (typeof node === 'object' && node !== null) for (const [k, v] of Object.entries(node)) walkStrings(v, [...at, k], visit);
}

function renderJson(node: unknown, credential: string): unknown {
  if (typeof node === 'string') return new Template(node).render(credential);
  if (Array.isArray(node)) return node.map((v) => renderJson(v, credential));
  if (typeof node === 'object' && node !== null) return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, renderJson(v, credential)]));
  return node;
}

export class HttpTarget implements LookupTarget {
  readonly kind = 'http' as const;
  private readonly url: Template;
  private readonly headers: readonly (readonly [string, Template])[];
  private readonly form: readonly (readonly [string, Template])[] | undefined;
  private readonly notFound: ReadonlySet<number>;

  constructor(private readonly options: HttpTargetOptions) {
    this.url = new Template(options.url);
    this.headers = Object.entries(options.headers).map(([name, value]) => [name, new Template(value)] as const);
    this.form = options.form ? Object.entries(options.form).map(([name, value]) => [name, new Template(value)] as const) : undefined;
    this.notFound = new Set(options.notFound);
  }

  async query(credential: string, signal: AbortSignal): Promise<TargetAnswer> {
    // A credential the request cannot carry as it is: "." or ".." would be a dot segment of the
    // URL (the URL parser resolves it, %2e too: another resource would answer), and a control or
    // non-Latin-1 character cannot be a header value (fetch would throw, and every such credential
    // would count against the breaker all clients share). Nobody's credential: not found, unasked.
    if (credential === '.' || credential === '..' || UNSENDABLE.test(credential)) return NOT_FOUND;
    const headers: Record<string, string> = { accept: 'application/json' };
    for (const [name, template] of this.headers) headers[name] = template.render(credential);
    let body: string | undefined;
    if (this.form) {
      body = new URLSearchParams(this.form.map(([name, t]) => [name, t.render(credential)])).toString();
      headers['content-type'] ??= 'application/x-www-form-urlencoded';
    } else if (this.options.json) {
      body = JSON.stringify(renderJson(this.options.json, credential));
      headers['content-type'] ??= 'application/json';
    }
    let response: Response;
    try {
      response = await fetch(this.url.render(credential, encodeURIComponent), { method: this.options.method, headers, body, redirect: 'manual', signal });
    } catch (err) {
      // Never the URL: it may carry the credential.
      throw signal.aborted ? new LookupError('timed out', 'timeout') : new LookupError(`request failed: ${describe(err)}`);
    }
    const status = response.status;
    if (this.notFound.has(status)) {
      await discard(response);
      return NOT_FOUND;
    }
    if (status < 200 || status > 299) {
      await discard(response);
      throw new LookupError(status >= 300 && status < 400 ? `redirect ${status} not followed` : `status ${status}`);
    }
    const text = await readLimited(response, this.options.maxResponseBytes, signal);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new LookupError('response is not JSON');
    }
    // Better Auth's get-session answers 200 `null` for an unknown session.
    if (value === null) return NOT_FOUND;
    return { found: true, value };
  }

  async close(): Promise<void> {}
}

async function discard(response: Response): Promise<void> {
  try {
    await response.body?.cancel();
  } catch {
    // nothing to do
  }
}

async function readLimited(response: Response, limit: number, signal: AbortSignal): Promise<string> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) {
    await discard(response);
    throw new LookupError(`response larger than ${limit} bytes`);
  }
  const body = response.body;
  if (!body) return '';
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel().catch(() => {});
        throw new LookupError(`response larger than ${limit} bytes`);
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof LookupError) throw err;
    throw signal.aborted ? new LookupError('timed out', 'timeout') : new LookupError(`response failed: ${describe(err)}`);
  }
  return Buffer.concat(chunks, size).toString('utf8');
}

function describe(err: unknown): string {
  const cause = (err as { cause?: { code?: string } }).cause;
  if (cause?.code) return cause.code;
  return err instanceof Error ? err.name : 'unknown error';
}
