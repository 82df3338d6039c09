// The yardstick: a plain grpc-js ext_authz server built with @grpc/proto-loader on proto/, answering
// every Check with a fixed OK. It decodes every request into proto-loader objects, as a typical
// hand-written ext_authz service would. Keep it fixed and simple: every ratio is measured against it.
//
//   node bench/null-server.mjs --port 9101
// Prints "listening <port>" once bound; stops on SIGTERM/SIGINT.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });

const definition = protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', {
  includeDirs: [path.join(root, 'proto')],
  keepCase: true,
});
const authorization = grpc.loadPackageDefinition(definition).envoy.service.auth.v3.Authorization;

const server = new grpc.Server();
server.addService(authorization.service, {
  Check(_call, callback) {
    callback(null, { status: { code: 0 }, ok_response: {} });
  },
});

server.bindAsync(`127.0.0.1:${values.port}`, grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) {
    console.error(error.message);
    process.exit(1);
  }
  console.log(`listening ${port}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => server.tryShutdown(() => process.exit(0)));
}
