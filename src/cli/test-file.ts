// The format of policy test files (`portcullis test`, examples/*.test.yaml). Strict like the
// policy: an unknown key is an error.

import { z } from 'zod';

const headerMap = z.record(z.string(), z.string());

export const tokenFixtureSchema = z.union([
  z.string().min(1),
  z.strictObject({
    /** Policy name of the issuer; the token is signed with the run's test key for it. */
    issuer: z.string().min(1),
    /** Claims on top of iss, aud, sub, iat, exp (set from the issuer and the frozen clock); null removes one. */
    claims: z.record(z.string(), z.unknown()).default({}),
    /** A hostile or broken token instead of a good one. */
    variant: z.enum(['expired', 'not-yet-valid', 'wrong-key', 'alg-none', 'tampered']).optional(),
    /** Lifetime of the token (default 1h). */
    expiresIn: z.string().optional(),
  }),
]);

export const keyFixtureSchema = z.strictObject({
  tenant: z.string().min(1),
  scopes: z.array(z.string().min(1)).default([]),
  /** Key name (x-auth-subject with subject: name); defaults to the fixture's name. */
  name: z.string().min(1).optional(),
  /** Key prefix; the policy's keyStore.defaultPrefix when absent. A prefix of an importedFormat mints a key of that format. */
  prefix: z.string().min(1).optional(),
  environment: z.string().min(1).optional(),
  /** The key expired a day before the frozen clock. */
  expired: z.boolean().default(false),
  revoked: z.boolean().default(false),
});

export const expectSchema = z.strictObject({
  decision: z.enum(['allow', 'deny']).optional(),
  status: z.number().int().optional(),
  reason: z.string().optional(),
  route: z.string().optional(),
  /** Header → value that must be set upstream; null: must not be set. */
  upstreamHeaders: z.record(z.string(), z.string().nullable()).optional(),
  /** Headers that must be removed upstream. */
  removedHeaders: z.array(z.string()).optional(),
  /** Header → value the client must get (WWW-Authenticate, Retry-After, RateLimit...); null: absent. */
  responseHeaders: z.record(z.string(), z.string().nullable()).optional(),
}).refine((e) => Object.values(e).some((v) => v !== undefined), { message: 'expect states nothing: give decision, status, reason, route or headers' });
export type Expectation = z.output<typeof expectSchema>;

const requestSchema = z.union([
  z.string().regex(/^[A-Za-z]+ \S+$/, 'must be "METHOD URL"'),
  z.strictObject({
    method: z.string().default('GET'),
    url: z.string(),
    headers: headerMap.default({}),
    sourceIp: z.string().optional(),
    /** The workload identity the proxy verified (Envoy's source.principal, e.g. a SPIFFE ID). */
    sourcePrincipal: z.string().min(1).optional(),
  }),
]);

export const caseSchema = z.strictObject({
  name: z.string().min(1),
  request: requestSchema,
  /** Extra headers; values may use {{token}}, {{apiKey}} and {{env:NAME}}. */
  headers: headerMap.default({}),
  sourceIp: z.string().optional(),
  /** The workload identity the proxy verified (Envoy's source.principal, e.g. a SPIFFE ID). */
  sourcePrincipal: z.string().min(1).optional(),
  /** Sent as Authorization: Bearer unless a header uses {{token}}. */
  token: tokenFixtureSchema.optional(),
  /** Name of a key of `keys:`; sent as x-api-key unless a header uses {{apiKey}}. */
  apiKey: z.string().min(1).optional(),
  /** Send the request this many times; the expectations are about the last one. */
  repeat: z.number().int().min(1).max(10_000).default(1),
  /** Move the frozen clock this far before the request (e.g. 61s). */
  advance: z.string().optional(),
  expect: expectSchema,
});
export type TestCase = z.output<typeof caseSchema>;

export const testFileSchema = z.strictObject({
  /** The policy under test, relative to this file (--config overrides it). */
  policy: z.string().min(1).optional(),
  /** Environment for ${VAR} in the policy (over the real environment). */
  env: z.record(z.string(), z.string()).default({}),
  /** The frozen clock of every case (ISO 8601; default 2026-01-01T00:00:00Z). */
  clock: z.string().default('2026-01-01T00:00:00Z'),
  /** API keys created in a throwaway store for the run, by fixture name. */
  keys: z.record(z.string(), keyFixtureSchema).default({}),
  cases: z.array(caseSchema).min(1),
});
export type TestFile = z.output<typeof testFileSchema>;
