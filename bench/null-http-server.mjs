// The HTTP yardstick: a plain node:http server answering every request 200 with a fixed body,
// keep-alive on. What the HTTP authorization listener is compared with (its ratio in
// `npm run bench`): the floor of node:http on this machine, nothing read, nothing decided.
//
//   node bench/null-http-server.mjs --port 9103
// Prints "listening <port>" once bound; stops on SIGTERM/SIGINT.

import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });
const BODY = Buffer.from('ok\n');
const HEADERS = { 'content-type': 'text/plain', 'content-length': String(BODY.length) };

const server = http.createServer({ keepAliveTimeout: 75_000 }, (_req, res) => {
  res.writeHead(200, HEADERS);
  res.end(BODY);
});
server.listen(Number(values.port), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)) && server.closeAllConnections());
