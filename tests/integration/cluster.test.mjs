// Several real instances on one SQLite file, behind a real nginx doing
// round-robin with no stickiness: the promise this project exists for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import {
  startServer, stopServer, startNginx, tempDir, removeDir, createJob, getJob, waitTerminal,
  readEvents, sleep, waitStarted, jobsThroughBalancer,
} from './lib/harness.mjs';

async function withCluster(opts, fn) {
  const dir = tempDir();
  const store = `sqlite:${path.join(dir, 'jobs.db')}`;
  const servers = [];
  try {
    for (const o of opts) servers.push(await startServer({ store, ...o }));
    await fn(servers, store, dir);
  } finally {
    for (const s of servers) if (!s.stopped) await stopServer(s);
    removeDir(dir);
  }
}

test('1,000 jobs through round-robin nginx: every poll 200, all succeed, both instances answer', async () => {
  await withCluster([{ name: 'A' }, { name: 'B' }], async ([a, b]) => {
    const lb = await startNginx([`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`]);
    try {
      const { finals, statuses, servedBy } = await jobsThroughBalancer(lb.url, 1000, { steps: 1, step_ms: 5 });
      assert.deepEqual(Object.keys(statuses), ['200'], `poll statuses: ${JSON.stringify(statuses)}`);
      assert.equal(finals.filter((j) => j.status === 'succeeded').length, 1000);
      assert.ok(servedBy.A > 100 && servedBy.B > 100, `served by ${JSON.stringify(servedBy)}`);
    } finally {
      await lb.stop();
    }
  });
});

test('the memory: store behind the same round-robin shows the 404s this project prevents', async () => {
  const a = await startServer({ store: 'memory:', name: 'MA' });
  const b = await startServer({ store: 'memory:', name: 'MB' });
  const lb = await startNginx([`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`]);
  try {
    // Each job is polled twice: with strict round-robin one of the two polls
    // lands on the instance that never saw the job.
    let notFound = 0;
    for (let i = 0; i < 100; i++) {
      const { json } = await createJob(lb.url, { type: 'sleep', input: { steps: 0, step_ms: 0 } });
      for (let k = 0; k < 2; k++) {
        const { res } = await getJob(lb.url, json.id);
        if (res.status === 404) notFound++;
        else assert.equal(res.status, 200);
      }
    }
    assert.ok(notFound >= 60 && notFound <= 140, `${notFound} of 200 polls were 404`);
  } finally {
    await lb.stop();
    await stopServer(a);
    await stopServer(b);
  }
});

test('an SSE stream dropped on A resumes on B with Last-Event-ID: every event once, in order', async () => {
  await withCluster([{ name: 'A' }, { name: 'B' }], async ([a, b]) => {
    const { json } = await createJob(a.url, { type: 'sleep', input: { steps: 6, step_ms: 150 } });
    const first = await readEvents(`${a.url}${json.links.events}`, { stopAfter: 3 });
    assert.equal(first.res.headers.get('x-served-by'), 'A');
    const last = first.events.at(-1).id;
    const rest = await readEvents(`${b.url}${json.links.events}`, { headers: { 'Last-Event-ID': String(last) } });
    assert.equal(rest.res.headers.get('x-served-by'), 'B');
    const all = [...first.events, ...rest.events];
    assert.deepEqual(all.map((e) => e.id), Array.from({ length: all.length }, (_, i) => i + 1));
    assert.deepEqual(all.map((e) => e.event),
      ['status', 'status', 'progress', 'progress', 'progress', 'progress', 'progress', 'progress', 'result']);
    assert.equal(all.filter((e) => e.event === 'result').length, 1);
  });
});

test('a long-poll on B wakes within 100 ms of a change made by a worker in A', async () => {
  await withCluster([{ name: 'A', workers: 1 }, { name: 'B', workers: 0 }], async ([a, b]) => {
    const { json } = await createJob(a.url, { type: 'sleep', input: { steps: 4, step_ms: 300 } });
    let version = (await waitStarted(a, json.id)).version;
    const lags = [];
    for (let i = 0; i < 3; i++) {
      // The same poll on A wakes directly (its worker made the change): the reference.
      const pollOn = async (srv) => {
        const { res, json: j } = await getJob(srv.url, json.id, { 'If-None-Match': `"v${version}"` }, '?wait=10');
        return { at: performance.now(), res, j };
      };
      const [onA, onB] = await Promise.all([pollOn(a), pollOn(b)]);
      assert.equal(onA.res.status, 200);
      assert.equal(onB.res.status, 200);
      assert.equal(onB.res.headers.get('x-served-by'), 'B');
      lags.push(onB.at - onA.at);
      version = Math.min(onA.j.version, onB.j.version);
    }
    for (const lag of lags) assert.ok(lag < 100, `B woke ${lags.map((l) => l.toFixed(1)).join(', ')} ms after A`);
  });
});

test('kill -9 of the instance running a job: another finishes it after the lease, once', async () => {
  await withCluster([{ name: 'A', workers: 1, lease: 2 }], async (servers, store) => {
    const [a] = servers;
    const { json } = await createJob(a.url, { type: 'sleep', input: { steps: 8, step_ms: 100 } });
    await waitStarted(a, json.id);
    const b = await startServer({ store, name: 'B', workers: 1, lease: 2 });
    servers.push(b);
    await stopServer(a, 'SIGKILL');
    const done = await waitTerminal(b.url, json.id, 20000);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.attempts, 2);
    const { events } = await readEvents(`${b.url}${json.links.events}`);
    assert.equal(events.filter((e) => e.event === 'result').length, 1, 'the result is written once');
    assert.deepEqual(events.filter((e) => e.event === 'status').map((e) => e.data.status),
      ['queued', 'running', 'queued', 'running']);
    const metrics = await (await fetch(`${b.url}/metrics`)).text();
    assert.match(metrics, /datasphere_lease_takeovers_total 1/);
  });
});

// One request over a kept-alive connection, so it still reaches a draining instance.
function keptAlive(agent, url) {
  return new Promise((resolve, reject) => {
    http.get(url, { agent }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

test('SIGTERM while jobs run: /readyz 503 at once, parked polls answered, no job lost', async () => {
  await withCluster([{ name: 'A', workers: 2, args: ['--drain-seconds', '1'] }], async (servers, store) => {
    const [a] = servers;
    const jobs = [];
    for (let i = 0; i < 2; i++)
      jobs.push((await createJob(a.url, { type: 'sleep', input: { steps: 10, step_ms: 300 } })).json);
    for (const j of jobs) await waitStarted(a, j.id);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    assert.equal((await keptAlive(agent, `${a.url}/readyz`)).status, 200);
    const parked = getJob(a.url, jobs[0].id, { 'If-None-Match': '"v999"' }, '?wait=30');
    await sleep(100);
    a.proc.kill('SIGTERM');
    await sleep(100);
    const ready = await keptAlive(agent, `${a.url}/readyz`);
    assert.equal(ready.status, 503);
    assert.match(JSON.parse(ready.body).detail, /shutting down/);
    const answered = await parked;
    assert.equal(answered.res.status, 200, 'the parked long-poll was answered, not dropped');
    agent.destroy();
    await stopServer(a);
    const b = await startServer({ store, name: 'B', workers: 2 });
    servers.push(b);
    for (const j of jobs) {
      const done = await waitTerminal(b.url, j.id);
      assert.equal(done.status, 'succeeded');
      assert.equal(done.attempts, 1, 'a job handed back on drain does not count as a failed attempt');
    }
  });
});

test('both instances restarted: every job and its events are still there', async () => {
  const dir = tempDir();
  const store = `sqlite:${path.join(dir, 'jobs.db')}`;
  try {
    let a = await startServer({ store, name: 'A' });
    let b = await startServer({ store, name: 'B' });
    const ids = [];
    for (let i = 0; i < 10; i++)
      ids.push((await createJob(i % 2 ? a.url : b.url, { type: 'sleep', input: { steps: 2, step_ms: 1 } })).json.id);
    const before = {};
    for (const id of ids) before[id] = await waitTerminal(a.url, id);
    await stopServer(a);
    await stopServer(b);
    a = await startServer({ store, name: 'A2' });
    b = await startServer({ store, name: 'B2' });
    try {
      for (const id of ids) {
        const { res, json } = await getJob(b.url, id);
        assert.equal(res.status, 200);
        assert.deepEqual(json, before[id]);
        const { events } = await readEvents(`${a.url}/v1/jobs/${id}/events`);
        assert.deepEqual(events.map((e) => e.event), ['status', 'status', 'progress', 'progress', 'result']);
      }
    } finally {
      await stopServer(a);
      await stopServer(b);
    }
  } finally {
    removeDir(dir);
  }
});

test('datasphere worker runs jobs with no HTTP of its own', async () => {
  await withCluster([{ name: 'api', workers: 0 }, { name: 'w', role: 'worker', workers: 2 }], async ([api]) => {
    const { json } = await createJob(api.url, { type: 'sleep', input: { steps: 2, step_ms: 10 } });
    const done = await waitTerminal(api.url, json.id);
    assert.equal(done.status, 'succeeded');
  });
});
