import type { RequestAttributes } from '../types.js';

/**
 * The client's IP. With xffTrustedHops = 0 it is the address of the peer that connected to Envoy.
 * With N > 0, N proxies in front of Envoy are trusted to append to x-forwarded-for, so the client
 * is the N-th address from the right (a client can prepend anything it likes, never append).
 * Falls back to the peer address when the header has fewer entries.
 */
export function clientIp(request: RequestAttributes, xffTrustedHops: number): string {
  if (xffTrustedHops > 0) {
    const xff = request.headers.get('x-forwarded-for');
    if (xff) {
      const parts = xff.split(',');
      const candidate = parts[parts.length - xffTrustedHops]?.trim();
      if (candidate) return candidate;
    }
  }
  return request.sourceAddress;
}
