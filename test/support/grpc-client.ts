// A real grpc-js client built from proto/ with @grpc/proto-loader — the way any Envoy-compatible
// peer would see Portcullis — used by the end-to-end tests.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import path from 'node:path';
import protobuf from 'protobufjs';
import { fileURLToPath } from 'node:url';

const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../proto');

const definition = protoLoader.loadSync(['envoy/service/auth/v3/external_auth.proto', 'grpc/health/v1/health.proto'], {
  includeDirs: [PROTO_DIR],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
});
const loaded = grpc.loadPackageDefinition(definition) as any;

export interface HeaderOption {
  header: { key: string; value?: string; raw_value?: Buffer };
  append_action?: string;
}

export interface CheckResponse {
  status?: { code?: number; message?: string };
  http_response?: 'ok_response' | 'denied_response' | 'error_response';
  ok_response?: { headers?: HeaderOption[]; headers_to_remove?: string[]; response_headers_to_add?: HeaderOption[] };
  denied_response?: { status?: { code?: string | number }; headers?: HeaderOption[]; body?: string };
  /** Envoy 1.37+: a failure of the service itself (dependencyFailure: error). */
  error_response?: { status?: { code?: string | number }; headers?: HeaderOption[]; body?: string };
  dynamic_metadata?: { fields?: Record<string, { stringValue?: string }> }; // protobufjs' built-in Struct is camelCase
}

export interface CheckInit {
  method?: string;
  path?: string;
  host?: string;
  headers?: Record<string, string>;
  /** Send headers as header_map with raw_value bytes (Envoy's encode_raw_headers). */
  raw?: boolean;
  /** Extra header_map entries (duplicates allowed) when raw. */
  rawHeaders?: [string, Buffer | string][];
  sourceAddress?: string;
  id?: string;
  /** HTTP scheme Envoy reports (default https). */
  scheme?: string;
  /** source.principal: the URI SAN of the client certificate Envoy verified (mTLS). */
  principal?: string;
  /** source.certificate: the URL-encoded PEM client certificate (include_peer_certificate). */
  certificate?: string;
  /** How long the call may take, connecting included (default 5 s). */
  deadlineMs?: number;
}

export class CheckClient {
  readonly auth: any;
  readonly health: any;
  /** `credentials`: TLS (grpc.credentials.createSsl) for a TLS listener; plaintext by default. */
  constructor(port: number, credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}) {
    const address = `127.0.0.1:${port}`;
    this.auth = new loaded.envoy.service.auth.v3.Authorization(address, credentials, options);
    this.health = new loaded.grpc.health.v1.Health(address, credentials, options);
  }

  static requestMessage(init: CheckInit): Record<string, unknown> {
    const headers = { ':method': init.method ?? 'GET', ':path': init.path ?? '/', ':authority': init.host ?? 'api.example.com', ...init.headers };
    const http: Record<string, unknown> = {
      id: init.id ?? 'req-e2e',
      method: init.method ?? 'GET',
      path: init.path ?? '/',
      host: init.host ?? 'api.example.com',
      scheme: init.scheme ?? 'https',
      protocol: 'HTTP/2',
    };
    if (init.raw) {
      const entries: { key: string; raw_value: Buffer }[] = Object.entries(headers).map(([key, value]) => ({ key, raw_value: Buffer.from(value, 'latin1') }));
      for (const [key, value] of init.rawHeaders ?? []) entries.push({ key, raw_value: typeof value === 'string' ? Buffer.from(value, 'latin1') : value });
      http.header_map = { headers: entries };
    } else {
      http.headers = headers;
    }
    return {
      attributes: {
        source: {
          address: { socket_address: { address: init.sourceAddress ?? '198.51.100.10', port_value: 43210 } },
          ...(init.principal !== undefined ? { principal: init.principal } : {}),
          ...(init.certificate !== undefined ? { certificate: init.certificate } : {}),
        },
        // Envoy also sends its own side of the connection; its principal is never the caller's.
        destination: { principal: 'spiffe://cluster.local/ns/edge/sa/gateway' },
        request: { http },
      },
    };
  }

  check(init: CheckInit): Promise<CheckResponse> {
    return this.checkMessage(CheckClient.requestMessage(init), init.deadlineMs);
  }

  checkMessage(message: Record<string, unknown>, deadlineMs = 5000): Promise<CheckResponse> {
    return new Promise((resolve, reject) => {
      this.auth.Check(message, { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, response: CheckResponse) => (err ? reject(err) : resolve(response)));
    });
  }

  /** Send arbitrary bytes as the Check request body (garbage-protobuf tests). */
  checkRaw(bytes: Buffer): Promise<Buffer> {
    const client = new grpc.Client(this.auth.getChannel().getTarget(), grpc.credentials.createInsecure());
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        '/envoy.service.auth.v3.Authorization/Check',
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        { deadline: Date.now() + 5000 } as grpc.CallOptions,
        (err, value) => {
          client.close();
          if (err) reject(err);
          else resolve(value!);
        },
      );
    });
  }

  healthCheck(service = ''): Promise<{ status: string }> {
    return new Promise((resolve, reject) => {
      this.health.Check({ service }, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, response: { status: string }) => (err ? reject(err) : resolve(response)));
    });
  }

  close(): void {
    this.auth.close();
    this.health.close();
  }
}

/** Header value from an ok/denied response's HeaderValueOption list. */
export function headerOf(options: HeaderOption[] | undefined, name: string): string | undefined {
  const hit = options?.find((o) => o.header.key === name);
  if (!hit) return undefined;
  return hit.header.value ?? hit.header.raw_value?.toString();
}

// protobufjs types for building and reading raw bytes in decoder/encoder tests.
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
root.loadSync('envoy/service/auth/v3/external_auth.proto', { keepCase: true });
export const checkRequestType = root.lookupType('envoy.service.auth.v3.CheckRequest');
export const checkResponseType = root.lookupType('envoy.service.auth.v3.CheckResponse');

const statusCodes = root.lookupEnum('envoy.type.v3.StatusCode').values;

/** HttpStatus.code as a number whether proto-loader gave the enum name or the number. */
export function httpStatusNumber(code: string | number | undefined): number {
  if (typeof code === 'number') return code;
  if (code === undefined) return 0;
  return statusCodes[code] ?? Number(code);
}
