// The object transports call: authorize() against the policy in force, plus the decision log and
// metrics. Keeping these here keeps every transport a thin adapter.

import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { CompiledPolicy } from '../policy/compile.js';
import { isPromise, type Decision, type MaybePromise, type RequestAttributes } from '../types.js';
import { authorize, internalError } from './authorize.js';
import { denyDecision } from './decision.js';
import { ExplainCollector } from './explain.js';

export interface PolicySource {
  /** The compiled policy in force, or undefined before the first successful load. */
  current(): CompiledPolicy | undefined;
}

const NOT_READY_POLICY = { realm: 'portcullis' };

type CheckCounter = ReturnType<Metrics['checks']['labels']>;

export class Authorizer {
  /** Bound metric children: label hashing per check would cost more than the check. */
  private readonly counters = { allow: new Map<string, Map<string, CheckCounter>>(), deny: new Map<string, Map<string, CheckCounter>>() };
  private readonly durations;

  constructor(
    private readonly policies: PolicySource,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {
    this.durations = { allow: metrics.checkDuration.labels('allow'), deny: metrics.checkDuration.labels('deny') };
  }

  check(request: RequestAttributes, malformed = false): MaybePromise<Decision> {
    const started = performance.now();
    const policy = this.policies.current();
    let decision: MaybePromise<Decision>;
    // server.explain: the explanation goes into the decision log line (never to a client).
    const explain = policy?.explain === true && policy.decisionLog !== 'none' ? new ExplainCollector() : undefined;
    if (!policy) decision = denyDecision(NOT_READY_POLICY, request.requestId, 'none', { reason: 'not_ready' });
    else if (malformed) decision = denyDecision(policy, request.requestId, 'none', { reason: 'invalid_request', detail: 'CheckRequest has no HTTP attributes' });
    else decision = authorize(policy, request, explain);

    if (isPromise(decision)) {
      return decision.then(
        (d) => this.record(policy, request, d, started, explain),
        (err: unknown) => this.record(policy, request, internalError(policy ?? NOT_READY_POLICY, request, 'unknown', err), started, explain),
      );
    }
    return this.record(policy, request, decision, started, explain);
  }

  private record(policy: CompiledPolicy | undefined, request: RequestAttributes, decision: Decision, started: number, explain?: ExplainCollector): Decision {
    const seconds = (performance.now() - started) / 1000;
    const outcome = decision.allowed ? 'allow' : 'deny';
    const reason = decision.allowed ? (decision.note ? decision.note.split(':')[0]! : 'ok') : decision.reason;
    const method = decision.principal?.method ?? 'none';
    this.counter(outcome, reason, method).inc();
    this.durations[outcome].observe(seconds);
    if (policy?.tenantMetrics && decision.principal?.tenant) {
      this.metrics.tenantChecks.inc({ decision: outcome, tenant: decision.principal.tenant });
    }

    const mode = policy?.decisionLog ?? 'all';
    if (mode === 'all' || (mode === 'deny' && !decision.allowed) || reason === 'internal_error') {
      // Never headers, never credentials: only what identifies the decision.
      const entry = {
        requestId: decision.requestId,
        decision: outcome,
        reason,
        route: decision.route,
        method: request.method,
        host: request.host,
        path: request.path,
        auth: decision.principal?.method,
        tenant: decision.principal?.tenant,
        subject: decision.principal?.subject,
        keyId: decision.principal?.keyId,
        status: decision.allowed ? undefined : decision.status,
        detail: decision.allowed ? decision.note || undefined : decision.detail,
        latencyMs: Math.round(seconds * 1e6) / 1e3,
        explain: explain?.explanation,
      };
      if (reason === 'internal_error') this.logger.error(entry, 'check failed inside Portcullis (denied 503)');
      else this.logger.info(entry, 'decision');
    }
    return decision;
  }

  private counter(outcome: 'allow' | 'deny', reason: string, method: string): CheckCounter {
    const byReason = this.counters[outcome];
    let byMethod = byReason.get(reason);
    if (!byMethod) byReason.set(reason, (byMethod = new Map()));
    let child = byMethod.get(method);
    if (!child) byMethod.set(method, (child = this.metrics.checks.labels(outcome, reason, method)));
    return child;
  }
}
