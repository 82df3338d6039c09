// OpenTelemetry tracing of checks: settings (policy server.tracing and the standard OTEL_*
// variables), the sampling decision, the lazy load of the SDK (otel.ts), and the helper the
// pipeline makes child spans with.
//
// Cost: with tracing off the SDK is not loaded and the transport and pipeline test one
// `undefined` (request.trace). With tracing on, a check that is sampled out costs the parse of its
// trace header and the sampling decision — no SDK object is made. Only sampled checks get a span
// (one per check, children around waits on JWKS, key store, lookups, enrich: lookups and Redis).

import type { Logger } from './logger.js';
import type { CheckTrace, Decision, RequestAttributes } from '../types.js';

// ---- child spans (README "Tracing"), made only for sampled checks around a wait on I/O ---------

/** Child span of a wait on a lookup target: session, introspection, external API key, enrich:. */
export const LOOKUP_SPAN = 'portcullis.lookup';

/**
 * A child span of `trace` around `wait`, ended when it settles (failed when it rejects), with
 * `portcullis.source` = `source` (a source or step label from the policy, never a credential).
 * Call only with a trace: a check that is not traced makes nothing.
 */
export function traceWait(trace: CheckTrace, wait: Promise<unknown>, name: string, source?: string): void {
  const span = trace.child(name, source === undefined ? undefined : { 'portcullis.source': source });
  wait.then(
    () => span.end(),
    () => span.end(true),
  );
}

/** The policy's server.tracing section (schema.ts). */
export interface TracingPolicy {
  enabled: boolean;
  endpoint?: string;
  sampleRatio?: number;
  serviceName?: string;
  tenant: boolean;
}

export interface TracingSettings {
  /** OTLP/HTTP traces URL (…/v1/traces). */
  endpoint: string;
  /** Headers for the collector (OTEL_EXPORTER_OTLP_[TRACES_]HEADERS); never logged. */
  headers: Record<string, string>;
  timeoutMs: number;
  /** Follow the caller's sampled flag when a trace context came with the request. */
  parentBased: boolean;
  /** Share of traces started here (and, without parentBased, of all traces) that are sampled. */
  ratio: number;
  serviceName: string;
  resourceAttributes: Record<string, string>;
  /** Put the tenant on the span (opt-in: it can identify a customer). */
  tenant: boolean;
  batch: { scheduledDelayMillis?: number; maxQueueSize?: number; maxExportBatchSize?: number; exportTimeoutMillis?: number };
}

/** A sampled check's span as the transport sees it: the pipeline's view plus the end of the check. */
export interface CheckSpan extends CheckTrace {
  finish(decision: Decision, grpcStatus: number): void;
}

/** What the transports hold when tracing is on. */
export interface CheckTracer {
  /** The span of this check, or undefined when it is not sampled (nothing else was made). */
  start(request: RequestAttributes, rpcService: string, rpcMethod: string): CheckSpan | undefined;
  /** Export what is buffered and stop (bounded by the exporter's timeout). */
  shutdown(): Promise<void>;
}

/** A remote parent found in the request headers. */
export interface RemoteParent {
  traceId: string;
  spanId: string;
  sampled: boolean;
  traceState?: string;
}

const SAMPLERS = ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'] as const;

/**
 * Tracing settings, or undefined when tracing is off. On when the policy says `enabled: true` or
 * OTEL_TRACES_EXPORTER=otlp is set; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it
 * off whatever the policy says. Policy values win over the variables they share.
 */
export function tracingSettings(policy: TracingPolicy | undefined, env: Readonly<Record<string, string | undefined>>, logger: Logger): TracingSettings | undefined {
  const exporter = env.OTEL_TRACES_EXPORTER?.trim().toLowerCase();
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true' || exporter === 'none') return undefined;
  if (!(policy?.enabled === true || exporter === 'otlp')) return undefined;
  if (exporter !== undefined && exporter !== 'otlp') logger.warn({ OTEL_TRACES_EXPORTER: exporter }, 'only the otlp trace exporter (OTLP/HTTP) is supported; using it');
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL;
  if (protocol !== undefined && protocol !== 'http/json' && protocol !== 'http/protobuf') logger.warn({ protocol }, 'only OTLP over HTTP is supported; sending http/json');

  const samplerName = (env.OTEL_TRACES_SAMPLER?.trim().toLowerCase() ?? 'parentbased_traceidratio') as (typeof SAMPLERS)[number];
  let sampler: (typeof SAMPLERS)[number] = 'parentbased_traceidratio';
  if ((SAMPLERS as readonly string[]).includes(samplerName)) sampler = samplerName;
  else logger.warn({ OTEL_TRACES_SAMPLER: samplerName }, 'unsupported sampler; using parentbased_traceidratio');
  const arg = Number(env.OTEL_TRACES_SAMPLER_ARG);
  let ratio = sampler.endsWith('always_on') ? 1 : sampler.endsWith('always_off') ? 0 : Number.isFinite(arg) && arg >= 0 && arg <= 1 ? arg : 1;
  if (policy?.sampleRatio !== undefined) ratio = policy.sampleRatio;

  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.replace(/\/+$/, '');
  const endpoint = policy?.endpoint ?? env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? (base ? `${base}/v1/traces` : 'http://localhost:4318/v1/traces');
  const timeout = Number(env.OTEL_EXPORTER_OTLP_TRACES_TIMEOUT ?? env.OTEL_EXPORTER_OTLP_TIMEOUT);
  const num = (name: string): number | undefined => {
    const v = Number(env[name]);
    return env[name] !== undefined && Number.isFinite(v) && v > 0 ? v : undefined;
  };
  return {
    endpoint,
    headers: keyValues(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS ?? env.OTEL_EXPORTER_OTLP_HEADERS),
    timeoutMs: Number.isFinite(timeout) && timeout > 0 ? timeout : 10_000,
    parentBased: sampler.startsWith('parentbased_'),
    ratio,
    serviceName: policy?.serviceName ?? env.OTEL_SERVICE_NAME ?? 'portcullis',
    resourceAttributes: keyValues(env.OTEL_RESOURCE_ATTRIBUTES),
    tenant: policy?.tenant === true,
    batch: {
      scheduledDelayMillis: num('OTEL_BSP_SCHEDULE_DELAY'),
      // Bounded: beyond the queue, spans are dropped, never buffered without limit.
      maxQueueSize: Math.min(num('OTEL_BSP_MAX_QUEUE_SIZE') ?? 2048, 65_536),
      maxExportBatchSize: num('OTEL_BSP_MAX_EXPORT_BATCH_SIZE'),
      exportTimeoutMillis: num('OTEL_BSP_EXPORT_TIMEOUT'),
    },
  };
}

/** `k=v,k2=v2` (W3C baggage-like, percent-decoded values), as the OTEL_* variables use. */
function keyValues(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!text) return out;
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    try {
      out[part.slice(0, eq).trim()] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      // a malformed value is skipped
    }
  }
  return out;
}

/** Load the SDK (only now) and make the tracer. */
export async function createTracer(settings: TracingSettings, logger: Logger, version: string): Promise<CheckTracer> {
  const { OtelCheckTracer } = await import('./otel.js');
  logger.info({ endpoint: redactUrl(settings.endpoint), ratio: settings.ratio, parentBased: settings.parentBased }, 'tracing on (OpenTelemetry, OTLP/HTTP)');
  return new OtelCheckTracer(settings, version);
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(unparsable URL)';
  }
}

// ---- sampling (no SDK) -------------------------------------------------------------------------

const HEX32_ZERO = '00000000000000000000000000000000';

function isHex(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/**
 * The caller's trace context: W3C traceparent (and tracestate), else B3 (single `b3` header or
 * the x-b3-* headers). Malformed values are ignored (a new trace starts), as the specs require.
 */
export function remoteParent(headers: RequestAttributes['headers'], parentBased = false): RemoteParent | undefined {
  const tp = headers.get('traceparent');
  if (tp !== undefined) {
    // version-traceid-parentid-flags; a future version may append fields after the flags.
    if (!wellFormedTraceparent(tp)) return undefined;
    const sampledFlag = (hexValue(tp.charCodeAt(54)) & 1) === 1;
    // Parent-based and not sampled: nothing else is needed (no strings cut, nothing allocated).
    if (parentBased && !sampledFlag) return NOT_SAMPLED_PARENT;
    return { traceId: tp.slice(3, 35), spanId: tp.slice(36, 52), sampled: sampledFlag, traceState: headers.get('tracestate') };
  }
  const b3 = headers.get('b3');
  if (b3 !== undefined) {
    const [traceId, spanId, flag] = b3.split('-');
    return b3Parent(traceId, spanId, flag);
  }
  const b3TraceId = headers.get('x-b3-traceid');
  if (b3TraceId === undefined) return undefined;
  return b3Parent(b3TraceId, headers.get('x-b3-spanid'), headers.get('x-b3-flags') === '1' ? 'd' : headers.get('x-b3-sampled'));
}

/** A caller that said "not sampled" (parent-based sampling needs nothing more). */
const NOT_SAMPLED_PARENT: RemoteParent = Object.freeze({ traceId: '', spanId: '', sampled: false });

function hexValue(c: number): number {
  return c <= 57 ? c - 48 : c - 87;
}

/** 00-<32 lower hex, not all 0>-<16 lower hex, not all 0>-<2 hex>, version ff refused. */
function wellFormedTraceparent(tp: string): boolean {
  const n = tp.length;
  if (n < 55 || (n > 55 && tp.charCodeAt(55) !== 45) || tp.charCodeAt(2) !== 45 || tp.charCodeAt(35) !== 45 || tp.charCodeAt(52) !== 45) return false;
  if (!isHex(tp, 0, 2) || (tp.charCodeAt(0) === 102 && tp.charCodeAt(1) === 102) || !isHex(tp, 53, 55)) return false;
  let traceBits = 0;
  for (let i = 3; i < 35; i++) {
    const c = tp.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
    traceBits |= c - 48;
  }
  let spanBits = 0;
  for (let i = 36; i < 52; i++) {
    const c = tp.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
    spanBits |= c - 48;
  }
  return traceBits !== 0 && spanBits !== 0;
}

function b3Parent(traceId: string | undefined, spanId: string | undefined, flag: string | undefined): RemoteParent | undefined {
  if (traceId === undefined || spanId === undefined) return undefined;
  if ((traceId.length !== 32 && traceId.length !== 16) || spanId.length !== 16 || !isHex(traceId, 0, traceId.length) || !isHex(spanId, 0, 16)) return undefined;
  const full = traceId.length === 16 ? `0000000000000000${traceId}` : traceId;
  if (full === HEX32_ZERO || spanId === '0000000000000000') return undefined;
  // B3: 1 or d (debug) sampled; 0 not; absent = deferred (treated as not sampled by the caller).
  return { traceId: full, spanId, sampled: flag === '1' || flag === 'd' || flag === 'true' };
}

/** The sampling decision (parent-based and/or trace-id ratio), without the SDK. */
export function sampled(parent: RemoteParent | undefined, parentBased: boolean, ratio: number): boolean {
  if (parent !== undefined && parentBased) return parent.sampled;
  if (ratio >= 1) return true;
  if (ratio <= 0) return false;
  // Ratio by trace id (the same id gets the same answer on every service), random for new traces.
  if (parent !== undefined) return parseInt(parent.traceId.slice(16, 24), 16) / 0x1_0000_0000 < ratio;
  return Math.random() < ratio;
}

/** The trace id of a W3C traceparent value, for the decision log of checks that are not traced. */
export function traceIdOf(traceparent: string | undefined): string | undefined {
  if (traceparent === undefined || traceparent.length < 55 || traceparent[2] !== '-' || traceparent[35] !== '-') return undefined;
  return isHex(traceparent, 3, 35) ? traceparent.slice(3, 35) : undefined;
}
