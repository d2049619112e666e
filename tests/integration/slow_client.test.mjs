// A client that stops reading an event stream must not make the server hold
// an ever-growing backlog for it, nor hold up anything else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer, stopServer, createJob, waitTerminal, sleep } from './lib/harness.mjs';

const sseClients = async (url) =>
  Number((await (await fetch(`${url}/metrics`)).text()).match(/datasphere_sse_clients (\d+)/)[1]);

test('an SSE client that stops reading is cut off once far behind; the job and the server go on', async () => {
  const srv = await startServer({ store: 'memory:', name: 'S', workers: 1 });
  try {
    // ~18 MB of progress events in a second or two: more than the socket
    // buffers of both ends plus the 1 MiB the server keeps for a reader.
    const { json } = await createJob(srv.url, { type: 'sleep', input: { steps: 100000, step_ms: 0 } });
    const sock = net.connect(srv.port, '127.0.0.1');
    const chunks = [];
    const ended = new Promise((resolve) => sock.on('end', resolve));
    sock.on('data', (d) => chunks.push(d));
    sock.on('connect', () => {
      sock.write(`GET /v1/jobs/${json.id}/events HTTP/1.1\r\nHost: x\r\n\r\n`);
      sock.pause(); // stop reading
    });
    let open = 1;
    for (let i = 0; i < 300 && open > 0; i++) {
      await sleep(100);
      open = await sseClients(srv.url);
    }
    assert.equal(open, 0, 'the server let go of the stream it could not deliver');
    const job = await waitTerminal(srv.url, json.id);
    assert.equal(job.status, 'succeeded', 'the job went on without the reader');
    sock.resume(); // now take what was sent before the cut
    await ended;
    const text = Buffer.concat(chunks).toString();
    assert.match(text, /^HTTP\/1\.1 200 OK/);
    assert.ok(!text.includes('event: result'), 'the stream was cut before its end, not finished');
  } finally {
    await stopServer(srv);
  }
});
