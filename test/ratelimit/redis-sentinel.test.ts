// The sentinel topology: a master and one redis-sentinel started here; Portcullis asks the
// sentinel where the master is and counts there.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/runtime.js';
import { testRuntime } from '../support/runtime.js';
import { compile, input, limiterAt, outcome } from './helpers.js';
import { freePort, RedisServer, redisServerInstalled } from './redis-server.js';

describe.skipIf(!redisServerInstalled())('redis sentinel', () => {
  let master: RedisServer;
  let sentinel: RedisServer;
  let runtime: Runtime;

  beforeAll(async () => {
    master = new RedisServer(await freePort());
    await master.start();
    const config = `sentinel monitor portcullis-test 127.0.0.1 ${master.port} 1\nsentinel down-after-milliseconds portcullis-test 5000\n`;
    sentinel = new RedisServer(await freePort(), ['--sentinel'], config);
    await sentinel.start();
  });

  afterAll(async () => {
    await runtime?.resources.closeAll();
    await sentinel.stop();
    await master.stop();
  });

  it('finds the master through the sentinel and limits there', async () => {
    runtime = testRuntime();
    const policy = compile(
      `
routes: [{ name: api, match: { pathPrefix: / } }]
rateLimits:
  backend: { redis: { sentinel: { name: portcullis-test, sentinels: ["127.0.0.1:${sentinel.port}"] }, timeout: 2s } }
  policies: [{ name: per-ip, key: [ip], window: 1m, limit: 2 }]
`,
      runtime,
    );
    await policy.ready;
    const limiter = limiterAt(policy, '/x');
    const results = [];
    for (let i = 0; i < 3; i++) results.push(outcome(await limiter.evaluate(input())));
    expect(results).toEqual(['allow', 'allow', 'rate_limited']);
    const admin = master.admin();
    expect(await admin.zcard('portcullis:rl:{per-ip\u001f203.0.113.7}:s')).toBe(2);
    admin.disconnect();
  });
});
