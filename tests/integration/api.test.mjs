// The /v1/jobs API against one real server on a SQLite file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  startServer, stopServer, tempDir, removeDir, createJob, getJob, waitTerminal, readEvents,
} from './lib/harness.mjs';

let dir, srv;
before(async () => {
  dir = tempDir();
  srv = await startServer({ store: `sqlite:${path.join(dir, 'jobs.db')}`, name: 'solo', workers: 2,
    args: ['--sse-heartbeat', '1'] });
});
after(async () => {
  await stopServer(srv);
  removeDir(dir);
});

test('create answers 202 with Location, Retry-After and the job object', async () => {
  const { res, json } = await createJob(srv.url, { type: 'sleep', input: { steps: 2, step_ms: 10 } });
  assert.equal(res.status, 202);
  assert.equal(res.headers.get('location'), `/v1/jobs/${json.id}`);
  assert.equal(res.headers.get('retry-after'), '1');
  assert.equal(res.headers.get('x-served-by'), 'solo');
  assert.ok(res.headers.get('x-request-id'));
  assert.match(json.id, /^job_[0-9a-hjkmnp-tv-z]{56}$/);
  assert.equal(json.status, 'queued');
  assert.equal(json.version, 1);
  assert.equal(res.headers.get('etag'), '"v1"');
  const done = await waitTerminal(srv.url, json.id);
  assert.equal(done.status, 'succeeded');
  assert.deepEqual(done.result, { steps: 2, slept_ms: 20, attempt: 1 });
  assert.equal(done.progress.percent, 100);
  assert.ok(done.finished_at && done.expires_at);
});

test('X-Request-Id is echoed', async () => {
  const res = await fetch(`${srv.url}/healthz`, { headers: { 'X-Request-Id': 'trace-123' } });
  assert.equal(res.headers.get('x-request-id'), 'trace-123');
  assert.deepEqual(await res.json(), { status: 'ok' });
});

test('If-None-Match answers 304 while unchanged, 200 after a change', async () => {
  const { json } = await createJob(srv.url, { type: 'sleep', input: { steps: 1, step_ms: 300 } });
  const done = await waitTerminal(srv.url, json.id);
  const r304 = await getJob(srv.url, json.id, { 'If-None-Match': `"v${done.version}"` });
  assert.equal(r304.res.status, 304);
  assert.equal(r304.res.headers.get('etag'), `"v${done.version}"`);
  const r200 = await getJob(srv.url, json.id, { 'If-None-Match': '"v1"' });
  assert.equal(r200.res.status, 200);
  assert.equal(r200.json.version, done.version);
  assert.equal(r200.res.headers.get('retry-after'), null, 'finished jobs carry no Retry-After');
});

test('long-poll returns as soon as the version moves, or 304 after wait', async () => {
  const { json } = await createJob(srv.url, { type: 'sleep', input: { steps: 1, step_ms: 400 } });
  const t0 = Date.now();
  const moved = await getJob(srv.url, json.id, { 'If-None-Match': '"v1"' }, '?wait=10');
  assert.equal(moved.res.status, 200);
  assert.ok(moved.json.version > 1);
  assert.ok(Date.now() - t0 < 5000);
  const done = await waitTerminal(srv.url, json.id);
  const t1 = Date.now();
  const still = await getJob(srv.url, json.id, { 'If-None-Match': `"v${done.version}"` }, '?wait=1');
  assert.equal(still.res.status, 304);
  assert.ok(Date.now() - t1 >= 900, 'the poll waited');
});

test('events stream every change once, in order, and end after the result', async () => {
  const { json } = await createJob(srv.url, { type: 'sleep', input: { steps: 3, step_ms: 50 } });
  const { res, events } = await readEvents(`${srv.url}${json.links.events}`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  assert.equal(res.headers.get('x-accel-buffering'), 'no');
  assert.equal(res.headers.get('cache-control'), 'no-cache');
  assert.deepEqual(events.map((e) => e.event),
    ['status', 'status', 'progress', 'progress', 'progress', 'result']);
  assert.deepEqual(events.map((e) => e.id), [1, 2, 3, 4, 5, 6]);
  for (const e of events) {
    assert.equal(e.data.job_id, json.id);
    assert.equal(typeof e.data.version, 'number');
  }
  // Resuming after the last event of a finished job: 204, EventSource stops.
  const again = await fetch(`${srv.url}${json.links.events}`, { headers: { 'Last-Event-ID': '6' } });
  assert.equal(again.status, 204);
  const part = await readEvents(`${srv.url}${json.links.events}?last_event_id=4`);
  assert.deepEqual(part.events.map((e) => e.id), [5, 6]);
});

test('idle event streams get keep-alive comments', async () => {
  const { json } = await createJob(srv.url, { type: 'sleep', input: { steps: 1, step_ms: 2500 } });
  const res = await fetch(`${srv.url}${json.links.events}`);
  const reader = res.body.getReader();
  let text = '';
  const until = Date.now() + 2200;
  while (!text.includes(': keep-alive') && Date.now() < until) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  await reader.cancel();
  assert.ok(text.startsWith(': '), 'a comment is written at once');
  assert.match(text, /retry: \d+/);
  assert.match(text, /: keep-alive/);
});

test('cancel: a queued job at once, a running one at its next step, 409 after', async () => {
  const { json: running } = await createJob(srv.url, { type: 'sleep', input: { steps: 50, step_ms: 100 } });
  await getJob(srv.url, running.id, { 'If-None-Match': '"v1"' }, '?wait=5');
  const c = await fetch(`${srv.url}/v1/jobs/${running.id}/cancel`, { method: 'POST' });
  assert.equal(c.status, 202);
  const done = await waitTerminal(srv.url, running.id);
  assert.equal(done.status, 'cancelled');
  assert.equal(done.error.code, 'cancelled');
  assert.ok(done.progress === null || done.progress.percent < 100);
  const again = await fetch(`${srv.url}/v1/jobs/${running.id}/cancel`, { method: 'POST' });
  assert.equal(again.status, 409);
  assert.equal(again.headers.get('content-type'), 'application/problem+json');
});

test('a job that fails reports its error', async () => {
  const { json } = await createJob(srv.url, { type: 'sleep', input: { steps: 3, step_ms: 1, fail_at: 2 } });
  const done = await waitTerminal(srv.url, json.id);
  assert.equal(done.status, 'failed');
  assert.equal(done.error.code, 'step_failed');
  assert.equal(done.result, null);
});

test('delete: 409 while running, 204 when finished, then 410 Gone', async () => {
  const { json } = await createJob(srv.url, { type: 'sleep', input: { steps: 1, step_ms: 500 } });
  const early = await fetch(`${srv.url}/v1/jobs/${json.id}`, { method: 'DELETE' });
  assert.equal(early.status, 409);
  await waitTerminal(srv.url, json.id);
  const del = await fetch(`${srv.url}/v1/jobs/${json.id}`, { method: 'DELETE' });
  assert.equal(del.status, 204);
  const gone = await getJob(srv.url, json.id);
  assert.equal(gone.res.status, 410);
  assert.match(gone.json.detail, /expired or was deleted/);
});

test('Idempotency-Key: same body returns the same job, another body 422', async () => {
  const key = `k-${Date.now()}`;
  const body = { type: 'sleep', input: { steps: 0, step_ms: 0 } };
  const a = await createJob(srv.url, body, { 'Idempotency-Key': key });
  const b = await createJob(srv.url, body, { 'Idempotency-Key': key });
  assert.equal(a.res.status, 202);
  assert.equal(b.res.status, 200);
  assert.equal(b.json.id, a.json.id);
  assert.equal(b.res.headers.get('location'), `/v1/jobs/${a.json.id}`);
  const c = await createJob(srv.url, { ...body, ttl_seconds: 5 }, { 'Idempotency-Key': key });
  assert.equal(c.res.status, 422);
});

test('list: newest first, filtered, paginated with a cursor', async () => {
  const type = 'sleep';
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push((await createJob(srv.url, { type, input: { steps: 0, step_ms: 0 } })).json.id);
  for (const id of ids) await waitTerminal(srv.url, id);
  const first = await (await fetch(`${srv.url}/v1/jobs?limit=2&status=succeeded`)).json();
  assert.deepEqual(first.jobs.map((j) => j.id), [ids[4], ids[3]]);
  assert.ok(first.next_cursor);
  const second = await (await fetch(`${srv.url}/v1/jobs?limit=2&status=succeeded&cursor=${first.next_cursor}`)).json();
  assert.deepEqual(second.jobs.map((j) => j.id), [ids[2], ids[1]]);
  const none = await (await fetch(`${srv.url}/v1/jobs?status=queued&type=nothing`)).json();
  assert.deepEqual(none, { jobs: [], next_cursor: null });
});

test('readyz, metrics, and the browser page', async () => {
  const ready = await fetch(`${srv.url}/readyz`);
  assert.equal(ready.status, 200);
  // Two paths serve one route (/jobs/{id} is /v1/jobs/{id}): one series for both.
  const { json } = await createJob(srv.url, { type: 'sleep', input: { steps: 0, step_ms: 0 } });
  const count = async () => Number(((await (await fetch(`${srv.url}/metrics`)).text())
    .match(/datasphere_http_requests_total\{route="jobs_get",status="200"\} (\d+)/) ?? [0, 0])[1]);
  const before = await count();
  assert.equal((await fetch(`${srv.url}/jobs/${json.id}`)).status, 200);
  assert.equal((await fetch(`${srv.url}/v1/jobs/${json.id}`)).status, 200);
  assert.equal(await count(), before + 2);
  await fetch(`${srv.url}/nowhere`);
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  const series = metrics.split('\n').filter((l) => l.startsWith('datasphere_http_requests_total{'))
    .map((l) => l.split(' ')[0]);
  assert.equal(new Set(series).size, series.length, 'no series appears twice');
  assert.match(metrics, /datasphere_http_requests_total\{route="unmatched",status="404"\} \d+/);
  assert.match(metrics, /datasphere_http_requests_total\{route="jobs_create",status="202"\} \d+/);
  assert.match(metrics, /datasphere_jobs\{status="succeeded"\} \d+/);
  assert.match(metrics, /datasphere_queue_depth \d+/);
  assert.match(metrics, /datasphere_lease_takeovers_total \d+/);
  assert.match(metrics, /datasphere_sse_clients \d+/);
  const page = await fetch(`${srv.url}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type'), /text\/html/);
  assert.match(await page.text(), /EventSource/);
});

test('an id this deployment never issued is 404, not 410', async () => {
  const { json } = await createJob(srv.url, { type: 'sleep', input: { steps: 0, step_ms: 0 } });
  const forged = json.id.slice(0, -1) + (json.id.endsWith('a') ? 'b' : 'a');
  const r = await getJob(srv.url, forged);
  assert.equal(r.res.status, 404);
});
