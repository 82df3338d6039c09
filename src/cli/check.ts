// `portcullis check`: what would Portcullis answer to this request? Runs the real compiled
// pipeline on one request and prints the decision with its explanation. No Envoy needed; network
// only for the JWKS of the policy's issuers (none with --offline).

import { PolicyError, formatPolicyIssue } from '../errors.js';
import { systemClock } from '../clock.js';
import { loadPolicyFileWithLocator } from '../policy/load.js';
import type { PolicyDocument } from '../policy/schema.js';
import { parseCommand, usageError } from './args.js';
import { allProblems } from './problems.js';
import { buildRequest, decide, formatReport, parseHeaderFlag } from './decide.js';
import type { CliIo } from './io.js';
import { openSession, readKeySets } from './session.js';

export const CHECK_USAGE = `Usage: portcullis check --config FILE [options] METHOD URL

Runs the real policy pipeline on one request and prints the decision and why.

  -c, --config FILE       the policy file
  -H, --header 'N: V'     a request header (repeatable), e.g. -H 'authorization: Bearer eyJ…'
      --source-ip IP      address of the client that connected to Envoy (default 127.0.0.1)
      --source-principal ID  workload identity Envoy verified on the connection (source.principal, e.g. spiffe://…)
      --json              print one JSON object (decision, status, reason, route, upstreamHeaders,
                          removedHeaders, responseHeaders, body, explain)
      --offline           fetch no JWKS: tokens of JWKS issuers are refused (jwks_unavailable)
                          unless their keys are given with --jwks
      --jwks ISSUER=FILE  verify ISSUER's tokens with the keys in FILE (a JWKS or one JWK; repeatable)
  -h, --help              this help

The URL gives scheme, host, path and query: https://api.example.com/v1/items/42?x=1
Exit status: 0 allow, 3 deny, 1 invalid policy, 2 usage error.
`;

/**
 * A check asks; it never changes shared state: rate limits count in memory for this run (a Redis
 * backend is not contacted, so production counters are not spent), and bans come only from a file.
 */
function noSharedState(document: PolicyDocument): string[] {
  const notes: string[] = [];
  const limits = document.rateLimits as { backend: unknown; bans?: { postgres?: unknown } } | undefined;
  if (!limits) return notes;
  if (typeof limits.backend === 'object' && limits.backend !== null && 'redis' in limits.backend) {
    limits.backend = { memory: { maxKeys: 100_000 } };
    notes.push('rate limits are counted in memory for this check (Redis is not contacted): remaining quota is what a caller starts with');
  }
  if (limits.bans?.postgres !== undefined) {
    limits.bans = undefined;
    notes.push('bans in PostgreSQL are not consulted by check');
  }
  // Escalation writes bans: a check never does (its lockouts stay in this run's memory).
  const policies = (document.rateLimits as { policies?: { escalate?: unknown }[] }).policies ?? [];
  if (policies.some((p) => p.escalate !== undefined)) {
    for (const p of policies) delete p.escalate;
    notes.push('repeated lockouts are not escalated to bans by check');
  }
  return notes;
}

export async function runCheckCommand(args: string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(
    args,
    {
      config: { type: 'string', short: 'c' },
      header: { type: 'string', short: 'H', multiple: true },
      'source-ip': { type: 'string' },
      'source-principal': { type: 'string' },
      json: { type: 'boolean' },
      offline: { type: 'boolean' },
      jwks: { type: 'string', multiple: true },
    },
    CHECK_USAGE,
    io,
    true,
  );
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  const file = values.config as string | undefined;
  if (!file) return usageError('check needs --config FILE', CHECK_USAGE, io);
  if (positionals.length !== 2) return usageError(`check needs METHOD and URL (got ${positionals.length} argument${positionals.length === 1 ? '' : 's'})`, CHECK_USAGE, io);
  const [method, url] = positionals as [string, string];

  let request;
  let keySets;
  try {
    const headers = ((values.header as string[] | undefined) ?? []).map(parseHeaderFlag);
    request = buildRequest({ method, url, headers, sourceIp: (values['source-ip'] as string | undefined) ?? '127.0.0.1', sourcePrincipal: values['source-principal'] as string | undefined });
    keySets = readKeySets((values.jwks as string[] | undefined) ?? []);
  } catch (err) {
    return usageError((err as Error).message, CHECK_USAGE, io);
  }

  let session;
  const notes: string[] = [];
  try {
    const loaded = await loadPolicyFileWithLocator(file, io.env);
    session = await openSession(loaded, { file, env: io.env, clock: systemClock, keySets, offline: values.offline === true, rewrite: (document) => notes.push(...noSharedState(document)) });
  } catch (err) {
    if (err instanceof PolicyError) {
      const issues = await allProblems(err, file, io.env);
      for (const issue of issues) io.err(`${formatPolicyIssue(issue)}\n`);
      io.err(`${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'}\n`);
      return 1;
    }
    if ((err as Error).message.startsWith('--jwks')) return usageError((err as Error).message, CHECK_USAGE, io);
    io.err(`${(err as Error).message}\n`);
    return 1;
  }
  try {
    const result = await decide(session.policy, request);
    result.explain.notes.push(...notes);
    for (const name of session.unverifiable) {
      result.explain.notes.push(`--offline: the JWKS of issuer ${name} was not fetched, so its tokens are refused (give its keys with --jwks ${name}=FILE)`);
    }
    io.out(values.json ? `${JSON.stringify(result, null, 2)}\n` : formatReport(result));
    return result.decision === 'allow' ? 0 : 3;
  } finally {
    await session.close();
  }
}
