// Starts real datasphere processes and a real nginx on free loopback ports,
// and checks at the end that each process exited cleanly with no sanitizer
// report. Every test gets its own temporary directory.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const BIN = process.env.DATASPHERE_BIN ?? path.resolve('../build/datasphere');

export function tempDir(prefix = 'ds-test-') {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export { sleep };

const SANITIZER_REPORT = /(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:)/;

// Starts `datasphere serve` (or `worker`); resolves once it is listening.
export async function startServer({ store, name, workers = 2, lease = 30, role = 'serve',
  port = 0, args = [], env = {} }) {
  const argv = [role, '--store', store, '--name', name, '--workers', String(workers),
    '--lease-seconds', String(lease), ...args];
  if (role === 'serve') argv.push('--listen', `127.0.0.1:${port}`);
  const proc = spawn(BIN, argv, {
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const server = { name, proc, log: '', exited: null };
  proc.stdout.on('data', (d) => { server.log += d; });
  proc.stderr.on('data', (d) => { server.log += d; });
  server.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = role === 'serve' ? /listening on http:\/\/[\d.]+:(\d+)/ : /worker running/;
  const deadline = Date.now() + 15000;
  for (;;) {
    const m = server.log.match(ready);
    if (m) {
      if (m[1]) {
        server.port = Number(m[1]);
        server.url = `http://127.0.0.1:${server.port}`;
      }
      return server;
    }
    if (proc.exitCode !== null || Date.now() > deadline)
      throw new Error(`${name} did not start:\n${server.log}`);
    await sleep(20);
  }
}

// Sends SIGTERM (or another signal) and checks the exit: 0 and no sanitizer
// report for SIGTERM; a SIGKILL is only waited for.
export async function stopServer(server, signal = 'SIGTERM') {
  server.stopped = true;
  if (server.proc.exitCode === null && server.proc.signalCode === null) server.proc.kill(signal);
  const { code } = await server.exited;
  if (SANITIZER_REPORT.test(server.log)) throw new Error(`${server.name}: sanitizer report:\n${server.log}`);
  if (signal !== 'SIGKILL' && code !== 0) throw new Error(`${server.name} exited ${code}:\n${server.log}`);
  return code;
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitForPort(port, deadlineMs = 10000) {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    const ok = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => { c.destroy(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(20);
  }
  throw new Error(`nothing listens on ${port}`);
}

// The nginx configuration the tests use is deploy/nginx/datasphere.conf,
// wrapped in a main config with temporary paths; only its listen address and
// upstream servers are replaced.
const DEPLOY_CONF = fileURLToPath(new URL('../../../deploy/nginx/datasphere.conf', import.meta.url));

export function nginxConfig({ port, upstreams, dir }) {
  const site = readFileSync(DEPLOY_CONF, 'utf8')
    .replace(/^\s*server 127\.0\.0\.1:\d+ max_fails=0;\n/gm, '')
    .replace(/(upstream datasphere \{\n)/, `$1${upstreams.map((u) => `    server ${u} max_fails=0;\n`).join('')}`)
    .replace(/listen 127\.0\.0\.1:\d+;/, `listen 127.0.0.1:${port};`);
  return `
worker_processes 1;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${site}
}
`;
}

// Spawns a service and resolves once it accepts connections on port.
async function spawnService(command, args, port) {
  const proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  try {
    await waitForPort(port);
  } catch (e) {
    proc.kill('SIGKILL');
    throw new Error(`${command} did not start: ${log}`);
  }
  return { proc, exited };
}

export async function startNginx(upstreams) {
  const dir = tempDir('ds-nginx-');
  const port = await freePort();
  writeFileSync(path.join(dir, 'nginx.conf'), nginxConfig({ port, upstreams, dir }));
  const { proc, exited } = await spawnService('nginx',
    ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], port);
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      proc.kill('SIGQUIT');
      await exited;
      if (existsSync(dir)) removeDir(dir);
    },
  };
}

// --- HTTP helpers ---

export async function createJob(base, body, headers = {}) {
  const res = await fetch(`${base}/v1/jobs`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { res, json: await res.json() };
}

export async function getJob(base, id, headers = {}, query = '') {
  const res = await fetch(`${base}/v1/jobs/${id}${query}`, { headers });
  const text = await res.text();
  return { res, json: text ? JSON.parse(text) : null };
}

// Polls until the job is terminal; returns the final job object.
export async function waitTerminal(base, id, timeoutMs = 30000) {
  const until = Date.now() + timeoutMs;
  let version = 0;
  while (Date.now() < until) {
    const { res, json } = await getJob(base, id, { 'If-None-Match': `"v${version}"` }, '?wait=5');
    if (res.status === 200) {
      if (['succeeded', 'failed', 'cancelled'].includes(json.status)) return json;
      version = json.version;
    } else if (res.status !== 304) {
      throw new Error(`poll of ${id}: ${res.status}`);
    }
  }
  throw new Error(`job ${id} did not finish in ${timeoutMs} ms`);
}

// Reads an SSE stream until it closes (or until stopAfter events), returning
// the parsed events [{id, event, data}].
export async function readEvents(url, { headers = {}, stopAfter = Infinity, signal } = {}) {
  const res = await fetch(url, { headers, signal });
  const events = [];
  if (res.status !== 200) return { res, events };
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev = {};
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const c = line.indexOf(':');
          const k = line.slice(0, c);
          const v = line.slice(c + 1).replace(/^ /, '');
          if (k === 'id') ev.id = Number(v);
          else if (k === 'event') ev.event = v;
          else if (k === 'data') ev.data = JSON.parse(v);
        }
        if (ev.event) events.push(ev);
        if (events.length >= stopAfter) {
          await reader.cancel();
          return { res, events };
        }
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
  }
  return { res, events };
}

// A private redis-server on a free port, in its own directory. With aof,
// appendonly with appendfsync everysec (the documented default trade-off).
export async function startRedis({ aof = false, dir = tempDir('ds-redis-'), port } = {}) {
  port = port ?? await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', aof ? 'yes' : 'no', '--appendfsync', 'everysec', '--loglevel', 'warning'];
  const { proc, exited } = await spawnService('redis-server', args, port);
  return {
    port, dir, url: `redis://127.0.0.1:${port}`, proc,
    // SIGTERM: redis flushes its AOF and exits.
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
    async remove() {
      await this.stop();
      removeDir(dir);
    },
  };
}

// Runs fn over items with at most `width` in flight; resolves to the results.
export async function pool(items, width, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

// Waits until a worker has picked the job up; returns the job.
export async function waitStarted(base, id, timeoutMs = 20000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const { json } = await getJob(typeof base === 'string' ? base : base.url, id);
    if (json.status !== 'queued') return json;
    if (Date.now() > until) throw new Error(`job ${id} was never started`);
    await sleep(10);
  }
}

// Creates n sleep jobs through a load balancer and polls each (plain GETs,
// no stickiness) until it finishes. Returns the final jobs, the count of
// poll answers by status, and by the X-Served-By instance that gave them.
export async function jobsThroughBalancer(url, n, input) {
  const statuses = {};
  const servedBy = {};
  const ids = await pool(Array.from({ length: n }), 32, async () => {
    const { res, json } = await createJob(url, { type: 'sleep', input });
    if (res.status !== 202) throw new Error(`create answered ${res.status}`);
    return json.id;
  });
  const finals = await pool(ids, 32, async (id) => {
    for (;;) {
      const { res, json } = await getJob(url, id);
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      const by = res.headers.get('x-served-by');
      servedBy[by] = (servedBy[by] ?? 0) + 1;
      if (res.status !== 200) return { id, status: `http ${res.status}` };
      if (json.status !== 'queued' && json.status !== 'running') return json;
      await sleep(20);
    }
  });
  return { ids, finals, statuses, servedBy };
}
