// The client IP as Envoy's trusted client address, from the exact attributes Envoy sends in the
// documented topologies (source.address = the connection's peer; x-forwarded-for AFTER Envoy's
// connection manager: with use_remote_address true it has appended that peer), and the network a
// per-IP key uses.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { canonicalIp, clientIp, clientNetwork, type ClientIpSettings } from '../../src/pipeline/client-ip.js';
import { request } from '../support/request.js';

const CLIENT = '198.51.100.7';
const FORGED = '6.6.6.6';
const LB = '10.0.0.5';
const GATEWAY_POD = '10.244.1.9';

/** What Envoy sends: the peer it sees and x-forwarded-for as its connection manager left it. */
function check(settings: Partial<ClientIpSettings>, peer: string, xff?: string): string {
  const headers: Record<string, string> = xff === undefined ? {} : { 'x-forwarded-for': xff };
  return clientIp(request({ sourceAddress: peer, headers }), { useRemoteAddress: true, xffTrustedHops: 0, ...settings });
}

describe('client IP: edge Envoy (use_remote_address: true, xff_num_trusted_hops: 0)', () => {
  it('is the connecting peer; whatever x-forwarded-for the client wrote is ignored', () => {
    expect(check({}, CLIENT, CLIENT)).toBe(CLIENT); // Envoy appended the peer to an absent header
    expect(check({}, CLIENT, `${FORGED}, ${CLIENT}`)).toBe(CLIENT);
    expect(check({}, CLIENT)).toBe(CLIENT);
  });
});

describe('client IP: Envoy behind one load balancer (use_remote_address: true, xff_num_trusted_hops: 1)', () => {
  const one = { xffTrustedHops: 1 };
  it('is the address the load balancer appended, not the load balancer (Envoy appended the LB)', () => {
    expect(check(one, LB, `${CLIENT}, ${LB}`)).toBe(CLIENT);
    expect(check(one, LB, `${CLIENT},${LB}`)).toBe(CLIENT);
  });
  it('a client cannot choose its address by prepending entries', () => {
    expect(check(one, LB, `${FORGED}, ${CLIENT}, ${LB}`)).toBe(CLIENT);
    expect(check(one, LB, `${FORGED}, 7.7.7.7, ${CLIENT}, ${LB}`)).toBe(CLIENT);
  });
  it('falls back to the peer with too few entries or an entry that is not an address (as Envoy does)', () => {
    expect(check(one, LB, LB)).toBe(LB); // the load balancer's own request (health check)
    expect(check(one, LB, `unknown, ${LB}`)).toBe(LB);
    expect(check(one, LB, `${CLIENT}:4711, ${LB}`)).toBe(LB);
    expect(check(one, LB, ` , ${LB}`)).toBe(LB);
  });
  it('never reads a client-written entry when the header does not end with the peer (Envoy did not append)', () => {
    // The policy says use_remote_address, the proxy does not append: every entry may be forged.
    expect(check(one, LB, `${FORGED}, ${CLIENT}`)).toBe(LB);
  });
  it('a bare number is xffTrustedHops with use_remote_address (callers that pass only the hops)', () => {
    expect(clientIp(request({ sourceAddress: LB, headers: { 'x-forwarded-for': `${FORGED}, ${CLIENT}, ${LB}` } }), 1)).toBe(CLIENT);
    expect(clientIp(request({ sourceAddress: CLIENT, headers: { 'x-forwarded-for': `${FORGED}, ${CLIENT}` } }), 0)).toBe(CLIENT);
  });
  it('two trusted proxies (CDN + load balancer)', () => {
    expect(check({ xffTrustedHops: 2 }, LB, `${FORGED}, ${CLIENT}, 192.0.2.44, ${LB}`)).toBe(CLIENT);
    expect(check({ xffTrustedHops: 2 }, LB, `192.0.2.44, ${LB}`)).toBe(LB);
  });
});

describe('client IP: Istio sidecar behind an ingress gateway (sidecar use_remote_address: false)', () => {
  const sidecar = { useRemoteAddress: false };
  it('gateway with numTrustedProxies 0: the peer the gateway appended (the sidecar appends nothing)', () => {
    // client → ingress gateway (appends the client) → sidecar → Check with source = gateway pod
    expect(check(sidecar, GATEWAY_POD, CLIENT)).toBe(CLIENT);
    expect(check(sidecar, GATEWAY_POD, `${FORGED}, ${CLIENT}`)).toBe(CLIENT);
  });
  it('gateway with numTrustedProxies 1 behind a cloud load balancer: xffTrustedHops 1', () => {
    expect(check({ ...sidecar, xffTrustedHops: 1 }, GATEWAY_POD, `${FORGED}, ${CLIENT}, ${LB}`)).toBe(CLIENT);
    expect(check({ ...sidecar, xffTrustedHops: 1 }, GATEWAY_POD, LB)).toBe(GATEWAY_POD);
  });
  it('a call from inside the mesh without x-forwarded-for: the calling pod', () => {
    expect(check(sidecar, '10.244.2.3')).toBe('10.244.2.3');
  });
  it('ext_authz on the gateway itself is the edge case: use_remote_address true, hops = numTrustedProxies', () => {
    expect(check({ xffTrustedHops: 1 }, LB, `${FORGED}, ${CLIENT}, ${LB}`)).toBe(CLIENT);
  });
});

describe('client IP: address forms', () => {
  it('IPv6 clients, upper case and IPv4-mapped addresses get one canonical text', () => {
    expect(check({ xffTrustedHops: 1 }, LB, `2001:DB8:1:2:0:0:0:7, ${LB}`)).toBe('2001:db8:1:2::7');
    expect(check({}, '::ffff:198.51.100.7')).toBe(CLIENT);
    expect(check({ xffTrustedHops: 1 }, '2001:db8::1', `${CLIENT}, 2001:db8::1`)).toBe(CLIENT);
    expect(check({ xffTrustedHops: 1 }, '2001:db8::1', `${CLIENT}, 2001:0db8:0:0::1`)).toBe(CLIENT);
    expect(canonicalIp('2001:db8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1');
    expect(canonicalIp('::')).toBe('::');
    expect(canonicalIp('::1')).toBe('::1');
    expect(canonicalIp('64:ff9b::192.0.2.33')).toBe('64:ff9b::c000:221');
    expect(canonicalIp('not-an-ip')).toBeUndefined();
  });
  it('keys IPv6 on the configured prefix, IPv4 on its own', () => {
    expect(clientNetwork('2001:db8:1:2:aaaa:bbbb:cccc:dddd', 32, 64)).toBe('2001:db8:1:2::/64');
    expect(clientNetwork('2001:db8:1:2::7', 32, 64)).toBe('2001:db8:1:2::/64');
    expect(clientNetwork('2001:db8:1:2ff::7', 32, 56)).toBe('2001:db8:1:200::/56');
    expect(clientNetwork('2001:db8:1:2::7', 32, 128)).toBe('2001:db8:1:2::7');
    expect(clientNetwork(CLIENT, 32, 64)).toBe(CLIENT);
    expect(clientNetwork(CLIENT, 24, 64)).toBe('198.51.100.0/24');
    expect(clientNetwork('::ffff:198.51.100.7', 32, 64)).toBe(CLIENT);
    expect(clientNetwork('/var/run/envoy.sock', 32, 64)).toBe('/var/run/envoy.sock');
  });

  it('agrees with inet_pton/inet_ntop (net.SocketAddress) on 2,000 generated IPv6 texts, and rejects what it rejects', () => {
    let seed = 7;
    const next = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) / (1 << 24);
    for (let n = 0; n < 2000; n++) {
      const groups = Array.from({ length: 8 }, () => (next() < 0.45 ? 0 : Math.floor(next() * 0x10000)));
      // ::ffff:a.b.c.d is IPv4 here; glibc also prints the deprecated ::a.b.c.d form: keep both out.
      if (groups.slice(0, 5).every((g) => g === 0) && (groups[5] === 0 || groups[5] === 0xffff)) groups[4] = 1;
      const form = next();
      let text = groups.map((g) => g.toString(16).padStart(form < 0.3 ? 4 : 1, '0')).join(':');
      if (form > 0.6) text = text.toUpperCase();
      if (form > 0.5) text = new net.SocketAddress({ address: text, family: 'ipv6' }).address; // compressed
      if (form > 0.85 && !text.includes('.')) {
        const v4 = `${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`;
        text = `${groups.slice(0, 6).map((g) => g.toString(16)).join(':')}:${v4}`;
      }
      expect(canonicalIp(text), text).toBe(new net.SocketAddress({ address: text, family: 'ipv6' }).address);
    }
    for (const bad of ['1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', ':1:2:3:4:5:6:7', '1:2:3:4:5:6:7:', '12345::1', '::g', '1:2:3:4:5:6:7:8::', '::1.2.3', '::1.2.3.256', '::01.2.3.4', '1.2.3.4::', ':', '', '1:2:3:4:5:6:1.2.3.4:8']) {
      expect(canonicalIp(bad), bad).toBeUndefined();
      expect(net.isIP(bad), bad).toBe(0);
    }
  });
});
