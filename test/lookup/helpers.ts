// A local HTTP lookup target with switchable behaviour, and pipeline helpers for lookup tests.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import { authorize } from '../../src/pipeline/authorize.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import type { Decision, RequestAttributes } from '../../src/types.js';

export type Mode = 'ok' | 'slow' | '500' | 'garbage' | 'huge' | 'redirect';

export interface SessionTarget {
  readonly url: string;
  readonly sessions: Map<string, unknown>;
  mode: Mode;
  /** Requests received. */
  requests: number;
  /** Cookie headers received (to check the credential was forwarded). */
  readonly cookies: string[];
  close(): Promise<void>;
}

/** Answers GET /session with the session named by the `sid` cookie, like Better Auth's get-session. */
export async function startSessionTarget(): Promise<SessionTarget> {
  const sessions = new Map<string, unknown>();
  const state = { mode: 'ok' as Mode, requests: 0 };
  const cookies: string[] = [];
  const pending = new Set<ServerResponse>();
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    state.requests++;
    const cookie = req.headers.cookie ?? '';
    if (cookies.length < 100) cookies.push(cookie);
    switch (state.mode) {
      case 'slow':
        pending.add(res);
        res.on('close', () => pending.delete(res));
        setTimeout(() => res.end('null'), 5_000).unref();
        return;
      case '500':
        res.writeHead(500).end('{"error":"boom"}');
        return;
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"session": {"id": "x", ');
        return;
      case 'huge': {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        let sent = 0;
        const pump = () => {
          while (sent < 10 * 1024 * 1024) {
            sent += chunk.length;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
          res.end('null');
        };
        res.on('error', () => {});
        pump();
        return;
      }
      case 'redirect':
        res.writeHead(302, { location: 'http://example.invalid/steal' }).end();
        return;
      case 'ok': {
        const sid = /(?:^|;\s*)sid=([^;]*)/.exec(cookie)?.[1];
        const session = sid === undefined ? undefined : sessions.get(sid);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(session ?? null));
      }
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    sessions,
    cookies,
    get mode() {
      return state.mode;
    },
    set mode(m: Mode) {
      state.mode = m;
    },
    get requests() {
      return state.requests;
    },
    set requests(n: number) {
      state.requests = n;
    },
    close: async () => {
      for (const res of pending) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export async function decide(policy: CompiledPolicy, request: RequestAttributes): Promise<Decision> {
  return authorize(policy, request);
}

export function reasonOf(decision: Decision): string {
  return decision.allowed ? 'allow' : decision.reason;
}

export function header(decision: Decision, name: string): string | undefined {
  if (!decision.allowed) return undefined;
  return decision.upstreamHeaders.find((h) => h.name === name)?.value;
}

/** A port nothing listens on. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** HS256 secret and issuer of the agent tokens the enrichment tests sign (seed 002's agents). */
export const AGENT_SECRET = 'agent-secret-0123456789abcdef0123456789abcdef';

/** A signed agent token: `grants: [storefront]`, issuer and audience of the test policies, an hour long. */
export async function agentToken(claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ grants: ['storefront'], ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer('https://agents.commerce.test')
    .setAudience('commerce-api')
    .setIssuedAt(now)
    .setExpirationTime(now + 3600)
    .sign(new TextEncoder().encode(AGENT_SECRET));
}

/**
 * Seed 002's agents: a JWT without a tenant gets one from the lookup `first-org` by subject.
 * `lookup` is the lookup's body (its target and options), indented by four spaces.
 */
export function enrichPolicy(lookup: string): string {
  return `
lookups:
  first-org:
${lookup}
issuers:
  agents: { secret: "${AGENT_SECRET}", issuer: https://agents.commerce.test, audiences: [commerce-api], claims: { tenant: org_id, scopes: [grants] } }
identity:
  - jwt: { issuers: [agents] }
enrich:
  - { lookup: first-org, by: subject, methods: [jwt], map: { tenant: organization_id } }
routes:
  - { match: { pathPrefix: /v1/ }, require: { allOf: [storefront] } }
`;
}
