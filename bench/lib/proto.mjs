// Check requests and responses for the bench, built from proto/ with @grpc/proto-loader (the same
// definitions the null server uses), plus a grpc-js client for the sanity call before each run.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';

const definition = protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', {
  includeDirs: [path.join(ROOT, 'proto')],
  keepCase: true,
  longs: String,
  oneofs: true,
});
const check = definition['envoy.service.auth.v3.Authorization'].Check;
const AuthorizationClient = grpc.loadPackageDefinition(definition).envoy.service.auth.v3.Authorization;

/**
 * A CheckRequest shaped like the ones Envoy sends for an HTTP/1.1 request through a sidecar:
 * peer addresses, request time, and the request line and headers (the `headers` map encoding).
 */
export function checkRequest({ method = 'GET', path: requestPath, host = 'api.example.com', headers = {}, requestId }) {
  const [pathOnly, query = ''] = requestPath.split('?');
  const allHeaders = {
    ':authority': host,
    ':method': method,
    ':path': requestPath,
    ':scheme': 'https',
    'user-agent': 'bench-client/1.0',
    accept: 'application/json',
    'x-forwarded-proto': 'https',
    'x-request-id': requestId,
    ...headers,
  };
  return {
    attributes: {
      source: { address: { socket_address: { address: '10.1.2.3', port_value: 51234 } } },
      destination: { address: { socket_address: { address: '10.1.9.9', port_value: 8080 } } },
      request: {
        time: { seconds: String(Math.floor(Date.now() / 1000)), nanos: 0 },
        http: {
          id: requestId,
          method,
          headers: allHeaders,
          path: pathOnly,
          host,
          scheme: 'https',
          query,
          protocol: 'HTTP/1.1',
        },
      },
    },
  };
}

/** Serialized CheckRequest message. */
export function encodeCheckRequest(request) {
  return check.requestSerialize(request);
}

/** A gRPC length-prefixed message: flag 0 (uncompressed), uint32 big-endian length, message. */
export function grpcFrame(message) {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

export function decodeCheckResponse(message) {
  return check.responseDeserialize(message);
}

/** A short description of a decoded CheckResponse: "ok" or "deny <http status>", and its gRPC code. */
export function describeResponse(response) {
  const code = response.status?.code ?? 0;
  if (response.http_response === 'ok_response' || response.ok_response) return { kind: 'ok', code, httpStatus: 200 };
  if (response.http_response === 'denied_response' || response.denied_response) {
    return { kind: 'deny', code, httpStatus: response.denied_response.status?.code };
  }
  return { kind: 'none', code, httpStatus: undefined };
}

/**
 * One Check through grpc-js: proves the server answers with a real CheckResponse (h2load only
 * sees HTTP 200; a gRPC error would hide in the trailers). Resolves the decoded response.
 */
export function sanityCheck(port, request, timeoutMs = 3000) {
  const client = new AuthorizationClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.Check(request, { deadline: Date.now() + timeoutMs }, (error, response) => {
      client.close();
      if (error) reject(new Error(`gRPC ${grpc.status[error.code] ?? error.code}: ${error.details || error.message}`));
      else resolve(response);
    });
  });
}

/**
 * Wait until a server just started answers `request` (up to ~15 s); throws with the server's log
 * reason when it exits or never answers. `server` is what startProcess() returned.
 */
export async function waitUntilServing(port, request, server) {
  for (let i = 0; ; i++) {
    try {
      return await sanityCheck(port, request, 1000);
    } catch (error) {
      if (i > 60 || !server.running) throw new Error(`the server did not start: ${server.logReason() || error.message}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
