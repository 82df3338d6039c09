// One request through the real compiled pipeline, with its explanation, as `check` prints it and
// `test` compares it. Shared by both commands so they can never disagree.

import { randomUUID } from 'node:crypto';
import type { CompiledPolicy } from '../policy/compile.js';
import { authorize } from '../pipeline/authorize.js';
import { ExplainCollector, type Explanation } from '../pipeline/explain.js';
import type { Decision, RequestAttributes } from '../types.js';

export interface RequestSpec {
  readonly method: string;
  /** Absolute URL: scheme, host, path and query come from it (the path is taken as written). */
  readonly url: string;
  readonly headers: readonly (readonly [string, string])[];
  readonly sourceIp: string;
  /** The workload identity the proxy verified on the connection (Envoy's source.principal). */
  readonly sourcePrincipal?: string;
}

export interface DecisionReport {
  readonly decision: 'allow' | 'deny';
  readonly status: number;
  /** The denial reason, or "ok" (or the allow note, e.g. a shadow limit) for an allow. */
  readonly reason: string;
  readonly route: string;
  readonly upstreamHeaders: Record<string, string>;
  readonly removedHeaders: readonly string[];
  readonly responseHeaders: Record<string, string>;
  /** The JSON body of a denial (parsed), null for an allow. */
  readonly body: unknown;
  readonly detail?: string;
  readonly requestId: string;
  readonly explain: Explanation;
}

const URL_PARTS = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?$/;

/** RequestAttributes from a method, an absolute URL and headers. Throws with a usage message. */
export function buildRequest(spec: RequestSpec): RequestAttributes {
  const m = URL_PARTS.exec(spec.url);
  if (!m) throw new Error(`"${spec.url}" is not an absolute URL (https://host/path?query)`);
  const [, scheme, authority, rawPath, query] = m;
  // As Envoy sends :authority (port included): the pipeline applies the one host rule itself.
  const host = authority!.replace(/^[^@]*@/, '').toLowerCase();
  if (host === '') throw new Error(`"${spec.url}" has no host`);
  const method = spec.method.toUpperCase();
  if (!/^[A-Z]+$/.test(method)) throw new Error(`"${spec.method}" is not an HTTP method`);
  const headers = new Map<string, string>();
  for (const [name, value] of spec.headers) {
    const key = name.trim().toLowerCase();
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(key)) throw new Error(`"${name}" is not a header name`);
    const previous = headers.get(key);
    // Joined as Envoy joins repeated headers (cookies with "; ").
    headers.set(key, previous === undefined ? value : `${previous}${key === 'cookie' ? '; ' : ','}${value}`);
  }
  if (!headers.has('host')) headers.set('host', authority!.replace(/^[^@]*@/, ''));
  return {
    requestId: headers.get('x-request-id') ?? randomUUID(),
    method,
    host,
    path: rawPath === '' ? '/' : rawPath!,
    query: query ?? '',
    scheme: scheme!.toLowerCase(),
    protocol: 'HTTP/1.1',
    headers,
    sourceAddress: spec.sourceIp,
    contextExtensions: new Map(),
    ...(spec.sourcePrincipal === undefined ? {} : { peer: { principal: spec.sourcePrincipal, certificate: '' } }),
  };
}

/** "name: value" (curl's -H) → [name, value]. */
export function parseHeaderFlag(text: string): [string, string] {
  const colon = text.indexOf(':');
  if (colon <= 0) throw new Error(`-H "${text}" must be "name: value"`);
  return [text.slice(0, colon).trim(), text.slice(colon + 1).trim()];
}

export async function decide(policy: CompiledPolicy, request: RequestAttributes): Promise<DecisionReport> {
  const explain = new ExplainCollector();
  const decision = await authorize(policy, request, explain);
  return report(decision, explain.explanation);
}

export function report(decision: Decision, explanation: Explanation): DecisionReport {
  const pairs = (list: readonly { name: string; value: string }[]) => Object.fromEntries(list.map((h) => [h.name, h.value]));
  if (decision.allowed) {
    return {
      decision: 'allow',
      status: 200,
      reason: decision.note || 'ok',
      route: decision.route,
      upstreamHeaders: pairs(decision.upstreamHeaders),
      removedHeaders: [...decision.removeHeaders],
      responseHeaders: pairs(decision.responseHeaders),
      body: null,
      requestId: decision.requestId,
      explain: explanation,
    };
  }
  let body: unknown = decision.body;
  try {
    body = JSON.parse(decision.body);
  } catch {
    // Not JSON: shown as text.
  }
  return {
    decision: 'deny',
    status: decision.status,
    reason: decision.reason,
    route: decision.route,
    upstreamHeaders: {},
    removedHeaders: [],
    responseHeaders: pairs(decision.headers),
    body,
    detail: decision.detail,
    requestId: decision.requestId,
    explain: explanation,
  };
}

/** The human form of a report. */
export function formatReport(r: DecisionReport): string {
  const lines: string[] = [];
  lines.push(`${r.decision.toUpperCase()} ${r.status} ${r.reason}  (route ${r.route})`);
  if (r.detail) lines.push(`  detail: ${r.detail}`);
  const headerLines = (title: string, h: Record<string, string>) => {
    const entries = Object.entries(h);
    if (entries.length > 0) lines.push(`  ${title}:`, ...entries.map(([k, v]) => `    ${k}: ${v}`));
  };
  headerLines('upstream headers set', r.upstreamHeaders);
  if (r.removedHeaders.length > 0) lines.push(`  upstream headers removed: ${r.removedHeaders.join(', ')}`);
  headerLines('response headers', r.responseHeaders);
  if (r.body !== null) lines.push(`  body: ${typeof r.body === 'string' ? r.body : JSON.stringify(r.body)}`);
  lines.push('explanation:');
  const e = r.explain;
  if (e.route) {
    lines.push(`  route: ${e.route.chosen} (${e.route.kind})`);
    for (const c of e.route.considered) lines.push(`    ${c.matched ? '✓' : '·'} ${c.name}  [${c.match}]  ${c.why}`);
  }
  if (e.identity.length > 0) {
    lines.push('  identity:');
    for (const s of e.identity) {
      const what = s.outcome === 'none' ? 'nothing found' : s.outcome === 'deny' ? `refused: ${s.reason}${s.detail ? ` (${s.detail})` : ''}` : s.detail ?? 'proved a caller';
      lines.push(`    ${s.source}: ${what}`);
    }
  }
  if (e.principal) {
    const p = e.principal;
    const parts = [`method ${p.method}`, `tenant ${p.tenant ?? '-'}`, `subject ${p.subject ?? '-'}`, `scopes [${p.scopes.join(' ')}]`];
    if (p.issuer) parts.push(`issuer ${p.issuer}`);
    if (p.keyId) parts.push(`key ${p.keyId}`);
    lines.push(`  caller: ${parts.join(', ')}`);
  }
  if (e.checks.length > 0) {
    lines.push('  rules:');
    for (const c of e.checks) lines.push(`    ${c.ok ? '✓' : '✗'} ${c.check}${c.detail ? `: ${c.detail}` : ''}`);
  }
  if (e.limits.length > 0) {
    lines.push('  limits:');
    for (const l of e.limits) {
      lines.push(`    ${l.policy}${l.shadow ? ' (shadow)' : ''}: ${l.outcome}, ${l.remaining} remaining, full again in ${Math.ceil(l.resetMs / 1000)}s  [${l.phase}]`);
    }
  }
  for (const n of e.notes) lines.push(`  note: ${n}`);
  if (e.deniedBy) lines.push(`  denied by: ${e.deniedBy}`);
  return lines.join('\n') + '\n';
}
