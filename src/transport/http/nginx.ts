// nginx `auth_request` (and ingress-nginx `auth-url`): the subrequest carries the original
// request's headers plus what the example config sets — X-Original-URI ($request_uri),
// X-Original-Method, X-Forwarded-Host/Proto/For.
//
// nginx takes only 2xx (allow), 401 and 403 from the subrequest; anything else becomes a 500, and
// the subrequest's body is dropped. So a denial travels as 401 (a real 401) or 403 (every other
// status), with the real status in `x-portcullis-status` and the JSON body in `x-portcullis-body`;
// examples/nginx/nginx.conf reads both with auth_request_set, and its error_page location answers
// the client with the real status, body and headers (WWW-Authenticate, Retry-After, RateLimit).

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Decision, DenyDecision, RequestAttributes } from '../../types.js';
import { flatHeaders, originalRequest, REMOVE_HEADER, send, sendAllow, type NodeHeaders, type ProxyShape, type ShapeProblem } from './shape.js';

export const STATUS_HEADER = 'x-portcullis-status';
export const BODY_HEADER = 'x-portcullis-body';

export const nginxShape: ProxyShape = {
  name: 'nginx',
  read(_req: IncomingMessage, headers: NodeHeaders): RequestAttributes | ShapeProblem {
    return originalRequest(headers, 'nginx auth_request', {
      method: headers.get('x-original-method'),
      target: headers.get('x-original-uri'),
      host: headers.get('x-forwarded-host'),
      scheme: headers.get('x-forwarded-proto'),
    });
  },
  write(res: ServerResponse, decision: Decision): void {
    if (decision.allowed) {
      sendAllow(res, decision, REMOVE_HEADER);
      return;
    }
    const headers = flatHeaders(decision.headers);
    headers.push(STATUS_HEADER, String(decision.status), BODY_HEADER, headerSafeBody(decision));
    send(res, decision.status === 401 ? 401 : 403, headers, decision.body);
  },
};

/**
 * The JSON body as a header value: every character outside printable ASCII becomes its JSON
 * \u escape (only string contents can hold one), so the value is the same JSON and a valid header.
 */
function headerSafeBody(decision: DenyDecision): string {
  return decision.body.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
