// gRPC transport: envoy.service.auth.v3.Authorization/Check and grpc.health.v1.Health on one
// server. A thin adapter: bytes in → decodeCheckRequest → Authorizer → encodeCheckResponse.
// Raw Buffers pass through grpc-js (identity serializers) so decoding errors are ours to answer.

import * as grpc from '@grpc/grpc-js';
import type { Authorizer } from '../../pipeline/authorizer.js';
import { internalError } from '../../pipeline/authorize.js';
import type { Logger } from '../../observability/logger.js';
import { isPromise, type Decision, type RequestAttributes } from '../../types.js';
import { decodeCheckRequest, NO_HTTP_ATTRIBUTES, WireError } from './decode.js';
import { encodeCheckResponse } from './encode.js';
import { HealthService } from './health.js';

const passThrough = {
  requestSerialize: (value: Buffer) => value,
  requestDeserialize: (value: Buffer) => value,
  responseSerialize: (value: Buffer) => value,
  responseDeserialize: (value: Buffer) => value,
};

export const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization';

const authorizationDefinition: grpc.ServiceDefinition = {
  Check: {
    path: `/${AUTHORIZATION_SERVICE}/Check`,
    requestStream: false,
    responseStream: false,
    originalName: 'check',
    ...passThrough,
  },
};

export interface GrpcServerOptions {
  bind: string;
  port: number;
  /** Largest CheckRequest accepted (bytes). Envoy's default header limit is 60 KiB; bodies add more. */
  maxMessageBytes?: number;
}

export class GrpcTransport {
  readonly health = new HealthService([AUTHORIZATION_SERVICE]);
  private readonly server: grpc.Server;
  private inFlight = 0;
  boundPort = 0;

  constructor(
    private readonly authorizer: Authorizer,
    private readonly logger: Logger,
    private readonly options: GrpcServerOptions,
  ) {
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': options.maxMessageBytes ?? 4 * 1024 * 1024,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
      // Channelz bookkeeping runs on every call; Portcullis serves no channelz service to read it.
      'grpc.enable_channelz': 0,
    });
    this.server.addService(authorizationDefinition, { Check: this.check });
    this.server.addService(this.health.definition, this.health.implementation);
  }

  async start(): Promise<number> {
    const address = this.options.bind.includes(':') ? `[${this.options.bind}]` : this.options.bind;
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(`${address}:${this.options.port}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      );
    });
    return this.boundPort;
  }

  /** Checks currently being answered (drain waits for zero). */
  get pending(): number {
    return this.inFlight;
  }

  /** Stop accepting calls, let in-flight ones finish, give up after `timeoutMs`. */
  async shutdown(timeoutMs: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.logger.warn({ pending: this.inFlight }, 'drain timeout; closing remaining gRPC calls');
        this.server.forceShutdown();
        resolve();
      }, timeoutMs);
      timer.unref();
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private readonly check = (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void => {
    let request: ReturnType<typeof decodeCheckRequest>;
    try {
      request = decodeCheckRequest(call.request);
    } catch (err) {
      // Not a CheckRequest at all: the one case that is an RPC error rather than a denial.
      const details = err instanceof WireError ? `malformed CheckRequest: ${err.message}` : 'malformed CheckRequest';
      this.logger.info({ err: details }, 'rejected undecodable CheckRequest');
      callback({ code: grpc.status.INVALID_ARGUMENT, details });
      return;
    }
    this.inFlight++;
    let decision;
    try {
      decision = this.authorizer.check(request, request[NO_HTTP_ATTRIBUTES] === true);
    } catch (err) {
      decision = internalError({ realm: 'portcullis' }, request, 'unknown', err);
    }
    if (isPromise(decision)) {
      decision.then(
        (d) => this.reply(callback, request, d),
        (err: unknown) => this.reply(callback, request, internalError({ realm: 'portcullis' }, request, 'unknown', err)),
      );
    } else {
      this.reply(callback, request, decision);
    }
  };

  private reply(callback: grpc.sendUnaryData<Buffer>, request: RequestAttributes, decision: Decision): void {
    this.inFlight--;
    let bytes: Buffer;
    try {
      bytes = encodeCheckResponse(decision);
    } catch (err) {
      this.logger.error({ err: (err as Error).message, requestId: request.requestId }, 'failed to encode CheckResponse; answering 503');
      bytes = encodeCheckResponse(internalError({ realm: 'portcullis' }, request, decision.route, err));
    }
    callback(null, bytes);
  }
}
