// Redis memory per finished small job: INFO memory before and after N
// 0-step sleep jobs have run to the end. Usage: node memory.mjs URL REDIS_PORT N
import { execFileSync } from 'node:child_process';

const [url, redisPort, n] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const usedMemory = () => Number(execFileSync('redis-cli', ['-p', redisPort, 'info', 'memory'])
  .toString().match(/^used_memory:(\d+)/m)[1]);
const body = JSON.stringify({ type: 'sleep', input: { steps: 0, step_ms: 0 } });

const before = usedMemory();
let next = 0;
await Promise.all(Array.from({ length: 64 }, async () => {
  while (next < n) {
    next++;
    const r = await fetch(`${url}/v1/jobs`, { method: 'POST', body, headers: { 'Content-Type': 'application/json' } });
    if (r.status !== 202) throw new Error(`create answered ${r.status}`);
    await r.arrayBuffer();
  }
}));
for (;;) {
  const m = await (await fetch(`${url}/metrics`)).text();
  const left = ['queued', 'running'].map((s) => Number(m.match(new RegExp(`datasphere_jobs\\{status="${s}"\\} (\\d+)`))[1]));
  if (left[0] + left[1] === 0) break;
  await new Promise((r) => setTimeout(r, 200));
}
const after = usedMemory();
console.log(`  Redis memory per finished 0-step job      ${((after - before) / n).toFixed(0)} bytes (${n} jobs, INFO used_memory)`);
