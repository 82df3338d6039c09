// Review of issue 13 §4 ("many small streams"): health Watch streams live as long as the client
// wants. Unbounded, 300 connections × 128 Watch streams took a child process with the chart's V8
// settings to 299 MB RSS (chart limit 256 Mi; 1,024 connections would be ~800 MB). They are now
// bounded per connection and in all; the excess is answered RESOURCE_EXHAUSTED at once.
import http2 from 'node:http2';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_WATCHES, MAX_WATCHES_PER_CONNECTION } from '../../src/transport/grpc/health.js';
import { startTestServer, type TestServer } from '../support/server.js';

const WATCH = '/grpc.health.v1.Health/Watch';
const POLICY = `server:\n  decisionLog: none\nroutes:\n  - { name: health, match: { path: /health }, public: true }\n`;

let server: TestServer | undefined;
const sessions: http2.ClientHttp2Session[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) s.destroy();
  await server?.close();
  server = undefined;
});

/** Open `count` Watch streams on a new connection; resolves with how many stream and how many were refused (grpc-status). */
async function watches(port: number, count: number): Promise<{ streaming: number; refused: string[] }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  sessions.push(session);
  session.on('error', () => undefined);
  const outcomes = await Promise.all(
    Array.from({ length: count }, () => {
      const stream = session.request({ ':method': 'POST', ':path': WATCH, 'content-type': 'application/grpc', te: 'trailers' });
      stream.on('error', () => undefined);
      stream.end(Buffer.alloc(5)); // an empty HealthCheckRequest, framed
      return new Promise<string>((resolve) => {
        stream.once('response', (headers) => {
          if (headers['grpc-status'] !== undefined) resolve(String(headers['grpc-status']));
        });
        stream.once('data', () => resolve('streaming'));
        stream.once('close', () => resolve('closed'));
      });
    }),
  );
  return { streaming: outcomes.filter((o) => o === 'streaming').length, refused: outcomes.filter((o) => o !== 'streaming') };
}

describe('health Watch streams are bounded', () => {
  it('per connection and in all; the excess is refused RESOURCE_EXHAUSTED', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pc-watch-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, POLICY);
    server = await startTestServer(file);
    const port = server.server.grpcPort;

    const one = await watches(port, 20);
    expect(one.streaming).toBe(MAX_WATCHES_PER_CONNECTION);
    expect(new Set(one.refused)).toEqual(new Set(['8']));

    let streaming = one.streaming;
    const refused: string[] = [];
    const connections = Math.ceil(MAX_WATCHES / MAX_WATCHES_PER_CONNECTION) + 4;
    for (let i = 1; i < connections; i += 16) {
      const batch = await Promise.all(Array.from({ length: Math.min(16, connections - i) }, () => watches(port, MAX_WATCHES_PER_CONNECTION)));
      for (const b of batch) {
        streaming += b.streaming;
        refused.push(...b.refused);
      }
    }
    expect(streaming).toBe(MAX_WATCHES);
    expect(refused.length).toBeGreaterThan(0);
    expect(new Set(refused)).toEqual(new Set(['8']));
    // checks keep being answered
    expect((await server.client.check({ path: '/health' })).http_response).toBe('ok_response');
  }, 60_000);
});
