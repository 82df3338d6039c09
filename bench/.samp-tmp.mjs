const { startServer } = await import('/work/main/dist/server.js');
const { silentLogger } = await import('/work/main/dist/observability/logger.js');
const v8 = await import('node:v8');
const s = await startServer({ configFile: process.argv[2], grpcPort: 19555, httpPort: 19556, bind: '127.0.0.1', logger: silentLogger(), watch: false });
await s.ready;
const peak = {}; const spaces = {};
setInterval(() => {
  const m = process.memoryUsage();
  for (const k of Object.keys(m)) peak[k] = Math.max(peak[k] ?? 0, m[k]);
  for (const sp of v8.getHeapSpaceStatistics()) spaces[sp.space_name] = Math.max(spaces[sp.space_name] ?? 0, sp.space_size);
}, 20).unref();
process.on('SIGTERM', () => {
  const f = (o) => Object.entries(o).map(([k, v]) => `${k}=${(v / 1048576).toFixed(1)}`).join(' ');
  console.log('peak', f(peak)); console.log('spaces', f(spaces));
  const m = process.memoryUsage(); console.log('now', f(m));
  process.exit(0);
});
