// The explanation of one decision: which routes were considered and which matched, which identity
// source found the credential and what it proved, which requirement denied, which limits applied
// and what quota they left. Recorded by the real pipeline (authorize.ts) when a collector is
// passed in; when none is (every request the service answers, unless server.explain is on),
// nothing is recorded and nothing is allocated.

import type { Principal } from '../types.js';

export interface ExplainedRoute {
  readonly name: string;
  /** What the route matches, as written ("GET /v1/items/{id}", "/v1/admin/*"). */
  readonly match: string;
  readonly matched: boolean;
  /** Why it was or was not chosen. */
  readonly why: string;
}

export interface ExplainedSource {
  readonly source: string;
  /** none: no credential of this kind; principal: proved a caller; deny: found one and refused it. */
  readonly outcome: 'none' | 'principal' | 'deny';
  readonly reason?: string;
  readonly detail?: string;
}

export interface ExplainedCheck {
  readonly check: string;
  readonly ok: boolean;
  readonly detail?: string;
}

export interface ExplainedLimit {
  readonly policy: string;
  readonly key: string;
  readonly outcome: 'allowed' | 'rate_limited' | 'locked_out' | 'not_evaluated';
  /** Units left after this request. */
  readonly remaining: number;
  readonly resetMs: number;
  readonly shadow: boolean;
  /** Which limiter ran it: before identification (request-keyed) or after. */
  readonly phase: string;
}

export interface Explanation {
  route?: { chosen: string; kind: string; public: boolean; considered: ExplainedRoute[] };
  identity: ExplainedSource[];
  principal?: {
    method: string;
    tenant?: string;
    subject?: string;
    scopes: readonly string[];
    issuer?: string;
    keyId?: string;
    email?: string;
  };
  checks: ExplainedCheck[];
  limits: ExplainedLimit[];
  /** The step that decided a denial ("route", "identity", "permission", "rate-limit", ...). */
  deniedBy?: string;
  notes: string[];
}

/** Passed to authorize() to have the decision explained. Cheap, but never on by default. */
export class ExplainCollector {
  readonly explanation: Explanation = { identity: [], checks: [], limits: [], notes: [] };
  /** Set by the pipeline before each rate limiter runs. */
  phase = 'all';

  routes(chosen: string, kind: string, isPublic: boolean, considered: ExplainedRoute[]): void {
    this.explanation.route = { chosen, kind, public: isPublic, considered };
  }

  source(entry: ExplainedSource): void {
    this.explanation.identity.push(entry);
  }

  principal(p: Principal): void {
    this.explanation.principal = {
      method: p.method,
      tenant: p.tenant,
      subject: p.subject,
      scopes: p.scopes,
      issuer: p.issuer,
      keyId: p.keyId,
      email: p.email,
    };
  }

  check(check: string, ok: boolean, detail?: string): void {
    this.explanation.checks.push(detail === undefined ? { check, ok } : { check, ok, detail });
  }

  limit(entry: Omit<ExplainedLimit, 'phase'>): void {
    this.explanation.limits.push({ ...entry, phase: this.phase });
  }

  denied(step: string): void {
    this.explanation.deniedBy ??= step;
  }

  note(text: string): void {
    this.explanation.notes.push(text);
  }
}
