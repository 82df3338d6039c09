// The bench scenarios. Each one names its policy (bench/policies/), the generator that can drive
// it, the CheckRequest(s) it sends, the answer every request must get, and the target from
// issue 22: `ceiling` is the throughput ratio to the Node ceiling at 8x16, `p99x` the 8x16 p99 as a
// multiple of the ceiling's in the same run, `p99Ms` the p99 one at a time; `vs` names the row a
// feature row is compared with (its own cost), `within` the tolerance when it must cost nothing.
// prepare() throws NotAvailable when a prerequisite is missing; the harness then prints
// "not available: <why>" and goes on.

import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { ROOT, checkRequest } from './proto.mjs';

export class NotAvailable extends Error {}

export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Distinct tokens of scenario (b): twice the policy's cacheSize, so a cyclic walk never hits an LRU. */
export const DISTINCT_TOKENS = 20_000;
const JWT_CACHE_SIZE = 10_000;

const ITEM_PATH = '/v1/items/42';
const REQUEST_ID = 'bench-0123456789abcdef';

const request = (requestPath, headers = {}) => checkRequest({ path: requestPath, headers, requestId: REQUEST_ID });
const bearer = (token) => ({ authorization: `Bearer ${token}` });

/** Scenario (f)'s request; the null server is driven with it too. */
export const publicRouteRequest = () => request('/health');

function requireModule(relative, what) {
  const source = path.join(ROOT, 'src', relative);
  if (!fs.existsSync(source)) throw new NotAvailable(`${what} is not in the tree yet (${path.relative(ROOT, source)} missing)`);
  if (/PLACEHOLDER/.test(fs.readFileSync(source, 'utf8').slice(0, 200))) throw new NotAvailable(`${what} is not in the tree yet (${path.relative(ROOT, source)} is a placeholder)`);
}

function reachable(url) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port || 6379) });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function jwtEnv(ctx) {
  requireModule('jwt/config.ts', 'the JWT issuer syntax');
  const issuer = await ctx.issuer();
  return { BENCH_ISSUER: issuer.issuer, BENCH_JWKS_URI: issuer.jwksUri };
}

/**
 * An OTLP/HTTP receiver that accepts and drops every export (tracing rows): started on first use,
 * in the bench process, on loopback.
 */
let otlpSink;
function otlpSinkUrl() {
  otlpSink ??= new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    });
    server.listen(0, '127.0.0.1', () => {
      server.unref();
      resolve(`http://127.0.0.1:${server.address().port}/v1/traces`);
    });
  });
  return otlpSink;
}

/** Scenario (a) with tracing on: new traces (no traceparent) sampled at `ratio`. */
function tracedScenario(id, ratio) {
  return {
    id,
    title: `JWT RS256 cached, tracing on ${ratio * 100}%`,
    policy: 'jwt-traced.yaml',
    generator: 'h2load',
    target: { vs: 'a' },
    async prepare(ctx) {
      requireModule('observability/tracing.ts', 'tracing');
      const env = {
        ...(await jwtEnv(ctx)),
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: await otlpSinkUrl(),
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: String(ratio),
      };
      const token = await ctx.token();
      return { env, requests: [request(ITEM_PATH, bearer(token))], expect: { kind: 'ok' }, note: `same request as (a); spans exported over OTLP/HTTP to a local sink` };
    },
  };
}

export const SCENARIOS = [
  {
    id: 'a',
    title: 'JWT RS256, cached',
    policy: 'jwt.yaml',
    generator: 'h2load',
    target: { ceiling: 0.85, p99x: 1.5, p99Ms: 0.3 },
    async prepare(ctx) {
      const env = await jwtEnv(ctx);
      const token = await ctx.token();
      return { env, requests: [request(ITEM_PATH, bearer(token))], expect: { kind: 'ok' } };
    },
  },
  {
    id: 'a0',
    title: '(a) + unused features in the policy',
    policy: 'jwt-unused.yaml',
    generator: 'h2load',
    target: { vs: 'a', within: 0.03 },
    async prepare(ctx) {
      requireModule('lookup/cached-lookup.ts', 'the lookup module');
      requireModule('expr/compile.ts', 'expressions');
      const env = await jwtEnv(ctx);
      const token = await ctx.token();
      return { env, requests: [request(ITEM_PATH, bearer(token))], expect: { kind: 'ok' } };
    },
  },
  {
    id: 'h',
    title: '(a) + expressions (when + rule)',
    policy: 'jwt-expr.yaml',
    generator: 'h2load',
    target: { vs: 'a' },
    async prepare(ctx) {
      requireModule('expr/compile.ts', 'expressions');
      const env = await jwtEnv(ctx);
      const token = await ctx.token();
      return { env, requests: [request(ITEM_PATH, bearer(token))], expect: { kind: 'ok' } };
    },
  },
  {
    id: 'i',
    title: '(a) + decision log at its default',
    policy: 'jwt-log.yaml',
    generator: 'h2load',
    target: { ceiling: 0.7, vs: 'a' },
    async prepare(ctx) {
      const env = await jwtEnv(ctx);
      const token = await ctx.token();
      return { env, requests: [request(ITEM_PATH, bearer(token))], expect: { kind: 'ok' } };
    },
  },
  {
    id: 'j',
    title: '(a) + decisionLog: all',
    policy: 'jwt-log-all.yaml',
    generator: 'h2load',
    target: { vs: 'a' },
    async prepare(ctx) {
      const env = await jwtEnv(ctx);
      const token = await ctx.token();
      return { env, requests: [request(ITEM_PATH, bearer(token))], expect: { kind: 'ok' } };
    },
  },
  {
    id: 'b',
    title: 'JWT RS256, every token distinct',
    policy: 'jwt.yaml',
    generator: 'raw',
    target: { ceiling: 0.35 },
    async prepare(ctx) {
      const env = await jwtEnv(ctx);
      const tokens = await ctx.tokenPool(DISTINCT_TOKENS);
      if (tokens.length <= JWT_CACHE_SIZE) throw new Error(`scenario b needs more distinct tokens (${tokens.length}) than the cache holds (${JWT_CACHE_SIZE})`);
      return {
        env,
        requests: tokens.map((token) => request(ITEM_PATH, bearer(token))),
        expect: { kind: 'ok' },
        note: `${tokens.length} tokens cycled, cacheSize ${JWT_CACHE_SIZE}`,
      };
    },
  },
  {
    id: 'c',
    title: 'API key, cached',
    policy: 'api-key.yaml',
    generator: 'h2load',
    target: { ceiling: 0.85, p99x: 1.5, p99Ms: 0.3 },
    async prepare(ctx) {
      requireModule('keys/cli.ts', 'the keys CLI');
      const { env, key } = await ctx.apiKey();
      return { env, requests: [request(ITEM_PATH, { 'x-api-key': key })], expect: { kind: 'ok' } };
    },
  },
  {
    id: 'g',
    title: 'session cookie, cached (HTTP lookup)',
    policy: 'session.yaml',
    generator: 'h2load',
    target: { vs: 'a' },
    async prepare(ctx) {
      requireModule('lookup/cached-lookup.ts', 'the lookup module');
      const target = await ctx.sessionTarget();
      return { env: { BENCH_SESSION_URL: target.url }, requests: [request(ITEM_PATH, { cookie: `theme=dark; better-auth.session_token=${target.token}` })], expect: { kind: 'ok' } };
    },
  },
  {
    // Issue 16: an opaque token introspected (RFC 7662) by HTTP, answered from the lookup cache.
    id: 'l',
    title: 'opaque token, cached (introspection)',
    policy: 'introspection.yaml',
    generator: 'h2load',
    target: { vs: 'a' },
    async prepare(ctx) {
      requireModule('identity/introspection.ts', 'the introspection source');
      const target = await ctx.sessionTarget();
      return { env: { BENCH_LOOKUP_URL: target.url }, requests: [request(ITEM_PATH, bearer(target.opaqueToken))], expect: { kind: 'ok' } };
    },
  },
  {
    // Issue 16: an API key verified by an external store over HTTP, answered from the lookup cache.
    id: 'm',
    title: 'external API key, cached (HTTP lookup)',
    policy: 'api-key-external.yaml',
    generator: 'h2load',
    target: { vs: 'a' },
    async prepare(ctx) {
      requireModule('identity/api-key-external.ts', 'external API keys');
      const target = await ctx.sessionTarget();
      return { env: { BENCH_LOOKUP_URL: target.url }, requests: [request(ITEM_PATH, { 'x-api-key': target.apiKey })], expect: { kind: 'ok' } };
    },
  },
  {
    id: 'd',
    title: 'JWT cached + Redis rate limit',
    policy: 'jwt-ratelimit.yaml',
    generator: 'h2load',
    target: { ceiling: 0.7 },
    async prepare(ctx) {
      requireModule('ratelimit/redis-store.ts', 'the Redis rate-limit backend');
      if (!(await reachable(REDIS_URL))) throw new NotAvailable(`Redis is not reachable at ${REDIS_URL} (set BENCH_REDIS_URL)`);
      const env = { ...(await jwtEnv(ctx)), BENCH_REDIS_URL: REDIS_URL, BENCH_REDIS_PREFIX: `bench:${process.pid}:${Date.now()}:` };
      const token = await ctx.token();
      return { env, requests: [request(ITEM_PATH, bearer(token))], expect: { kind: 'ok' } };
    },
  },
  {
    // Issue 21: (a) with the identity token for upstreams on. Compare with (a) in the same run
    // (x base): a token is signed once per caller and reuse window.
    id: 'k',
    title: '(a) + identity token',
    policy: 'jwt-identity.yaml',
    generator: 'h2load',
    target: { vs: 'a' },
    async prepare(ctx) {
      requireModule('mesh/identity-token.ts', 'the identity token');
      const env = { ...(await jwtEnv(ctx)), BENCH_IDENTITY_KEY: await ctx.identityKey() };
      const token = await ctx.token();
      return { env, requests: [request(ITEM_PATH, bearer(token))], expect: { kind: 'ok' } };
    },
  },
  {
    id: 'e',
    title: 'deny path (401, no credential)',
    policy: 'minimal.yaml',
    generator: 'h2load',
    target: { ceiling: 0.85, p99x: 1.5, p99Ms: 0.3 },
    async prepare() {
      return { env: {}, requests: [request(ITEM_PATH)], expect: { kind: 'deny', httpStatus: 401 } };
    },
  },
  {
    id: 'f',
    title: 'public route',
    policy: 'minimal.yaml',
    generator: 'h2load',
    target: { ceiling: 0.85, p99x: 1.5, p99Ms: 0.3 },
    async prepare() {
      return { env: {}, requests: [publicRouteRequest()], expect: { kind: 'ok' } };
    },
  },
  tracedScenario('a1', 0.01),
  tracedScenario('a100', 1),
];
