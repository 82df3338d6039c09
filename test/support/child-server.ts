// Portcullis as the chart runs it: `dist/cli.js serve` in a child process with the chart's V8
// settings, on loopback, so a test can measure its RSS while attacking it. PORTCULLIS_TEST_CLI
// points at another build (e.g. an older commit's, to see a test fail before a fix).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The chart's defaults (charts/portcullis/values.yaml: maxHeapMb, maxSemiSpaceMb). */
export const CHART_NODE_OPTIONS = '--max-old-space-size=160 --max-semi-space-size=2';
/** The chart's container memory limit. */
export const CHART_MEMORY_LIMIT_MB = 256;

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface ChildServer {
  readonly child: ChildProcess;
  readonly grpcPort: number;
  readonly httpPort: number;
  /** Resident set size now, MB. */
  rssMb(): number;
  /** Highest RSS seen by the sampler since start (or the last resetPeak), MB. */
  peakRssMb(): number;
  resetPeak(): void;
  /** The value of one sample line of /metrics (`name{labels}`), or 0 when absent. */
  metric(sample: string): Promise<number>;
  logs(): string;
  /** Whether the process is still running (did not crash). */
  alive(): boolean;
  close(): Promise<void>;
}

export async function startChildServer(policy: string, args: string[] = []): Promise<ChildServer> {
  // A port found free can be taken (by another process's outgoing connection) before the child
  // binds it: then start again on new ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(policy, args);
    } catch (err) {
      if (attempt >= 3 || !(err instanceof PortTakenError)) throw err;
    }
  }
}

class PortTakenError extends Error {}

async function startOnce(policy: string, args: string[]): Promise<ChildServer> {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'pc-child-')), 'policy.yaml');
  writeFileSync(file, policy);
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const cli = process.env.PORTCULLIS_TEST_CLI ?? path.join(ROOT, 'dist/cli.js');
  const child = spawn(process.execPath, [cli, 'serve', '--config', file, '--bind', '127.0.0.1', '--grpc-port', String(grpcPort), '--http-port', String(httpPort), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: CHART_NODE_OPTIONS, PORTCULLIS_LOG_LEVEL: 'warn' },
  });
  let logs = '';
  const keep = (d: Buffer) => {
    logs += d.toString();
    if (logs.length > 64 * 1024) logs = logs.slice(-32 * 1024); // bounded
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let exited = false;
  child.once('exit', () => (exited = true));
  const rssMb = (): number => {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      return m ? Number(m[1]) / 1024 : 0;
    } catch {
      return 0;
    }
  };
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb())), 50);
  const until = Date.now() + 40_000;
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.status === 200, () => false);
    if (ok) break;
    if (exited || Date.now() > until) {
      clearInterval(sampler);
      child.kill('SIGKILL');
      if (exited && logs.includes('EADDRINUSE')) throw new PortTakenError(logs);
      throw new Error(`server did not become ready: ${logs}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    grpcPort,
    httpPort,
    rssMb,
    peakRssMb: () => Math.max(peak, rssMb()),
    resetPeak: () => (peak = rssMb()),
    metric: async (sample) => {
      const text = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text(), () => '');
      for (const line of text.split('\n')) if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
      return 0;
    },
    logs: () => logs,
    alive: () => !exited,
    close: async () => {
      clearInterval(sampler);
      if (exited) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await gone;
    },
  };
}
