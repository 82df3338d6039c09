// An upstream service verifying Portcullis' identity token (README "Identity token for upstreams").
// One call of any JWT library: here jose, against the JWKS Portcullis serves on its ops port.
//
//   PORTCULLIS_JWKS=http://portcullis.portcullis.svc.cluster.local:9002/.well-known/jwks.json \
//   PORTCULLIS_ISSUER=https://portcullis.portcullis.svc.cluster.local AUDIENCE=orders-api \
//   node verify-identity.mjs
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

// Fetched once, cached, refetched (at most every 30 s) when a token names a kid it does not know:
// a rotated key is picked up without a restart.
const jwks = createRemoteJWKSet(new URL(process.env.PORTCULLIS_JWKS));

http
  .createServer(async (req, res) => {
    try {
      const { payload } = await jwtVerify(String(req.headers['x-portcullis-identity'] ?? ''), jwks, {
        issuer: process.env.PORTCULLIS_ISSUER,
        audience: process.env.AUDIENCE, // this service's own audience: a token for another one is refused
        typ: 'portcullis-identity+jwt',
        algorithms: ['ES256', 'EdDSA'],
      });
      // payload: { sub, tenant, scopes, method, key_id?, email?, iss, aud, iat, exp, jti }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ caller: payload.sub, tenant: payload.tenant, scopes: payload.scopes, method: payload.method }));
    } catch {
      // No token, or not Portcullis': the request did not come through Portcullis.
      res.writeHead(401).end();
    }
  })
  .listen(8080);
