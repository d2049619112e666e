// Bad input: every malformed request gets the right 4xx and a problem
// document that says what was wrong, and the server keeps answering.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { startServer, stopServer, tempDir, removeDir, createJob } from './lib/harness.mjs';

let dir, srv, jobId;
before(async () => {
  dir = tempDir();
  srv = await startServer({ store: `sqlite:${path.join(dir, 'jobs.db')}`, name: 'bad', workers: 1,
    args: ['--request-timeout', '1', '--max-body', '4096'] });
  jobId = (await createJob(srv.url, { type: 'sleep', input: { steps: 0, step_ms: 0 } })).json.id;
});
after(async () => {
  await stopServer(srv);
  removeDir(dir);
});

const JSON_CT = { 'Content-Type': 'application/json' };
const sleepJob = (input, extra = {}) => JSON.stringify({ type: 'sleep', input, ...extra });
const forged = () => jobId.slice(0, -1) + (jobId.endsWith('a') ? 'b' : 'a');

// [name, method, path, headers, body, status, detail pattern]
const cases = [
  ['truncated JSON', 'POST', '/v1/jobs', JSON_CT, '{"type":', 400, /not valid JSON.*line 1/],
  ['JSON array body', 'POST', '/v1/jobs', JSON_CT, '[]', 400, /must be a JSON object/],
  ['JSON string body', 'POST', '/v1/jobs', JSON_CT, '"sleep"', 400, /not valid JSON/],
  ['empty body', 'POST', '/v1/jobs', JSON_CT, '', 400, /not valid JSON/],
  ['invalid UTF-8', 'POST', '/v1/jobs', JSON_CT, Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), 400, /not valid JSON/],
  ['missing type', 'POST', '/v1/jobs', JSON_CT, '{"input":{}}', 400, /type is missing/],
  ['type not a string', 'POST', '/v1/jobs', JSON_CT, '{"type":7,"input":{}}', 400, /type is not a string/],
  ['unknown job type', 'POST', '/v1/jobs', JSON_CT, '{"type":"mine-bitcoin","input":{}}', 422, /unknown job type 'mine-bitcoin'/],
  ['missing input', 'POST', '/v1/jobs', JSON_CT, '{"type":"sleep"}', 400, /input is missing/],
  ['input not an object', 'POST', '/v1/jobs', JSON_CT, '{"type":"sleep","input":[1]}', 400, /input is not an object/],
  ['steps is a string', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: '3', step_ms: 1 }), 422, /input\.steps must be an integer/],
  ['negative steps', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: -1, step_ms: 1 }), 422, /input\.steps/],
  ['missing step_ms', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: 1 }), 422, /input\.step_ms/],
  ['step_ms too large', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: 1, step_ms: 1e9 }), 422, /input\.step_ms/],
  ['fail_at zero', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: 1, step_ms: 1, fail_at: 0 }), 422, /input\.fail_at/],
  ['unknown input field', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: 1, step_ms: 1, speed: 2 }), 422, /input\.speed/],
  ['unknown top-level field', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: 1, step_ms: 1 }, { priority: 1 }), 400, /unknown field 'priority'/],
  ['ttl_seconds zero', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: 1, step_ms: 1 }, { ttl_seconds: 0 }), 400, /ttl_seconds/],
  ['ttl_seconds a string', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: 1, step_ms: 1 }, { ttl_seconds: '60' }), 400, /ttl_seconds/],
  ['max_attempts too large', 'POST', '/v1/jobs', JSON_CT, sleepJob({ steps: 1, step_ms: 1 }, { max_attempts: 1000 }), 400, /max_attempts/],
  ['text/plain body', 'POST', '/v1/jobs', { 'Content-Type': 'text/plain' }, sleepJob({ steps: 1, step_ms: 1 }), 415, /application\/json/],
  ['no Content-Type', 'POST', '/v1/jobs', {}, sleepJob({ steps: 1, step_ms: 1 }), 415, /application\/json/],
  ['body over the limit', 'POST', '/v1/jobs', JSON_CT, '{"pad":"' + 'x'.repeat(5000) + '"}', 413, /limit is 4096 bytes/],
  ['Idempotency-Key too long', 'POST', '/v1/jobs', { ...JSON_CT, 'Idempotency-Key': 'k'.repeat(300) }, sleepJob({ steps: 1, step_ms: 1 }), 400, /Idempotency-Key/],
  ['malformed job id', 'GET', '/v1/jobs/not-a-job', {}, null, 404, /no job with id .* was ever issued here/],
  ['forged job id', 'GET', () => `/v1/jobs/${forged()}`, {}, null, 404, /no job with id .* was ever issued here/],
  ['wait not a number', 'GET', () => `/v1/jobs/${jobId}?wait=soon`, {}, null, 400, /wait must be/],
  ['wait too long', 'GET', () => `/v1/jobs/${jobId}?wait=61`, {}, null, 400, /wait must be/],
  ['wait negative', 'GET', () => `/v1/jobs/${jobId}?wait=-1`, {}, null, 400, /wait must be/],
  ['Last-Event-ID not a number', 'GET', () => `/v1/jobs/${jobId}/events`, { 'Last-Event-ID': 'abc' }, null, 400, /Last-Event-ID/],
  ['last_event_id negative', 'GET', () => `/v1/jobs/${jobId}/events?last_event_id=-5`, {}, null, 400, /Last-Event-ID/],
  ['events of a malformed id', 'GET', '/v1/jobs/job_x/events', {}, null, 404, /no job with id .* was ever issued here/],
  ['cancel a malformed id', 'POST', '/v1/jobs/nope/cancel', {}, null, 404, /no job with id .* was ever issued here/],
  ['unknown route', 'GET', '/v2/everything', {}, null, 404, /no resource at \/v2\/everything/],
  ['PUT on the collection', 'PUT', '/v1/jobs', JSON_CT, '{}', 405, /PUT is not allowed.*POST, GET/],
  ['DELETE on the collection', 'DELETE', '/v1/jobs', {}, null, 405, /DELETE is not allowed/],
  ['POST on a job', 'POST', () => `/v1/jobs/${jobId}`, JSON_CT, '{}', 405, /allowed: GET, DELETE/],
  ['list with an unknown status', 'GET', '/v1/jobs?status=done', {}, null, 400, /status must be one of/],
  ['list with limit 0', 'GET', '/v1/jobs?limit=0', {}, null, 400, /limit must be/],
  ['list with limit abc', 'GET', '/v1/jobs?limit=abc', {}, null, 400, /limit must be/],
  ['list with a made-up cursor', 'GET', '/v1/jobs?cursor=abc', {}, null, 400, /cursor/],
];

for (const [name, method, p, headers, body, status, detail] of cases) {
  test(`${name} -> ${status}`, async () => {
    const url = srv.url + (typeof p === 'function' ? p() : p);
    const res = await fetch(url, { method, headers, body: body ?? undefined });
    assert.equal(res.status, status);
    assert.equal(res.headers.get('content-type'), 'application/problem+json');
    const doc = await res.json();
    assert.equal(doc.status, status);
    assert.equal(typeof doc.title, 'string');
    assert.match(doc.detail, detail);
    if (status === 405) assert.ok(res.headers.get('allow'));
  });
}

// Raw socket cases: what no well-behaved HTTP client would send.
function raw(bytes, { stallMs = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(srv.port, '127.0.0.1');
    let data = '';
    const started = Date.now();
    sock.on('connect', () => sock.write(bytes));
    sock.on('data', (d) => { data += d; });
    sock.on('error', reject);
    sock.on('close', () => {
      const [head, ...rest] = data.split('\r\n\r\n');
      const status = Number((head.match(/^HTTP\/1\.1 (\d{3})/) || [])[1]);
      resolve({ status, head, body: rest.join('\r\n\r\n'), elapsed: Date.now() - started });
    });
    setTimeout(() => sock.destroy(), 5000 + stallMs);
  });
}

const rawCases = [
  ['headers too large', `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'y'.repeat(20000)}\r\n\r\n`, 431, /headers are larger/],
  ['garbage request line', 'HELLO THERE\r\n\r\n', 400, /malformed HTTP request/],
  ['request target too long', `GET /${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414, /longer than 8192/],
  ['chunked body over the limit', 'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
    + `Transfer-Encoding: chunked\r\n\r\n1400\r\n${'x'.repeat(0x1400)}\r\n0\r\n\r\n`, 413, /over the limit/],
  ['body shorter than Content-Length, then a stall', 'POST /v1/jobs HTTP/1.1\r\nHost: x\r\n'
    + 'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"type"', 408, /did not arrive completely within 1 s/],
  ['headers never finished', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1', 408, /within 1 s/],
];

for (const [name, bytes, status, detail] of rawCases) {
  test(`raw: ${name} -> ${status}`, async () => {
    const r = await raw(bytes);
    assert.equal(r.status, status, r.head);
    assert.match(r.head, /Content-Type: application\/problem\+json/);
    assert.match(r.head, /X-Served-By: bad/);
    assert.match(JSON.parse(r.body).detail, detail);
    if (status === 408) assert.ok(r.elapsed >= 900 && r.elapsed < 4000, `took ${r.elapsed} ms`);
  });
}

test('an idle connection that never sends a byte is closed without an answer', async () => {
  const r = await raw('');
  assert.equal(r.head, '');
  assert.ok(r.elapsed >= 900 && r.elapsed < 4000);
});

test('pipelined requests are answered in order on one connection', async () => {
  const r = await raw('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: one\r\n\r\n'
    + 'GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-Id: two\r\nConnection: close\r\n\r\n');
  assert.match(r.head, /^HTTP\/1\.1 200 OK/);
  const all = r.head + '\r\n\r\n' + r.body;
  assert.ok(all.indexOf('X-Request-Id: one') < all.indexOf('X-Request-Id: two'));
  assert.match(all, /HTTP\/1\.1 404 Not Found/);
});

test('after all of that the server still answers', async () => {
  const res = await fetch(`${srv.url}/healthz`);
  assert.equal(res.status, 200);
  const { res: created } = await createJob(srv.url, { type: 'sleep', input: { steps: 0, step_ms: 0 } });
  assert.equal(created.status, 202);
});
