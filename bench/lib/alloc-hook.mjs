// Loaded into a server with `node --import` by bench/alloc-profile.mjs: the V8 sampling heap
// profiler, counting objects the GC has already collected too (what a server's garbage is made
// of), from ALLOC_DELAY_MS after start (past start-up) until SIGUSR2, written to ALLOC_OUT.

import fs from 'node:fs';
import inspector from 'node:inspector';

const session = new inspector.Session();
session.connect();
const post = (method, params = {}) => new Promise((resolve, reject) => session.post(method, params, (err, result) => (err ? reject(err) : resolve(result))));

setTimeout(async () => {
  await post('HeapProfiler.enable');
  await post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  process.stderr.write('alloc-hook: sampling\n');
}, Number(process.env.ALLOC_DELAY_MS ?? 3000)).unref();

process.on('SIGUSR2', async () => {
  const { profile } = await post('HeapProfiler.stopSampling');
  fs.writeFileSync(process.env.ALLOC_OUT, JSON.stringify(profile));
  process.stderr.write('alloc-hook: written\n');
});
