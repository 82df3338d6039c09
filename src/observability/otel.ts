// The OpenTelemetry SDK side of tracing.ts, imported only when tracing is on. Not registered as
// the global tracer provider: Portcullis' spans go through this object alone.

import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import { TraceState } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { Decision, RequestAttributes } from '../types.js';
import { remoteParent, sampled, type CheckSpan, type CheckTracer, type TracingSettings } from './tracing.js';

export class OtelCheckTracer implements CheckTracer {
  private readonly provider: BasicTracerProvider;
  private readonly tracer: Tracer;

  constructor(private readonly settings: TracingSettings, version: string) {
    const exporter = new OTLPTraceExporter({ url: settings.endpoint, headers: settings.headers, timeoutMillis: settings.timeoutMs });
    this.provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ ...settings.resourceAttributes, 'service.name': settings.serviceName, 'service.version': version }),
      // The decision is taken before the SDK is involved (tracing.ts); what reaches it is sampled.
      sampler: new AlwaysOnSampler(),
      spanProcessors: [new BatchSpanProcessor(exporter, settings.batch)],
    });
    this.tracer = this.provider.getTracer('portcullis', version);
  }

  start(request: RequestAttributes, rpcService: string, rpcMethod: string): CheckSpan | undefined {
    const parent = remoteParent(request.headers, this.settings.parentBased);
    if (!sampled(parent, this.settings.parentBased, this.settings.ratio)) return undefined;
    let context = ROOT_CONTEXT;
    if (parent !== undefined) {
      let traceState: TraceState | undefined;
      if (parent.traceState !== undefined) {
        try {
          traceState = new TraceState(parent.traceState);
        } catch {
          traceState = undefined;
        }
      }
      context = trace.setSpanContext(ROOT_CONTEXT, { traceId: parent.traceId, spanId: parent.spanId, traceFlags: TraceFlags.SAMPLED, isRemote: true, traceState });
    }
    // Semantic conventions: an RPC server span (rpc.*), about the HTTP request being judged.
    const attributes: Attributes = {
      'rpc.system': 'grpc',
      'rpc.service': rpcService,
      'rpc.method': rpcMethod,
      'http.request.method': request.method,
      'url.path': request.path,
      'url.scheme': request.scheme,
      'server.address': request.host,
      'portcullis.request_id': request.requestId,
    };
    if (request.sourceAddress) attributes['client.address'] = request.sourceAddress;
    const span = this.tracer.startSpan(`${rpcService}/${rpcMethod}`, { kind: SpanKind.SERVER, attributes }, context);
    return new OtelCheckSpan(span, this.tracer, this.settings.tenant);
  }

  async shutdown(): Promise<void> {
    await this.provider.shutdown();
  }

  /** Export what is queued now (bench, tests). */
  async flush(): Promise<void> {
    await this.provider.forceFlush();
  }
}

class OtelCheckSpan implements CheckSpan {
  readonly traceId: string;
  readonly spanId: string;

  constructor(
    private readonly span: Span,
    private readonly tracer: Tracer,
    private readonly withTenant: boolean,
  ) {
    const ctx = span.spanContext();
    this.traceId = ctx.traceId;
    this.spanId = ctx.spanId;
  }

  child(name: string, attributes?: Readonly<Record<string, string>>): { end(failed?: boolean): void } {
    const child = this.tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, trace.setSpan(ROOT_CONTEXT, this.span));
    return {
      end(failed?: boolean) {
        if (failed) child.setStatus({ code: SpanStatusCode.ERROR });
        child.end();
      },
    };
  }

  finish(decision: Decision, grpcStatus: number): void {
    const span = this.span;
    const attributes: Attributes = {
      'rpc.grpc.status_code': grpcStatus,
      'portcullis.decision': decision.allowed ? 'allow' : 'deny',
      'portcullis.route': decision.route,
      'portcullis.credential': decision.principal?.method ?? 'none',
    };
    if (decision.allowed) {
      if (decision.note) attributes['portcullis.reason'] = decision.note.split(':')[0]!;
    } else {
      attributes['portcullis.reason'] = decision.reason;
      attributes['http.response.status_code'] = decision.status;
    }
    if (this.withTenant && decision.principal?.tenant !== undefined) attributes['portcullis.tenant'] = decision.principal.tenant;
    span.setAttributes(attributes);
    // A denial is the service working; a 503 is a failure (a dependency, an internal error, overload).
    if (!decision.allowed && decision.status === 503) span.setStatus({ code: SpanStatusCode.ERROR, message: decision.reason });
    span.end();
  }
}
