// Traefik `forwardAuth` and Caddy `forward_auth`: the proxy sends the original request's headers
// plus X-Forwarded-Method/Proto/Host/Uri/For. Allow is a 200 whose identity headers the proxy
// copies upstream (`authResponseHeaders` / `copy_headers`); any other answer goes back to the
// client as is, so a denial is Portcullis's own status, headers and JSON body.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Decision, RequestAttributes } from '../../types.js';
import { flatHeaders, originalRequest, REMOVE_HEADER, send, sendAllow, type NodeHeaders, type ProxyShape, type ShapeProblem } from './shape.js';

export const forwardAuthShape: ProxyShape = {
  name: 'forward-auth',
  read(_req: IncomingMessage, headers: NodeHeaders): RequestAttributes | ShapeProblem {
    return originalRequest(headers, 'forward-auth', {
      method: headers.get('x-forwarded-method'),
      target: headers.get('x-forwarded-uri'),
      host: headers.get('x-forwarded-host'),
      scheme: headers.get('x-forwarded-proto'),
    });
  },
  write(res: ServerResponse, decision: Decision): void {
    if (decision.allowed) sendAllow(res, decision, REMOVE_HEADER);
    else send(res, decision.status, flatHeaders(decision.headers), decision.body);
  },
};
