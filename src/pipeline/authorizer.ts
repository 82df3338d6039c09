// The object transports call: authorize() against the policy in force, plus the decision log and
// metrics. Keeping these here keeps every transport a thin adapter.

import type { Logger } from '../observability/logger.js';
import { DecisionLog, type DecisionEntry } from '../observability/decision-log.js';
import type { BatchedCount, Metrics } from '../observability/metrics.js';
import { traceIdOf } from '../observability/tracing.js';
import { describeMatch } from '../authz/routes.js';
import type { CompiledPolicy } from '../policy/compile.js';
import { allowLabel } from '../ratelimit/notes.js';
import { isPromise, type Decision, type Denial, type MaybePromise, type RequestAttributes } from '../types.js';
import { authorize, internalError } from './authorize.js';
import { denyDecision } from './decision.js';
import { ExplainCollector } from './explain.js';

export interface PolicySource {
  /** The compiled policy in force, or undefined before the first successful load. */
  current(): CompiledPolicy | undefined;
}

const NOT_READY_POLICY = { realm: 'portcullis', denyBody: undefined };

type CheckCounter = BatchedCount;
/** Bound children by decision, then reason, then credential kind. */
type CounterTable = { readonly allow: Map<string, Map<string, CheckCounter>>; readonly deny: Map<string, Map<string, CheckCounter>> };
const newTable = (): CounterTable => ({ allow: new Map(), deny: new Map() });

/** Route values a decision can carry besides the policy's route names (see authorize.ts). */
const FIXED_ROUTES = ['default', 'none', 'dev', 'unknown'];
/** The `route` label of a decision whose route is not a name of the policy in force. */
const OTHER_ROUTE = 'other';

/**
 * A decision-log field the request chose (its path, host, method) or that quotes it (a detail):
 * cut to `max` characters, with how many more there were. Every line stays small, whatever a
 * client sends (Envoy passes paths of up to 60 KB).
 */
function clipped(value: string, max: number): string {
  return value.length <= max ? value : `${value.slice(0, max)}…(+${value.length - max})`;
}

/** server.tenantMetrics: series for tenants the policy does not list (a bound on what callers can add). */
export const MAX_TENANT_SERIES = 1000;

export class Authorizer {
  /** Bound metric children: label hashing per check would cost more than the check. */
  private readonly counters = newTable();
  /**
   * With server.routeMetrics: one table per route name of the policy in force (a bounded set:
   * names come from the policy, never from the request); rebuilt when the policy changes.
   */
  private routeCounters = new Map<string, CounterTable>();
  private routeNamesOf: CompiledPolicy | undefined;
  private routeNames: ReadonlySet<string> = new Set();
  private readonly durations;
  /** Checks between check() and their decision: portcullis_checks_in_flight. */
  private inFlight = 0;
  private readonly decisionLog: DecisionLog;
  /** decisionLog: sample — millionths of a line owed; starts at a whole line, so the first allow is logged. */
  private allowCredit = 1e6;
  /**
   * server.tenantMetrics: tenants given a series of their own, besides those the policy lists
   * (`tenants:`). Tenants can be chosen by callers (a host pattern's label, a self-service claim, a
   * computed value): past MAX_TENANT_SERIES, new ones count under tenant="(other)".
   */
  private readonly tenantSeries = new Set<string>();
  private tenantOverflowLogged = false;

  constructor(
    private readonly policies: PolicySource,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {
    this.decisionLog = new DecisionLog(logger);
    this.durations = { allow: metrics.checkDuration.labels('allow'), deny: metrics.checkDuration.labels('deny') };
    metrics.observeInFlight(() => this.inFlight);
  }

  check(request: RequestAttributes, malformed = false): MaybePromise<Decision> {
    const started = performance.now();
    const policy = this.policies.current();
    this.inFlight++;
    let decision: MaybePromise<Decision>;
    // server.explain: the explanation goes into the decision log line (never to a client).
    const explain = policy?.explain === true && policy.decisionLog !== 'none' ? new ExplainCollector() : undefined;
    try {
      if (!policy) decision = denyDecision(NOT_READY_POLICY, request.requestId, 'none', { reason: 'not_ready' });
      else if (malformed) decision = denyDecision(policy, request.requestId, 'none', { reason: 'invalid_request', detail: 'CheckRequest has no HTTP attributes' });
      else decision = authorize(policy, request, explain);
    } catch (err) {
      // authorize() catches its own errors; this keeps the in-flight count true whatever throws.
      decision = internalError(policy ?? NOT_READY_POLICY, request, 'unknown', err);
    }

    if (isPromise(decision)) {
      return decision.then(
        (d) => this.record(policy, request, d, started, explain),
        (err: unknown) => this.record(policy, request, internalError(policy ?? NOT_READY_POLICY, request, 'unknown', err), started, explain),
      );
    }
    return this.record(policy, request, decision, started, explain);
  }

  /**
   * A request a transport refuses before the pipeline (e.g. an HTTP authorization request without
   * its proxy's headers): denied with `denial`, counted and logged like every other decision.
   */
  refuse(request: RequestAttributes, denial: Denial): Decision {
    const started = performance.now();
    const policy = this.policies.current();
    this.inFlight++;
    return this.record(policy, request, denyDecision(policy ?? NOT_READY_POLICY, request.requestId, 'none', denial), started);
  }

  /** The tenant label: its own for listed tenants and the first MAX_TENANT_SERIES others, else "(other)". */
  private tenantLabel(policy: CompiledPolicy, tenant: string): string {
    if (policy.listedTenants.has(tenant) || this.tenantSeries.has(tenant)) return tenant;
    if (this.tenantSeries.size < MAX_TENANT_SERIES) {
      this.tenantSeries.add(tenant);
      return tenant;
    }
    if (!this.tenantOverflowLogged) {
      this.tenantOverflowLogged = true;
      this.logger.warn({ maxSeries: MAX_TENANT_SERIES }, 'tenantMetrics: more tenants than series; further tenants not listed under tenants: count as tenant="(other)"');
    }
    return '(other)';
  }

  private record(policy: CompiledPolicy | undefined, request: RequestAttributes, decision: Decision, started: number, explain?: ExplainCollector): Decision {
    this.inFlight--;
    const seconds = (performance.now() - started) / 1000;
    const outcome = decision.allowed ? 'allow' : 'deny';
    // A closed set of labels: never the note's text (two phases' notes would make new values).
    const reason = decision.allowed ? allowLabel(decision.note) : decision.reason;
    const credential = decision.principal?.method ?? 'none';
    if (policy?.document.server.routeMetrics) this.routeCounter(policy, decision.route, outcome, reason, credential).inc();
    else this.counter(this.counters, outcome, reason, credential, undefined).inc();
    this.durations[outcome].observe(seconds);
    if (policy?.tenantMetrics && decision.principal?.tenant) {
      this.metrics.tenantChecks.inc({ decision: outcome, tenant: this.tenantLabel(policy, decision.principal.tenant) });
    }

    const mode = policy?.decisionLog ?? 'all';
    if (mode === 'all' || (mode !== 'none' && !decision.allowed) || reason === 'internal_error' || (mode === 'sample' && this.sampleAllow(policy!.decisionLogAllowRate))) {
      // Never headers, never credentials: only what identifies the decision.
      const entry: DecisionEntry = {
        requestId: decision.requestId,
        decision: outcome,
        reason,
        route: decision.route,
        method: clipped(request.method, 32),
        host: clipped(request.host, 300),
        path: clipped(request.path, 1024),
        auth: decision.principal?.method,
        tenant: decision.principal?.tenant,
        subject: decision.principal?.subject,
        keyId: decision.principal?.keyId,
        status: decision.allowed ? undefined : decision.status,
        detail: decision.allowed ? decision.note || undefined : decision.detail && clipped(decision.detail, 1024),
        latencyMs: Math.round(seconds * 1e6) / 1e3,
        explain: explain?.explanation,
        // The trace this check belongs to: its span when traced, else the caller's traceparent.
        trace_id: request.trace !== undefined ? request.trace.traceId : traceIdOf(request.headers.get('traceparent')),
        span_id: request.trace?.spanId,
      };
      if (reason === 'internal_error') this.decisionLog.write(entry, 'error', 'check failed inside Portcullis (denied 503)');
      else this.decisionLog.write(entry, 'info', 'decision');
    }
    return decision;
  }

  /**
   * decisionLog: sample — `rate` of the allows, evenly spaced (a credit in millionths, no
   * randomness and no rounding drift): at 0.01 exactly one allow in a hundred, the first included.
   */
  private sampleAllow(rate: number): boolean {
    const owed = this.allowCredit >= 1e6;
    if (owed) this.allowCredit -= 1e6;
    this.allowCredit += Math.round(rate * 1e6);
    return owed;
  }

  private counter(table: CounterTable, outcome: 'allow' | 'deny', reason: string, credential: string, route: string | undefined): CheckCounter {
    const byReason = table[outcome];
    let byCredential = byReason.get(reason);
    if (!byCredential) byReason.set(reason, (byCredential = new Map()));
    let child = byCredential.get(credential);
    if (!child) {
      const labels = route === undefined ? { decision: outcome, reason, credential } : { decision: outcome, reason, credential, route };
      byCredential.set(credential, (child = this.metrics.batchedChild(this.metrics.checks, labels)));
    }
    return child;
  }

  private routeCounter(policy: CompiledPolicy, route: string, outcome: 'allow' | 'deny', reason: string, credential: string): CheckCounter {
    // The names of the policy in force now: a check that started on the previous policy counts
    // its route as `other` if the new policy dropped it.
    const live = this.policies.current() ?? policy;
    if (live !== this.routeNamesOf) this.followRoutes(live);
    const label = this.routeNames.has(route) ? route : OTHER_ROUTE;
    let table = this.routeCounters.get(label);
    if (!table) this.routeCounters.set(label, (table = newTable()));
    return this.counter(table, outcome, reason, credential, label);
  }

  /**
   * A new policy is in force: its route names become the label's values, and the series of
   * routes it no longer has are dropped, so the label stays bounded by the policy however often
   * routes are renamed.
   */
  private followRoutes(policy: CompiledPolicy): void {
    this.routeNamesOf = policy;
    const names = new Set(FIXED_ROUTES);
    for (const route of policy.document.routes) names.add(route.name ?? describeMatch(route.match));
    this.routeNames = names;
    for (const [label, table] of [...this.routeCounters]) {
      if (label === OTHER_ROUTE || names.has(label)) continue;
      this.routeCounters.delete(label);
      for (const decision of ['allow', 'deny'] as const) {
        for (const [reason, byCredential] of table[decision]) {
          for (const [credential, child] of byCredential) {
            this.metrics.releaseBatched(this.metrics.checks, child);
            this.metrics.checks.remove({ decision, reason, credential, route: label });
          }
        }
      }
    }
  }
}
