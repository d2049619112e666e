/* The Lua scripts of the redis:// backend. Each state change is one script:
 * atomic, fenced by the lease token, bumping `version`, appending to the
 * job's event list and publishing the change on ds:changes in one step (one
 * message per call, a line "ID EVENT" per change).
 *
 * DESIGN
 * The scripts mirror job_apply() in src/job/job.c; the transition table is
 * not repeated here: store_redis.c generates `local T = {...}` from
 * job_transition_allowed() and puts it in front of every script, so the C
 * table stays the only one. Values that need JSON (input, progress, result,
 * error, event data) arrive rendered by C, so the scripts only join strings.
 * They keep the job's fields only: C renders the job object from them
 * (job_render_text(), the one renderer), so Redis spends neither CPU nor
 * memory on a second copy of each job.
 *
 * Keys: KEYS[1] ds:{id}:job (hash), KEYS[2] ds:{id}:events (list of
 * "SEQ NAME DATA", capped at about 1,000: a list costs bytes per event where
 * a stream would cost a preallocated 4 KB node per job; deleted when the job
 * finishes), KEYS[3] ds:queue
 * (stream, group "workers"), KEYS[4] ds:jobs (zset, the list index),
 * KEYS[5] ds:expiry (zset by expiry time); ds:state:N (one zset per state
 * but running, for counts and filtered lists) are named inside the scripts.
 * Hash fields: st state, v version, sq last event seq, at attempts, ma max
 * attempts, tk lease token, le lease expiry (ms), cx cancel requested,
 * cr/sa/fi/ex created, started, finished, expires (ms, 0 = null), ttl (s), ty
 * type, in/pr/rs/er JSON texts ('' = null), qid its queue entry. A field
 * that is missing reads as 0 (numbers) or null: a new job stores only the
 * fields that have a value. */
#include "store/store_redis_lua.h"

// clang-format off
const char redis_lua_prelude[] =
    "local NAMES = {[0]='queued', [1]='running', [2]='succeeded', [3]='failed', [4]='cancelled'}\n"
    /* K: the keys of the job at hand; claim_next learns them from the queue. */
    "local K = {job = KEYS[1], ev = KEYS[2]}\n"
    "local STATE = {[0]='ds:state:0', [2]='ds:state:2', [3]='ds:state:3',\n"
    "               [4]='ds:state:4'}\n"
    "local NUM = {st=1, v=1, sq=1, at=1, ma=1, le=1, cx=1, cr=1, sa=1, fi=1, ex=1, ttl=1}\n"
    "local FIELDS = {'st', 'v', 'sq', 'at', 'ma', 'tk', 'le', 'cx', 'cr', 'sa', 'fi', 'ex', 'ttl',\n"
    "                'ty', 'in', 'pr', 'rs', 'er', 'qid'}\n"
    /* D: an integer as text (tostring() would format it as a float). */
    "local function D(n) return string.format('%d', n) end\n"
    /* What a worker's claim and writes read: a field costs time in every
     * HMGET, and these scripts run for every job. */
    "local CLAIM = {'st', 'v', 'sq', 'at', 'ma', 'cr', 'ttl', 'ty', 'in', 'qid'}\n"
    "local WRITE = {'st', 'v', 'sq', 'at', 'tk', 'le', 'cx', 'ttl', 'qid'}\n"
    /* load(): the job's fields (all, or those named; 'st' first) as a table
     * that records which are assigned (DIRTY), so save() writes only those;
     * nil when there is no job. */
    "local DIRTY = {}\n"
    "local function load(key, fields)\n"
    "  fields = fields or FIELDS\n"
    "  local h = redis.call('HMGET', key, unpack(fields))\n"
    "  if not h[1] then return nil end\n"
    "  local data = {}\n"
    "  for i, k in ipairs(fields) do\n"
    "    if NUM[k] then data[k] = tonumber(h[i] or 0) elseif h[i] then data[k] = h[i] end\n"
    "  end\n"
    "  DIRTY = {}\n"
    "  return setmetatable({}, {__index = data,\n"
    "    __newindex = function(_, k, v) data[k] = v; DIRTY[k] = true end})\n"
    "end\n"
    "local function save(j)\n"
    "  local args = {}\n"
    "  for k in pairs(DIRTY) do\n"
    "    local v = j[k]\n"
    "    if v ~= nil then\n"
    "      args[#args + 1] = k; args[#args + 1] = type(v) == 'number' and D(v) or v\n"
    "    end\n"
    "  end\n"
    "  DIRTY = {}\n"
    "  if #args > 0 then redis.call('HSET', K.job, unpack(args)) end\n"
    "end\n"
    /* PUB: the changes this call made, "ID EVENT" each; done() publishes
     * them on ds:changes in one message as the script returns r. */
    "local PUB = {}\n"
    "local function publish(id, name) PUB[#PUB + 1] = id .. ' ' .. name end\n"
    "local function done(r)\n"
    "  if #PUB > 0 then redis.call('PUBLISH', 'ds:changes', table.concat(PUB, '\\n')) end\n"
    "  return r\n"
    "end\n"
    /* Appends an event whose data is {"job_id","version", <fields>} and publishes it. */
    "local function emit(id, j, name, fields)\n"
    "  j.sq = j.sq + 1\n"
    "  local data = '{\"job_id\":\"' .. id .. '\",\"version\":' .. D(j.v) .. ',' .. fields .. '}'\n"
    "  redis.call('RPUSH', K.ev, D(j.sq) .. ' ' .. name .. ' ' .. data)\n"
    "  if j.sq > 1000 and j.sq % 100 == 0 then redis.call('LTRIM', K.ev, -1000, -1) end\n"
    "  publish(id, name)\n"
    "end\n"
    "local function emit_status(id, j)\n"
    "  emit(id, j, 'status', '\"status\":\"' .. NAMES[j.st] .. '\",\"attempts\":' .. D(j.at))\n"
    "end\n"
    "local function unqueue(j)\n"
    "  if j.qid and j.qid ~= '' then\n"
    "    redis.call('XACK', KEYS[3], 'workers', j.qid)\n"
    "    redis.call('XDEL', KEYS[3], j.qid)\n"
    "  end\n"
    "  j.qid = ''\n"
    "end\n"
    "local function enqueue(id, j)\n"
    "  unqueue(j)\n"
    "  j.qid = redis.call('XADD', KEYS[3], '*', 'id', id)\n"
    "end\n"
    /* move(): the transition table T (generated from C) decides. */
    "local function move(id, j, to, now)\n"
    "  if not T[j.st][to] then return false end\n"
    /* Running jobs have no zset: their queue entries are the group's
     * pending list, which says which and how many. */
    "  if j.st ~= 1 then redis.call('ZREM', STATE[j.st], id) end\n"
    "  if to ~= 1 then redis.call('ZADD', STATE[to], 0, id) end\n"
    "  j.st = to\n"
    "  j.v = j.v + 1\n"
    "  if to == 1 then j.sa = now end\n"
    "  if to == 0 then j.tk = ''; j.le = 0; enqueue(id, j) end\n"
    /* The first claim's event (seq 2: running, version 2, attempts 1) is the
     * same for every job, so it is derived when read, like the first. */
    "  if to == 1 and j.sq == 1 and j.v == 2 and j.at == 1 then\n"
    "    j.sq = 2\n"
    "    publish(id, 'status')\n"
    "    return true\n"
    "  end\n"
    "  if to < 2 then emit_status(id, j); return true end\n"
    "  j.fi = now\n"
    "  j.ex = now + j.ttl * 1000\n"
    "  unqueue(j)\n"
    /* Finished: what only a running job needs goes, and so do its events: the
     * last one (result or error) is derived from the fields when read, by
     * job_terminal_event() in C, and a client resuming from older gets a
     * snapshot first. */
    "  if j.sq > 2 then redis.call('DEL', K.ev) end\n" /* else it never had a list */
    "  j.sq = j.sq + 1\n"
    "  publish(id, to == 2 and 'result' or 'error')\n"
    "  j.tk, j.le, j.qid = '', 0, ''\n"
    "  redis.call('ZADD', KEYS[5], D(j.ex), id)\n"
    "  redis.call('PEXPIREAT', K.job, D(j.ex))\n"
    "  return true\n"
    "end\n"
    /* {code, field, value, ...}: C renders the job object from the fields. */
    "local function reply(code, j)\n"
    "  if not j then return {code} end\n"
    "  local r = {code}\n"
    "  for _, k in ipairs(FIELDS) do\n"
    "    local v = j[k]\n"
    "    if v then r[#r + 1] = k; r[#r + 1] = type(v) == 'number' and D(v) or v end\n"
    "  end\n"
    "  return r\n"
    "end\n"
    /* Claims the jobs of up to #tokens new queue entries for a worker, one
     * token each: a list of {'ok', id, type, input, attempts, max_attempts,
     * version, seq, created, ttl}, empty when the queue has nothing new.
     * Entries whose job is no longer queued under them (cancelled,
     * requeued, gone) are dropped. */
    "local function claim_many(consumer, tokens, lease, now)\n"
    "  local out = {}\n"
    "  for _ = 1, 8 do\n"
    "    local want = #tokens - #out\n"
    "    if want == 0 then break end\n"
    "    local r = redis.call('XREADGROUP', 'GROUP', 'workers', consumer, 'COUNT', want,\n"
    "                         'STREAMS', KEYS[3], '>')\n"
    "    if not r then break end\n"
    "    for _, e in ipairs(r[1][2]) do\n"
    "      local qid, id = e[1], e[2][2]\n"
    "      K.job, K.ev = 'ds:{' .. id .. '}:job', 'ds:{' .. id .. '}:events'\n"
    "      local j = load(K.job, CLAIM)\n"
    "      if j and j.st == 0 and j.qid == qid then\n"
    "        j.tk = tokens[#out + 1]\n"
    "        j.le = now + lease\n"
    "        move(id, j, 1, now)\n"
    "        save(j)\n"
    "        out[#out + 1] = {'ok', id, j.ty, j['in'], D(j.at), D(j.ma), D(j.v), D(j.sq), D(j.cr),\n"
    "                         D(j.ttl)}\n"
    "      else\n"
    "        redis.call('XACK', KEYS[3], 'workers', qid)\n"
    "        redis.call('XDEL', KEYS[3], qid)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    /* One write to job id (mirrors job_apply()): a = {op, tk (the lease
     * token), lease, now, payload, error, cancelled ('1' if the failure is a
     * cancellation), consumer (the worker's), doc (true: the reply carries
     * the job's fields)}. Returns {code[, field, value...]}. */
    "local function apply_op(id, a)\n"
    "  local op, now = a.op, a.now\n"
    "  local function answer(code, j) return a.doc and reply(code, j) or {code} end\n"
    "  K.job, K.ev = 'ds:{' .. id .. '}:job', 'ds:{' .. id .. '}:events'\n"
    "  local j = load(K.job, (a.doc or op == 'cancel') and FIELDS or WRITE)\n"
    "  if not j then return {'notfound'} end\n"
    "  if op == 'cancel' then\n"
    "    if j.st >= 2 then return {'conflict'} end\n"
    "    if j.st == 1 then\n"
    "      if j.cx == 0 then j.cx = 1; j.v = j.v + 1; save(j) end\n"
    "      return answer('ok', j)\n"
    "    end\n"
    "    j.er = '{\"code\":\"cancelled\",\"message\":\"cancelled before it started\"}'\n"
    "    move(id, j, 4, now)\n"
    "    save(j)\n"
    "    return answer('ok', j)\n"
    "  end\n"
    "  if j.st ~= 1 or j.tk ~= a.tk then return {'lease_lost'} end\n"
    "  if op == 'release' then move(id, j, 0, now); save(j); return answer('ok', j) end\n"
    "  if op == 'succeed' or op == 'fail' then\n"
    "    if op == 'succeed' then j.rs = a.payload else j.er = a.error end\n"
    "    move(id, j, op == 'succeed' and 2 or a.cancelled == '1' and 4 or 3, now)\n"
    "    save(j)\n"
    "    return answer('ok', j)\n"
    "  end\n"
    "  if j.cx == 1 then return {'cancelled'} end\n"
    "  j.le = now + a.lease\n"
    /* Any write by the lease holder keeps its queue entry fresh, so the
     * reaper's XAUTOCLAIM (entries idle for a whole lease) passes it by. */
    "  redis.call('XCLAIM', KEYS[3], 'workers', a.consumer, 0, j.qid, 'JUSTID')\n"
    "  if op == 'token' then\n"
    "    emit(id, j, 'token', string.sub(a.payload, 2, -2))\n"
    "  elseif op == 'progress' then\n"
    "    j.pr = a.payload\n"
    "    j.v = j.v + 1\n"
    "    emit(id, j, 'progress', string.sub(a.payload, 2, -2))\n"
    "  end\n"
    "  save(j)\n"
    "  return answer('ok', j)\n"
    "end\n";

/* ARGV: the number of jobs, '1' if this is a resend (the jobs may exist
 * already), then per job: id, type, input, ttl, max_attempts, now,
 * idempotency key ('' = none), body hash, key ttl ms. Creates them all (the
 * creates an HTTP loop has in flight go in one call); the reply has one
 * entry per job: {'ok'} (the caller knows the new job), {'exists',
 * fields..., 'id', ID} for an idempotent replay, or {'mismatch'}.
 * No event list yet: every job's first two events are the same ("queued"
 * at version 1; the first claim's "running" at version 2, attempts 1), so
 * readers derive them (job_status_event()); the list starts at seq 3. No PUBLISH: nothing can be waiting on a job before its
 * id is known, and workers wait on the queue itself. */
const char redis_lua_create[] =
    "local function create(a)\n"
    "  local id = a[1]\n"
    "  local job = 'ds:{' .. id .. '}:job'\n"
    /* A create sent again after a lost reply finds its own job: the same
     * answer. (A first send cannot: its ids are new.) */
    "  if ARGV[2] == '1' and redis.call('EXISTS', job) == 1 then return {'ok'} end\n"
    "  if a[7] ~= '' then\n"
    "    local prior = redis.call('GET', a[7])\n"
    "    if prior then\n"
    "      local hash, pid = string.match(prior, '^(%S+) (%S+)$')\n"
    "      if hash ~= a[8] then return {'mismatch'} end\n"
    "      local p = load('ds:{' .. pid .. '}:job')\n"
    "      if p then local r = reply('exists', p); r[#r + 1] = 'id'; r[#r + 1] = pid; return r end\n"
    "    end\n"
    "    redis.call('SET', a[7], a[8] .. ' ' .. id, 'PX', a[9])\n"
    "  end\n"
    "  local qid = redis.call('XADD', KEYS[3], '*', 'id', id)\n"
    /* Only the fields with a value: the others read as 0 or null. */
    "  redis.call('HSET', job, 'st', '0', 'v', '1', 'sq', '1', 'at', '1', 'ma', a[5], 'cr', a[6],\n"
    "             'ttl', a[4], 'ty', a[2], 'in', a[3], 'qid', qid)\n"
    "  redis.call('ZADD', KEYS[4], 0, id)\n"
    "  redis.call('ZADD', STATE[0], 0, id)\n"
    "  return {'ok'}\n"
    "end\n"
    "local out = {}\n"
    "for i = 0, tonumber(ARGV[1]) - 1 do\n"
    "  out[i + 1] = create({unpack(ARGV, 3 + i * 9, 11 + i * 9)})\n"
    "end\n"
    "return out\n";

/* ARGV: op, id, token, lease_ms, now, payload JSON, error JSON, '1' if the
 * failure is a cancellation, the worker's queue consumer name, '1' to have
 * the job's fields in the reply. */
const char redis_lua_apply[] =
    "return done(apply_op(ARGV[2], {op = ARGV[1], tk = ARGV[3], lease = tonumber(ARGV[4]),\n"
    "                               now = tonumber(ARGV[5]), payload = ARGV[6], error = ARGV[7],\n"
    "                               cancelled = ARGV[8], consumer = ARGV[9],\n"
    "                               doc = ARGV[10] == '1'}))\n";

/* ARGV: consumer, lease_ms, now, n writes, n tokens, then per write: op, id,
 * token, payload JSON, error JSON, cancelled; then the tokens. The last
 * writes of several jobs and the claim of up to one job per token, in one
 * call: {{code per write}, claimed job...}. */
const char redis_lua_settle[] =
    "local consumer, lease, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local n, m = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local codes = {}\n"
    "for i = 0, n - 1 do\n"
    "  local b = 6 + i * 6\n"
    "  codes[i + 1] = apply_op(ARGV[b + 1], {op = ARGV[b], tk = ARGV[b + 2], lease = lease,\n"
    "                          now = now, payload = ARGV[b + 3], error = ARGV[b + 4],\n"
    "                          cancelled = ARGV[b + 5], consumer = consumer})[1]\n"
    "end\n"
    "local tokens = {}\n"
    "for i = 1, m do tokens[i] = ARGV[5 + n * 6 + i] end\n"
    "local r = {codes}\n"
    "for _, job in ipairs(claim_many(consumer, tokens, lease, now)) do r[#r + 1] = job end\n"
    "return done(r)\n";

/* ARGV: id, queue entry id, token, lease_ms, now. Claims the job of one
 * queue entry of this consumer's: delivered by XREADGROUP BLOCK, or found
 * pending by the recheck after a call whose reply was lost. */
const char redis_lua_claim[] =
    "local id, qid, now = ARGV[1], ARGV[2], tonumber(ARGV[5])\n"
    "local j = load(KEYS[1], CLAIM)\n"
    /* Running under this very entry: a job some worker of ours runs, or one
     * a lost reply claimed for nobody. Its lease decides, not us: the entry
     * stays, and if nobody renews the lease the reaper hands the job on. */
    "if j and j.st == 1 and j.qid == qid then return {'skip'} end\n"
    "if not j or j.st ~= 0 or j.qid ~= qid then\n"
    "  redis.call('XACK', KEYS[3], 'workers', qid)\n"
    "  redis.call('XDEL', KEYS[3], qid)\n"
    "  return {'skip'}\n"
    "end\n"
    "j.tk = ARGV[3]\n"
    "j.le = now + tonumber(ARGV[4])\n"
    "move(id, j, 1, now)\n"
    "save(j)\n"
    "return done({'ok', id, j.ty, j['in'], D(j.at), D(j.ma), D(j.v), D(j.sq), D(j.cr),\n"
    "             D(j.ttl)})\n";

/* ARGV: id, queue entry id, now. A queue entry idle past the lease: its
 * worker is gone. */
const char redis_lua_requeue[] =
    "local id, qid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local j = load(KEYS[1])\n"
    "if not j or j.qid ~= qid or j.st >= 2 then\n"
    "  redis.call('XACK', KEYS[3], 'workers', qid)\n"
    "  redis.call('XDEL', KEYS[3], qid)\n"
    "  return {'gone'}\n"
    "end\n"
    "if j.st == 0 then enqueue(id, j); save(j); return {'redelivered'} end\n"
    "if j.le > now then return {'alive'} end\n"
    "if j.at >= j.ma then\n"
    "  j.er = '{\"code\":\"worker_lost\",\"message\":"
    "\"the worker running this job stopped and no attempts are left\"}'\n"
    "  move(id, j, 3, now)\n"
    "  save(j)\n"
    "  return done({'failed'})\n"
    "end\n"
    "j.at = j.at + 1\n"
    "move(id, j, 0, now)\n"
    "save(j)\n"
    "return done({'requeued'})\n";

/* ARGV: id. Forgets a finished job. */
const char redis_lua_remove[] =
    "local st = redis.call('HGET', KEYS[1], 'st')\n"
    "if not st then return {'notfound'} end\n"
    "if tonumber(st) < 2 then return {'conflict'} end\n"
    "redis.call('DEL', KEYS[1], KEYS[2])\n"
    "redis.call('ZREM', 'ds:state:' .. st, ARGV[1])\n"
    "redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "redis.call('ZREM', KEYS[5], ARGV[1])\n"
    "return {'ok'}\n";

/* ARGV: now, batch. Drops index entries of jobs past their TTL (the keys
 * expire by themselves). KEYS: [4] ds:jobs, [5] ds:expiry. */
const char redis_lua_expire[] =
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])\n"
    "for _, id in ipairs(ids) do\n"
    "  for st = 2, 4 do redis.call('ZREM', STATE[st], id) end\n"
    "  redis.call('ZREM', KEYS[4], id)\n"
    "  redis.call('ZREM', KEYS[5], id)\n"
    "  redis.call('DEL', 'ds:{' .. id .. '}:job', 'ds:{' .. id .. '}:events')\n"
    "end\n"
    "return #ids\n";
// clang-format on
