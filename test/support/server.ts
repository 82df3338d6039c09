// The real server, in-process, on loopback with free ports, plus a gRPC client for it.
import { silentLogger } from '../../src/observability/logger.js';
import { startServer, type RunningServer, type ServeOptions } from '../../src/server.js';
import { CheckClient } from './grpc-client.js';

export interface TestServer {
  readonly server: RunningServer;
  readonly client: CheckClient;
  close(): Promise<void>;
}

export async function startTestServer(configFile: string, env: Record<string, string> = {}, options: Partial<ServeOptions> = {}): Promise<TestServer> {
  const server = await startServer({
    configFile,
    grpcPort: 0,
    httpPort: 0,
    bind: '127.0.0.1',
    watch: false,
    logger: silentLogger(),
    env,
    defaultMetrics: false,
    ...options,
  });
  await server.ready;
  const client = new CheckClient(server.grpcPort);
  return {
    server,
    client,
    close: async () => {
      client.close();
      await server.shutdown();
    },
  };
}
