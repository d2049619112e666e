// The redis:// store with real redis-server processes: many instances, one
// Redis, real failures (kill -9, SIGSTOP, Redis restart and outage).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopServer, startNginx, startRedis, createJob, getJob, waitTerminal, readEvents,
  sleep, waitStarted, jobsThroughBalancer,
} from './lib/harness.mjs';

const results = (events) => events.filter((e) => e.event === 'result').length;

async function withRedis(opts, fn, { aof = false } = {}) {
  const redis = await startRedis({ aof });
  const servers = [];
  try {
    for (const o of opts) servers.push(await startServer({ store: redis.url, ...o }));
    await fn(servers, redis);
  } finally {
    for (const s of servers) if (!s.stopped) await stopServer(s);
    await redis.remove();
  }
}

test('three instances and a worker on one Redis behind nginx: 2,000 jobs, zero 404s, each done once', async () => {
  const opts = [{ name: 'A', workers: 1 }, { name: 'B', workers: 1 }, { name: 'C', workers: 1 },
    { name: 'W', role: 'worker', workers: 2 }];
  await withRedis(opts, async ([a, b, c]) => {
    const lb = await startNginx([a, b, c].map((s) => `127.0.0.1:${s.port}`));
    try {
      const { ids, finals, statuses, servedBy } = await jobsThroughBalancer(lb.url, 2000, { steps: 1, step_ms: 2 });
      assert.deepEqual(Object.keys(statuses), ['200'], `poll statuses ${JSON.stringify(statuses)}`);
      assert.equal(finals.filter((j) => j.status === 'succeeded' && j.attempts === 1).length, 2000);
      for (const s of ['A', 'B', 'C']) assert.ok(servedBy[s] > 100, `served by ${JSON.stringify(servedBy)}`);
      // Exactly once: every sampled job's stream has one result, by attempt 1.
      for (const id of ids.filter((_, i) => i % 20 === 0)) {
        const { events } = await readEvents(`${lb.url}/v1/jobs/${id}/events`);
        assert.equal(results(events), 1);
        assert.equal(finals[ids.indexOf(id)].result.attempt, 1);
      }
    } finally {
      await lb.stop();
    }
  });
});

test('SSE resumes across instances; a long-poll on one wakes within 100 ms of a change on another', async () => {
  await withRedis([{ name: 'A', workers: 1 }, { name: 'B', workers: 0 }], async ([a, b]) => {
    const { json } = await createJob(a.url, { type: 'sleep', input: { steps: 5, step_ms: 200 } });
    const first = await readEvents(`${a.url}${json.links.events}`, { stopAfter: 3 });
    const rest = await readEvents(`${b.url}${json.links.events}`,
      { headers: { 'Last-Event-ID': String(first.events.at(-1).id) } });
    const all = [...first.events, ...rest.events];
    assert.deepEqual(all.map((e) => e.id), Array.from({ length: all.length }, (_, i) => i + 1));
    assert.equal(all.at(-1).event, 'result');
    assert.equal(results(all), 1);

    const { json: slow } = await createJob(a.url, { type: 'sleep', input: { steps: 4, step_ms: 300 } });
    let version = (await waitStarted(a, slow.id)).version;
    const lags = [];
    for (let i = 0; i < 3; i++) {
      const poll = async (srv) => {
        const r = await getJob(srv.url, slow.id, { 'If-None-Match': `"v${version}"` }, '?wait=10');
        return { at: performance.now(), ...r };
      };
      const [onA, onB] = await Promise.all([poll(a), poll(b)]);
      assert.equal(onB.res.status, 200);
      lags.push(Math.abs(onB.at - onA.at));
      version = Math.min(onA.json.version, onB.json.version);
    }
    for (const lag of lags) assert.ok(lag < 100, `B woke ${lags.map((l) => l.toFixed(1))} ms apart from A`);
  });
});

test('kill -9 of an instance running jobs: others finish every one after the lease, none twice', async () => {
  await withRedis([{ name: 'A', workers: 4, lease: 2 }], async (servers, redis) => {
    const [a] = servers;
    const ids = [];
    for (let i = 0; i < 4; i++)
      ids.push((await createJob(a.url, { type: 'sleep', input: { steps: 10, step_ms: 100 } })).json.id);
    for (const id of ids) await waitStarted(a, id);
    const b = await startServer({ store: redis.url, name: 'B', workers: 4, lease: 2 });
    servers.push(b);
    await stopServer(a, 'SIGKILL');
    for (const id of ids) {
      const done = await waitTerminal(b.url, id, 20000);
      assert.equal(done.status, 'succeeded');
      assert.equal(done.attempts, 2);
      assert.equal(done.result.attempt, 2);
      const { events } = await readEvents(`${b.url}/v1/jobs/${id}/events`);
      assert.equal(results(events), 1);
    }
  });
});

test('a worker frozen past its lease is fenced off: the new attempt writes the result', async () => {
  await withRedis([{ name: 'api', workers: 0, lease: 2 }, { name: 'W1', role: 'worker', workers: 1, lease: 2 }],
    async (servers, redis) => {
      const [api, w1] = servers;
      const { json } = await createJob(api.url, { type: 'sleep', input: { steps: 12, step_ms: 250 } });
      await waitStarted(api, json.id);
      w1.proc.kill('SIGSTOP');
      const w2 = await startServer({ store: redis.url, name: 'W2', role: 'worker', workers: 1, lease: 2 });
      servers.push(w2);
      // The lease runs out; the job goes back to the queue and W2 takes it.
      for (;;) {
        const { json: j } = await getJob(api.url, json.id);
        if (j.attempts === 2 && j.status === 'running') break;
        await sleep(50);
      }
      w1.proc.kill('SIGCONT');
      const done = await waitTerminal(api.url, json.id, 20000);
      assert.equal(done.status, 'succeeded');
      assert.equal(done.result.attempt, 2, "the result is the new worker's");
      const { events } = await readEvents(`${api.url}${json.links.events}`);
      assert.equal(results(events), 1);
      for (let i = 0; i < 50 && !/lease lost/.test(w1.log); i++) await sleep(100);
      assert.match(w1.log, /lease lost to another worker; this attempt's writes are discarded/);
    });
});

test('Redis restarted (AOF): queued, running and finished jobs are all there, and the queued ones run', async () => {
  const redis = await startRedis({ aof: true });
  const api = await startServer({ store: redis.url, name: 'api', workers: 0 });
  let worker;
  try {
    const done = (await createJob(api.url, { type: 'sleep', input: { steps: 0, step_ms: 0 } })).json;
    worker = await startServer({ store: redis.url, name: 'W', role: 'worker', workers: 1, lease: 2 });
    await waitTerminal(api.url, done.id);
    const running = (await createJob(api.url, { type: 'sleep', input: { steps: 20, step_ms: 100 } })).json;
    await waitStarted(api, running.id);
    const queued = [];
    for (let i = 0; i < 3; i++)
      queued.push((await createJob(api.url, { type: 'sleep', input: { steps: 1, step_ms: 10 } })).json);
    const before = (await getJob(api.url, done.id)).json;
    await redis.stop();
    const again = await startRedis({ aof: true, dir: redis.dir, port: redis.port });
    try {
      // Everything is answered again without restarting any instance.
      let res;
      for (let i = 0; i < 50; i++) {
        ({ res } = await getJob(api.url, done.id));
        if (res.status === 200) break;
        await sleep(100);
      }
      assert.deepEqual((await getJob(api.url, done.id)).json, before);
      for (const j of [running, ...queued]) {
        const final = await waitTerminal(api.url, j.id, 30000);
        assert.equal(final.status, 'succeeded');
      }
    } finally {
      await stopServer(worker);
      await stopServer(api);
      await again.remove();
    }
  } catch (e) {
    if (!api.stopped) await stopServer(api, 'SIGKILL');
    if (worker && !worker.stopped) await stopServer(worker, 'SIGKILL');
    await redis.remove();
    throw e;
  }
});

test('Redis down for 5 s under load: 503s, no crash, no accepted job lost, full service after', async () => {
  const redis = await startRedis({ aof: true });
  const a = await startServer({ store: redis.url, name: 'A', workers: 2 });
  const b = await startServer({ store: redis.url, name: 'B', workers: 2 });
  let again;
  try {
    const accepted = [];
    const statuses = {};
    let stop = false;
    const load = (srv) => (async () => {
      while (!stop) {
        const { res, json } = await createJob(srv.url, { type: 'sleep', input: { steps: 1, step_ms: 5 } });
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status === 202) accepted.push(json.id);
        else {
          assert.equal(res.status, 503, JSON.stringify(json));
          assert.equal(json.status, 503);
          assert.equal(res.headers.get('retry-after'), '1');
        }
        await sleep(5);
      }
    })();
    const loads = [load(a), load(b)];
    await sleep(500);
    await redis.stop();
    const t0 = Date.now();
    const ready = await fetch(`${a.url}/readyz`);
    assert.equal(ready.status, 503);
    assert.ok(Date.now() - t0 < 1000, 'answered at once, not after a hang');
    await sleep(5000);
    again = await startRedis({ aof: true, dir: redis.dir, port: redis.port });
    await sleep(1500);
    stop = true;
    await Promise.all(loads);
    assert.ok(statuses[503] > 0, `statuses ${JSON.stringify(statuses)}`);
    assert.equal((await fetch(`${b.url}/readyz`)).status, 200);
    for (const id of accepted) assert.equal((await waitTerminal(a.url, id, 30000)).status, 'succeeded');
    for (const s of [a, b]) assert.ok((s.log.match(/connection lost/g) ?? []).length <= 2, s.log);
  } finally {
    await stopServer(a);
    await stopServer(b);
    if (again) await again.remove();
    else await redis.remove();
  }
});

test('creates sent together on Redis: each gets its own job; one Idempotency-Key gets one job', async () => {
  await withRedis([{ name: 'A', workers: 0 }], async ([a]) => {
    // Fired at once, many of these share one create call on the loop.
    const body = { type: 'sleep', input: { steps: 1, step_ms: 1 } };
    const plain = await Promise.all(Array.from({ length: 200 }, () => createJob(a.url, body)));
    assert.deepEqual([...new Set(plain.map((r) => r.res.status))], [202]);
    assert.equal(new Set(plain.map((r) => r.json.id)).size, 200);
    for (const { res, json } of plain) assert.equal(res.headers.get('location'), `/v1/jobs/${json.id}`);
    const keyed = await Promise.all(Array.from({ length: 50 },
      () => createJob(a.url, body, { 'Idempotency-Key': 'batch-1' })));
    const ids = new Set(keyed.map((r) => r.json.id));
    assert.equal(ids.size, 1, 'one job for the key');
    assert.deepEqual(keyed.map((r) => r.res.status).sort(), [...Array(49).fill(200), 202]);
    const other = await createJob(a.url, { ...body, input: { steps: 2, step_ms: 1 } },
      { 'Idempotency-Key': 'batch-1' });
    assert.equal(other.res.status, 422);
    assert.match(other.json.detail, /batch-1/);
    let listed = 0;
    for (let cursor = ''; ;) {
      const page = await (await fetch(`${a.url}/v1/jobs?status=queued&limit=100${cursor}`)).json();
      listed += page.jobs.length;
      if (!page.next_cursor) break;
      cursor = `&cursor=${page.next_cursor}`;
    }
    assert.equal(listed, 201, 'every job is stored once');
  });
});

test('SIGTERM on Redis: running jobs are handed back at the drain deadline and finish elsewhere', async () => {
  await withRedis([{ name: 'A', workers: 4, args: ['--drain-seconds', '1'] }], async ([a], redis) => {
    const body = { type: 'sleep', input: { steps: 10, step_ms: 300 } };
    const jobs = [(await createJob(a.url, body)).json, (await createJob(a.url, body)).json];
    for (const j of jobs) await waitStarted(a, j.id);
    const quick = (await createJob(a.url, { type: 'sleep', input: { steps: 1, step_ms: 1 } })).json;
    assert.equal((await waitTerminal(a.url, quick.id)).status, 'succeeded');
    await stopServer(a); // SIGTERM; must exit 0 within the drain
    const b = await startServer({ store: redis.url, name: 'B', workers: 2 });
    try {
      for (const j of jobs) {
        const done = await waitTerminal(b.url, j.id);
        assert.equal(done.status, 'succeeded');
        assert.equal(done.attempts, 1, 'handed back on drain: not a failed attempt');
      }
    } finally {
      await stopServer(b);
    }
  });
});

test('cancellation requested on one instance stops a job running in a worker on another', async () => {
  await withRedis([{ name: 'api', workers: 0 }, { name: 'W', role: 'worker', workers: 1 }], async ([api]) => {
    const { json } = await createJob(api.url, { type: 'sleep', input: { steps: 100, step_ms: 100 } });
    await waitStarted(api, json.id);
    const t0 = Date.now();
    const res = await fetch(`${api.url}/v1/jobs/${json.id}/cancel`, { method: 'POST' });
    assert.equal(res.status, 202);
    const done = await waitTerminal(api.url, json.id);
    assert.equal(done.status, 'cancelled');
    assert.ok(Date.now() - t0 < 2000);
  });
});

test("a finished job's stream on Redis: a snapshot of the whole job, then its result, once", async () => {
  await withRedis([{ name: 'A', workers: 1 }], async ([a]) => {
    const { json } = await createJob(a.url, { type: 'sleep', input: { steps: 3, step_ms: 1 } });
    const done = await waitTerminal(a.url, json.id);
    const { events } = await readEvents(`${a.url}${json.links.events}`);
    assert.deepEqual(events.map((e) => e.event), ['snapshot', 'result']);
    const [snapshot, result] = events;
    assert.equal(snapshot.data.job_id, json.id);
    assert.deepEqual({ ...snapshot.data, job_id: undefined }, { ...done, job_id: undefined });
    assert.equal(snapshot.id, result.id - 1, 'the snapshot is numbered just before the kept event');
    assert.equal(result.data.status, 'succeeded');
    const again = await fetch(`${a.url}${json.links.events}`, { headers: { 'Last-Event-ID': String(result.id) } });
    assert.equal(again.status, 204);
  });
});
