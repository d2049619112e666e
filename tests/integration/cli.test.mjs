// The command line: help, and one clear line with exit code 2 for bad values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { BIN } from './lib/harness.mjs';

const run = (args, env = {}) => spawnSync(BIN, args, { env: { ...process.env, ...env }, encoding: 'utf8' });

test('--help lists every flag with its variable and default', () => {
  const r = run(['serve', '--help']);
  assert.equal(r.status, 0);
  for (const s of ['--listen', 'DATASPHERE_LISTEN', '127.0.0.1:8080', '--store', 'sqlite:./datasphere.db',
    '--workers', '--lease-seconds', '--job-ttl', 'ASYNC_JOB_MODE', 'LLM_BASE_URL'])
    assert.ok(r.stdout.includes(s), `help mentions ${s}`);
  assert.equal(run(['worker', '--help']).status, 0);
  assert.equal(run(['--help']).status, 0);
});

const bad = [
  [['serve', '--workers', 'lots'], {}, /^datasphere: --workers: expected an integer from 0 to 256, got 'lots'\n$/],
  [['serve', '--listen', 'localhost:http'], {}, /^datasphere: --listen: expected HOST:PORT/],
  [['serve', '--lease-seconds', '0'], {}, /--lease-seconds: expected an integer from 1/],
  [['serve'], { DATASPHERE_JOB_TTL: 'forever' }, /--job-ttl: expected an integer/],
  [['serve', '--store'], {}, /--store: missing value/],
  [['serve', '--colour'], {}, /unknown option '--colour'/],
  [['frobnicate'], {}, /unknown command 'frobnicate'/],
];

for (const [args, env, message] of bad) {
  test(`${args.join(' ')} ${JSON.stringify(env)} exits 2 with one line`, () => {
    const r = run(args, env);
    assert.equal(r.status, 2);
    assert.match(r.stderr, message);
  });
}

test('an unusable store is refused at start with exit 1', () => {
  const r = run(['serve', '--store', 'sqlite:/nonexistent-dir/x.db', '--listen', '127.0.0.1:0']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--store sqlite:\/nonexistent-dir\/x\.db/);
  const s = run(['serve', '--store', 'postgres://x', '--listen', '127.0.0.1:0']);
  assert.equal(s.status, 1);
  assert.match(s.stderr, /unknown store scheme/);
});
