// The decision log (issue 22): lines written straight to the destination are the lines pino would
// write; the server's stdout destination is bounded and counts every line it drops (exported as
// portcullis_log_lines_dropped_total); the default logs every denial and a sample of allows.

import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { DecisionLog, type DecisionEntry } from '../../src/observability/decision-log.js';
import { createLogger, droppedLinesOf, serverDestination } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Authorizer } from '../../src/pipeline/authorizer.js';
import { compilePolicy } from '../../src/policy/compile.js';
import { parsePolicyWithLocator } from '../../src/policy/load.js';
import { ResourcePool } from '../../src/runtime.js';
import type { Decision, RequestAttributes } from '../../src/types.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-decision-log-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A destination that keeps every line written to it. */
function capture(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(line);
      done();
    },
  });
  return { stream, lines };
}

const ENTRY: DecisionEntry = {
  requestId: 'req-"1"\n',
  decision: 'deny',
  reason: 'token_expired',
  route: 'GET /v1/items/{id}',
  method: 'GET',
  host: 'api.example.com',
  path: '/v1/items/\u00e9\u2028',
  auth: 'jwt',
  tenant: 'acme',
  subject: undefined,
  keyId: undefined,
  status: 401,
  detail: 'exp 2026-11-30T00:00:00Z',
  latencyMs: 0.123,
  trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
  span_id: undefined,
};

describe('decision lines', () => {
  it('are byte for byte the line pino writes for the same entry (apart from the time)', async () => {
    const { stream, lines } = capture();
    const logger = createLogger({ level: 'info', destination: stream });
    logger.info(ENTRY, 'decision');
    logger.error({ ...ENTRY, subject: 'user-1', keyId: 'k1', status: undefined, detail: undefined }, 'check failed inside Portcullis (denied 503)');
    const log = new DecisionLog(logger);
    log.write(ENTRY, 'info', 'decision');
    log.write({ ...ENTRY, subject: 'user-1', keyId: 'k1', status: undefined, detail: undefined }, 'error', 'check failed inside Portcullis (denied 503)');
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines).toHaveLength(4);
    const withoutTime = (line: string) => line.replace(/"time":"[^"]+"/, '"time":"T"');
    expect(withoutTime(lines[2]!)).toBe(withoutTime(lines[0]!));
    expect(withoutTime(lines[3]!)).toBe(withoutTime(lines[1]!));
    expect(JSON.parse(lines[2]!)).toMatchObject({ level: 'info', service: 'portcullis', requestId: ENTRY.requestId, path: ENTRY.path, msg: 'decision' });
  });

  it('follow the logger level', async () => {
    const { stream, lines } = capture();
    const logger = createLogger({ level: 'warn', destination: stream });
    const log = new DecisionLog(logger);
    log.write(ENTRY, 'info', 'decision');
    logger.level = 'info';
    log.write(ENTRY, 'info', 'decision');
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines).toHaveLength(1);
  });
});

describe('the server log destination', () => {
  it('holds at most maxBufferBytes for a slow stdout and counts every line it drops', async () => {
    const file = path.join(dir, 'out.log');
    const destination = serverDestination({ dest: openSync(file, 'w'), maxBufferBytes: 4096 });
    const logger = createLogger({ level: 'info', destination });
    const log = new DecisionLog(logger);
    // All in one turn of the event loop: nothing can be written until it ends.
    const written = 1000;
    for (let i = 0; i < written; i++) log.write({ ...ENTRY, requestId: `r${i}` }, 'info', 'decision');
    expect(destination.droppedLines).toBeGreaterThan(0);
    expect(droppedLinesOf(logger)).toBe(destination.droppedLines);
    await new Promise((resolve) => {
      destination.on('close', resolve);
      destination.end();
    });
    const kept = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    expect(kept.length).toBeLessThanOrEqual(Math.ceil(4096 / 200));
    expect(kept.length + destination.droppedLines).toBe(written);
    for (const line of kept) expect(JSON.parse(line).msg).toBe('decision');
  });

  it('exports the count as portcullis_log_lines_dropped_total', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    let dropped = 0;
    metrics.observeLogDrops(() => dropped);
    dropped = 7;
    expect(await metrics.registry.getSingleMetricAsString('portcullis_log_lines_dropped_total')).toMatch(/^portcullis_log_lines_dropped_total 7$/m);
    dropped = 9;
    expect(await metrics.registry.getSingleMetricAsString('portcullis_log_lines_dropped_total')).toMatch(/^portcullis_log_lines_dropped_total 9$/m);
  });
});

describe('server.decisionLog', () => {
  const POLICY = (server: string) => `
server: { ${server} }
routes:
  - { match: { path: /health }, public: true }
default: deny
`;

  function authorizer(server: string) {
    const { stream, lines } = capture();
    const logger = createLogger({ level: 'info', destination: stream });
    const metrics = new Metrics({ defaultMetrics: false });
    const runtime = { clock: systemClock, logger, metrics, resources: new ResourcePool(), env: {} };
    const { document, locate } = parsePolicyWithLocator(POLICY(server), 'policy.yaml', {});
    const policy = compilePolicy(document, runtime, 'policy.yaml', locate);
    return { authorizer: new Authorizer({ current: () => policy }, logger, metrics), lines };
  }

  const request = (requestPath: string): RequestAttributes => ({
    requestId: 'r',
    method: 'GET',
    host: 'api.example.com',
    path: requestPath,
    query: '',
    scheme: 'https',
    protocol: 'HTTP/2',
    headers: new Map(),
    sourceAddress: '203.0.113.7',
    contextExtensions: new Map(),
  });

  async function run(server: string, allows: number, denies: number) {
    const { authorizer: a, lines } = authorizer(server);
    for (let i = 0; i < allows; i++) expect((a.check(request('/health')) as Decision).allowed).toBe(true);
    for (let i = 0; i < denies; i++) expect((a.check(request('/private')) as Decision).allowed).toBe(false);
    await new Promise((resolve) => setImmediate(resolve));
    const logged = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'decision');
    return { allow: logged.filter((l) => l.decision === 'allow').length, deny: logged.filter((l) => l.decision === 'deny').length };
  }

  it('by default logs every denial and one allow in a hundred, evenly spaced', async () => {
    expect(await run('', 300, 5)).toEqual({ allow: 3, deny: 5 });
  });

  it('logs the share of allows decisionLogAllowRate asks for', async () => {
    expect(await run('decisionLogAllowRate: 0.25', 100, 2)).toEqual({ allow: 25, deny: 2 });
    expect(await run('decisionLog: sample, decisionLogAllowRate: 1', 10, 1)).toEqual({ allow: 10, deny: 1 });
  });

  it('all, deny and none keep their meaning', async () => {
    expect(await run('decisionLog: all', 50, 3)).toEqual({ allow: 50, deny: 3 });
    expect(await run('decisionLog: deny', 50, 3)).toEqual({ allow: 0, deny: 3 });
    expect(await run('decisionLog: none', 50, 3)).toEqual({ allow: 0, deny: 0 });
  });
  it('keeps every line small whatever the client sends: path, host and method are cut, with how much more there was (attacker review)', async () => {
    const { authorizer: a, lines } = authorizer('decisionLog: all');
    const long = `/private/${'a'.repeat(30_000)}`;
    expect((a.check({ ...request(long), host: `${'h'.repeat(5_000)}.example.com`, method: 'X'.repeat(100) }) as Decision).allowed).toBe(false);
    await new Promise((resolve) => setImmediate(resolve));
    const line = lines.find((l) => l.includes('"msg":"decision"'))!;
    expect(line.length).toBeLessThan(3_000);
    const parsed = JSON.parse(line) as { path: string; host: string; method: string };
    expect(parsed.path).toBe(`${long.slice(0, 1024)}…(+${long.length - 1024})`);
    expect(parsed.host.endsWith(`…(+${5_012 - 300})`)).toBe(true);
    expect(parsed.method).toHaveLength(32 + '…(+68)'.length);
  });
});
