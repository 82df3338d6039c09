// Listening on a port the same way for every authorization listener (gRPC, HTTP, the cluster
// primary's hand-off): a deep accept queue, so a burst of connections is accepted (and judged by
// the limits) rather than left to the kernel's SYN retries; the first error rejects, later ones
// are logged.

import type { AddressInfo, Server } from 'node:net';
import type { Logger } from '../observability/logger.js';

export function listenOn(server: Server, bind: string, port: number, logger: Logger, what: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: bind, backlog: 4096 }, () => {
      server.off('error', reject);
      server.on('error', (err: Error) => logger.error({ err: err.message }, `${what} error`));
      resolve((server.address() as AddressInfo).port);
    });
  });
}
