// Integration tests talk to the real Redis and PostgreSQL of the machine. In CI (CI=true) an
// unreachable service is a FAILURE; on a developer machine without them the suites skip with a
// clear message.

import net from 'node:net';

export const REDIS_URL = process.env.PORTCULLIS_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const DATABASE_URL = process.env.PORTCULLIS_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

function reachable(url: string, defaultPort: number): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname || '127.0.0.1', port: Number(port || defaultPort) });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Resolves true when the service answers. When it does not: throws in CI, so the suite fails;
 * elsewhere prints why the suite is skipped and resolves false (use with describe.skipIf).
 */
async function requireService(name: string, url: string, defaultPort: number): Promise<boolean> {
  if (await reachable(url, defaultPort)) return true;
  const message = `${name} is not reachable at ${url}`;
  if (process.env.CI) throw new Error(`${message}: integration tests need it in CI (.ci/run starts it)`);
  console.warn(`SKIPPING ${name} integration tests: ${message} (set CI=true to make this a failure)`);
  return false;
}

export const redisAvailable = (): Promise<boolean> => requireService('Redis', REDIS_URL, 6379);
export const postgresAvailable = (): Promise<boolean> => requireService('PostgreSQL', DATABASE_URL, 5432);
