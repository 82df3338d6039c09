// Envoy's HTTP ext_authz (`http_service`, Envoy Gateway `extAuth.http`): Envoy sends the original
// method and the original path appended to the listener's path prefix, with the original Host and
// the headers `allowed_headers` lets through. Allow is a 200 whose identity headers Envoy copies
// upstream (`allowed_upstream_headers`, overwriting the client's) and whose
// `x-envoy-auth-headers-to-remove` lists the headers Envoy strips; a denial is passed to the client
// as is (status, `allowed_client_headers`, body).

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Decision, RequestAttributes } from '../../types.js';
import { flatHeaders, originalRequest, send, sendAllow, type NodeHeaders, type ProxyShape, type ShapeProblem } from './shape.js';

/** Envoy's own header for the removal list (OkHttpResponse.headers_to_remove over HTTP). */
export const ENVOY_REMOVE_HEADER = 'x-envoy-auth-headers-to-remove';

export const envoyShape: ProxyShape = {
  name: 'envoy',
  read(req: IncomingMessage, headers: NodeHeaders, rest: string): RequestAttributes | ShapeProblem {
    return originalRequest(headers, 'envoy http_service', {
      method: req.method,
      target: rest,
      host: headers.get('host'),
      scheme: headers.get('x-forwarded-proto'),
    });
  },
  write(res: ServerResponse, decision: Decision): void {
    if (decision.allowed) sendAllow(res, decision, ENVOY_REMOVE_HEADER);
    else send(res, decision.status, flatHeaders(decision.headers), decision.body);
  },
};
