// Long-poll wake-up latency and idle SSE clients, for bench/run.sh.
// Usage: node clients.mjs URL_A URL_B PID_A  (A runs workers, B none; one store)
// Prints JSON: {same: {p50, p99}, cross: {p50, p99}, sse: {clients, rss_mb, base_mb}}
import net from 'node:net';
import { readFileSync } from 'node:fs';

const [a, b, pid] = process.argv.slice(2);
const post = (url, body) => fetch(url, {
  method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
}).then((r) => r.json());

// A queued job that stays queued (we cancel it before a worker can matter):
// park a long-poll on `poller`, change the job through `a`, time the wake.
async function wakeLatency(poller, rounds) {
  const lat = [];
  for (let i = 0; i < rounds; i++) {
    const job = await post(`${a}/v1/jobs`, { type: 'sleep', input: { steps: 1, step_ms: 60000 } });
    const parked = fetch(`${poller}/v1/jobs/${job.id}?wait=10`, { headers: { 'If-None-Match': `"v${job.version}"` } });
    await new Promise((r) => setTimeout(r, 5));
    const t0 = performance.now();
    const [res] = await Promise.all([parked, fetch(`${a}/v1/jobs/${job.id}/cancel`, { method: 'POST' })]);
    lat.push(performance.now() - t0);
    if (res.status !== 200) throw new Error(`long-poll answered ${res.status}`);
    await res.text();
  }
  lat.sort((x, y) => x - y);
  return { p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.floor(lat.length * 0.99)] };
}

const rssMb = () => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024;

async function idleSse(count) {
  const job = await post(`${a}/v1/jobs`, { type: 'sleep', input: { steps: 1, step_ms: 600000 } });
  const base = rssMb();
  const { port } = new URL(a);
  const sockets = [];
  let open = 0;
  await new Promise((resolve, reject) => {
    let started = 0;
    const more = () => {
      while (started < count && started - open < 200) {
        started++;
        const s = net.connect(Number(port), '127.0.0.1', () => {
          s.write(`GET /v1/jobs/${job.id}/events HTTP/1.1\r\nHost: x\r\n\r\n`);
        });
        let counted = false;
        s.on('data', () => {
          if (!counted) { counted = true; open++; if (open === count) resolve(); else more(); }
        });
        s.on('error', reject);
        sockets.push(s);
      }
    };
    more();
  });
  await new Promise((r) => setTimeout(r, 500));
  const rss = rssMb();
  for (const s of sockets) s.destroy();
  await fetch(`${a}/v1/jobs/${job.id}/cancel`, { method: 'POST' });
  return { clients: open, rss_mb: rss, base_mb: base };
}

const same = await wakeLatency(a, 200);
const cross = await wakeLatency(b, 200);
const sse = await idleSse(10000);
console.log(JSON.stringify({ same, cross, sse }));
