// grpc.health.v1.Health (Check and Watch) for Kubernetes' native gRPC probes and Envoy/Istio
// health checking. SERVING only once a policy is loaded and its dependencies are ready;
// NOT_SERVING while starting and while draining.

import * as grpc from '@grpc/grpc-js';
import { Reader, WIRE_LEN } from './wire.js';

export const enum ServingStatus {
  UNKNOWN = 0,
  SERVING = 1,
  NOT_SERVING = 2,
  SERVICE_UNKNOWN = 3,
}

const passThrough = {
  requestSerialize: (value: Buffer) => value,
  requestDeserialize: (value: Buffer) => value,
  responseSerialize: (value: Buffer) => value,
  responseDeserialize: (value: Buffer) => value,
};

/** HealthCheckResponse { ServingStatus status = 1 } */
function encodeStatus(status: ServingStatus): Buffer {
  return status === ServingStatus.UNKNOWN ? Buffer.alloc(0) : Buffer.from([0x08, status]);
}

/** HealthCheckRequest { string service = 1 } */
function decodeService(buf: Buffer): string {
  const r = new Reader(buf);
  let service = '';
  while (!r.done()) {
    const tag = r.tag();
    if (tag === ((1 << 3) | WIRE_LEN)) service = r.utf8();
    else r.skip(tag & 7);
  }
  return service;
}

export class HealthService {
  private status: ServingStatus = ServingStatus.NOT_SERVING;
  private readonly known: Set<string>;
  private readonly watchers = new Set<{ service: string; call: grpc.ServerWritableStream<Buffer, Buffer> }>();

  constructor(services: readonly string[]) {
    this.known = new Set(['', ...services]);
  }

  readonly definition: grpc.ServiceDefinition = {
    Check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false, originalName: 'check', ...passThrough },
    Watch: { path: '/grpc.health.v1.Health/Watch', requestStream: false, responseStream: true, originalName: 'watch', ...passThrough },
  };

  readonly implementation: grpc.UntypedServiceImplementation = {
    Check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      let service: string;
      try {
        service = decodeService(call.request);
      } catch {
        callback({ code: grpc.status.INVALID_ARGUMENT, details: 'malformed HealthCheckRequest' });
        return;
      }
      if (!this.known.has(service)) {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${service}` });
        return;
      }
      callback(null, encodeStatus(this.status));
    },
    Watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      let service: string;
      try {
        service = decodeService(call.request);
      } catch {
        call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'malformed HealthCheckRequest' });
        return;
      }
      const watcher = { service, call };
      this.watchers.add(watcher);
      call.write(encodeStatus(this.known.has(service) ? this.status : ServingStatus.SERVICE_UNKNOWN));
      call.on('cancelled', () => this.watchers.delete(watcher));
      call.on('close', () => this.watchers.delete(watcher));
    },
  };

  get current(): ServingStatus {
    return this.status;
  }

  set(status: ServingStatus): void {
    if (status === this.status) return;
    this.status = status;
    for (const { service, call } of this.watchers) {
      if (this.known.has(service)) call.write(encodeStatus(status));
    }
  }

  /** End every Watch stream (shutdown). */
  closeWatchers(): void {
    for (const { call } of this.watchers) call.end();
    this.watchers.clear();
  }
}
