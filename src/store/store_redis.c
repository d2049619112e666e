/* The redis://HOST:PORT[/DB] backend: jobs in Redis, shared by any number of
 * instances on any number of hosts.
 *
 * DESIGN
 * Every change is one Lua script (store_redis_lua.c): atomic, fenced by the
 * lease token, bumping `version`, appending to the job's event list and
 * publishing "ID EVENT" on ds:changes in one step; C never reads, modifies
 * and writes back. The scripts get the transition table generated from
 * job_transition_allowed(), so it is written once, in job.c.
 *
 * Keys (all keys of one job share the hash tag {ID}):
 *   ds:{ID}:job      hash: the job's fields (C renders the job object from them)
 *   ds:{ID}:events   list of "SEQ NAME DATA", capped at about 1,000 entries;
 *                    deleted when the job finishes (its last event is
 *                    derived from the job's fields)
 *   ds:queue         stream + consumer group "workers": XREADGROUP claims,
 *                    heartbeats XCLAIM (keeping the entry fresh), the reaper
 *                    XAUTOCLAIMs entries idle past the lease (a dead worker's)
 *   ds:jobs, ds:state:N   zsets of ids (list pages; counts by state)
 *   ds:expiry        zset id -> expiry ms, swept by the reaper
 *   ds:idem:SHA      "BODYHASH ID", 24 h
 *   ds:meta          hash: the id MAC key
 * A finished job's two keys get PEXPIREAT at its expiry.
 *
 * Connections, reconnection and script loading are store_redis_conn.c's.
 * A handle attached to an HTTP loop also has an asynchronous connection on
 * that loop for polls (the end of this file): the reads of all requests in
 * flight on the loop go out pipelined, in one write, instead of one blocking
 * round trip each. */
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "store/store.h"
#include "store/store_redis_conn.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

/* Field/value pairs of a job hash (HGETALL, or a script's reply from
 * element `from` on) -> the texts the renderer takes, borrowed from r, and
 * the last event's seq (not part of the object) into *seq. */
static void fields_to_text(const redisReply *r, size_t from, const char *id, struct job_text *t,
                           int64_t *seq /* OUT */)
{
    *seq = 0;
    memset(t, 0, sizeof *t);
    t->id = id;
    t->type = "";
    for (size_t i = from; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str, *v = r->element[i + 1]->str;
        long long n = strtoll(v, NULL, 10);
        if (!strcmp(k, "st"))
            t->state = (enum job_state)n;
        else if (!strcmp(k, "v"))
            t->version = n;
        else if (!strcmp(k, "at"))
            t->attempts = (int)n;
        else if (!strcmp(k, "ma"))
            t->max_attempts = (int)n;
        else if (!strcmp(k, "cx"))
            t->cancel_requested = n;
        else if (!strcmp(k, "cr"))
            t->created_ms = n;
        else if (!strcmp(k, "sa"))
            t->started_ms = n;
        else if (!strcmp(k, "fi"))
            t->finished_ms = n;
        else if (!strcmp(k, "ex"))
            t->expires_ms = n;
        else if (!strcmp(k, "ty"))
            t->type = v;
        else if (!strcmp(k, "in"))
            t->input = v;
        else if (!strcmp(k, "pr"))
            t->progress = v;
        else if (!strcmp(k, "rs"))
            t->result = v;
        else if (!strcmp(k, "er"))
            t->error = v;
        else if (!strcmp(k, "id"))
            t->id = v;
        else if (!strcmp(k, "sq"))
            *seq = n;
    }
}

/* Renders the job whose fields r holds from element `from` on into *out
 * (may be NULL: nothing to do). */
static int render_fields(const redisReply *r, size_t from, const char *id, struct store_doc *out)
{
    if (!out)
        return 0;
    struct job_text t;
    fields_to_text(r, from, id, &t, &out->event_seq);
    out->json = job_render_text(&t);
    out->version = t.version;
    out->state = t.state;
    return out->json ? 0 : DS_E_NOMEM;
}

static int rd_open(const char *location, store **out)
{
    redis_scripts_init();
    struct redis_store *s = calloc(1, sizeof *s);
    if (!s)
        return DS_E_NOMEM;
    s->base.ops = &store_redis_ops;
    if (redis_parse_location(s, location)) {
        free(s);
        return DS_E_INVALID;
    }
    snprintf(s->consumer, sizeof s->consumer, "c-%08x%08x", randombytes_random(),
             randombytes_random());
    atomic_store(&s->listen_fd, -1);
    int rc = redis_ensure(s);
    if (rc) {
        log_error("redis %s:%d: not reachable", s->host, s->port);
        free(s);
        return rc;
    }
    *out = &s->base;
    return 0;
}

static void rd_close(store *st)
{
    struct redis_store *s = R(st);
    s->closing = true;
    if (s->ac)
        redisAsyncFree(s->ac); /* pending reads are told UNAVAILABLE */
    if (s->c)
        redisFree(s->c);
    free(s);
}

static int rd_ping(store *st)
{
    redisReply *r = redis_fmt(R(st), "PING");
    int rc = r && r->type == REDIS_REPLY_STATUS ? 0 : DS_E_UNAVAILABLE;
    freeReplyObject(r);
    return rc;
}

static int rd_id_key(store *st, uint8_t key[JOB_ID_KEY_LEN])
{
    struct redis_store *s = R(st);
    uint8_t fresh[JOB_ID_KEY_LEN];
    job_id_random_key(fresh);
    freeReplyObject(redis_fmt(s, "HSETNX ds:meta id_key %b", fresh, sizeof fresh));
    redisReply *r = redis_fmt(s, "HGET ds:meta id_key");
    int rc = !r                                                          ? DS_E_UNAVAILABLE
             : r->type == REDIS_REPLY_STRING && r->len == JOB_ID_KEY_LEN ? 0
                                                                         : DS_E_IO;
    if (!rc)
        memcpy(key, r->str, JOB_ID_KEY_LEN);
    freeReplyObject(r);
    return rc;
}

static char *json_text(const json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("");
}

/* The create script's command for job, formatted (the caller frees it
 * with redisFreeCommand()); NULL when out of memory. */
static char *create_command(const struct redis_store *s, const struct job *job,
                            const struct job_events *ev, const struct store_idem *idem, size_t *len)
{
    char ttl[24], ma[24], now[24], idem_ms[24], idem_key[80] = "ds:idem:none";
    char *input = json_text(job->input);
    snprintf(ttl, sizeof ttl, "%lld", (long long)job->ttl_s);
    snprintf(ma, sizeof ma, "%d", job->max_attempts);
    snprintf(now, sizeof now, "%lld", (long long)job->created_ms);
    snprintf(idem_ms, sizeof idem_ms, "%lld",
             (long long)(idem ? idem->expires_ms - job->created_ms : 0));
    bool keyed = idem && idem->key;
    if (keyed) { /* the client's key, hashed into a tidy Redis key */
        unsigned char d[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(d, (const unsigned char *)idem->key, strlen(idem->key));
        memcpy(idem_key, "ds:idem:", 8);
        sodium_bin2hex(idem_key + 8, sizeof idem_key - 8, d, 24);
    }
    const char *args[] = {job->id,
                          job->type,
                          input ? input : "{}",
                          ttl,
                          ma,
                          now,
                          ev->n ? ev->v[0].data : "",
                          "",
                          keyed ? idem->body_hash : "",
                          idem_ms};
    char *cmd = input ? redis_format_script(s, S_CREATE, job->id, idem_key, 10, args, len) : NULL;
    free(input);
    return cmd;
}

/* The create script's reply -> rc; *out is the existing job for DS_E_EXISTS
 * (0: the caller has the new one). */
static int create_outcome(const redisReply *r, const char *id, struct store_doc *out)
{
    int rc = redis_reply_rc(r);
    if (rc == DS_E_EXISTS) {
        int drc = render_fields(r, 1, id, out);
        rc = drc ? drc : rc;
    }
    return rc;
}

static int rd_create(store *st, const struct job *job, const struct job_events *ev,
                     const struct store_idem *idem, struct store_doc *out)
{
    struct redis_store *s = R(st);
    size_t len;
    char *cmd = create_command(s, job, ev, idem, &len);
    if (!cmd)
        return DS_E_NOMEM;
    redisReply *r = redis_run_formatted(s, cmd, len);
    int rc = create_outcome(r, job->id, out);
    if (rc == 0 && out)
        rc = store_doc_from_job(out, job);
    freeReplyObject(r);
    redisFreeCommand(cmd);
    return rc;
}

/* An HGETALL of a job hash -> 0, or why not. */
static int hash_reply(const redisReply *r)
{
    if (!r)
        return DS_E_UNAVAILABLE;
    if (r->type != REDIS_REPLY_ARRAY)
        return DS_E_IO;
    return r->elements ? 0 : DS_E_NOTFOUND;
}

static int rd_get(store *st, const char *id, struct store_doc *out)
{
    redisReply *r = redis_fmt(R(st), "HGETALL ds:{%s}:job", id);
    int rc = hash_reply(r);
    if (!rc)
        rc = render_fields(r, 0, id, out);
    freeReplyObject(r);
    return rc;
}

/* An HMGET v st -> version and state. */
static int peek_reply(const redisReply *r, int64_t *version, enum job_state *state)
{
    if (!r)
        return DS_E_UNAVAILABLE;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        return DS_E_IO;
    if (r->element[0]->type != REDIS_REPLY_STRING)
        return DS_E_NOTFOUND;
    *version = strtoll(r->element[0]->str, NULL, 10);
    *state = (enum job_state)atoi(r->element[1]->str);
    return 0;
}

static int rd_peek(store *st, const char *id, int64_t *version, enum job_state *state)
{
    redisReply *r = redis_fmt(R(st), "HMGET ds:{%s}:job v st", id);
    int rc = peek_reply(r, version, state);
    freeReplyObject(r);
    return rc;
}

static json_t *json_or_null(const char *text)
{
    return *text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
}

/* HGETALL's pairs -> a whole job: the rendered fields parsed, plus what
 * only workers need. */
static void fields_to_job(const redisReply *r, const char *id, struct job *job)
{
    struct job_text t;
    int64_t seq;
    fields_to_text(r, 0, id, &t, &seq);
    *job = (struct job){.event_seq = seq,
                        .state = t.state,
                        .input = json_or_null(t.input ? t.input : ""),
                        .progress = json_or_null(t.progress ? t.progress : ""),
                        .result = json_or_null(t.result ? t.result : ""),
                        .error = json_or_null(t.error ? t.error : ""),
                        .attempts = t.attempts,
                        .max_attempts = t.max_attempts,
                        .created_ms = t.created_ms,
                        .started_ms = t.started_ms,
                        .finished_ms = t.finished_ms,
                        .expires_ms = t.expires_ms,
                        .version = t.version,
                        .cancel_requested = t.cancel_requested};
    snprintf(job->id, sizeof job->id, "%s", id);
    snprintf(job->type, sizeof job->type, "%s", t.type);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!strcmp(k, "tk"))
            job->lease_token = strtoull(v, NULL, 10);
        else if (!strcmp(k, "le"))
            job->lease_expires_ms = strtoll(v, NULL, 10);
        else if (!strcmp(k, "ttl"))
            job->ttl_s = strtoll(v, NULL, 10);
    }
}

static int rd_load(store *st, const char *id, struct job *out)
{
    redisReply *r = redis_fmt(R(st), "HGETALL ds:{%s}:job", id);
    int rc = !r                             ? DS_E_UNAVAILABLE
             : r->type != REDIS_REPLY_ARRAY ? DS_E_IO
             : r->elements == 0             ? DS_E_NOTFOUND
                                            : 0;
    if (!rc)
        fields_to_job(r, id, out);
    freeReplyObject(r);
    return rc;
}

static const char *op_name(enum job_op_kind k)
{
    static const char *const names[] = {
        [JOB_OP_HEARTBEAT] = "heartbeat", [JOB_OP_PROGRESS] = "progress",
        [JOB_OP_TOKEN] = "token",         [JOB_OP_SUCCEED] = "succeed",
        [JOB_OP_FAIL] = "fail",           [JOB_OP_CANCEL] = "cancel",
        [JOB_OP_RELEASE] = "release"};
    return k < sizeof names / sizeof names[0] && names[k] ? names[k] : NULL;
}

/* Runs the apply script for op on job id; with claim, also claims the next
 * queued job under claim->token in the same call (the reply is then
 * {apply's reply, claim's reply}). The caller frees the reply. */
static redisReply *run_apply(struct redis_store *s, const char *id, const struct job_op *op,
                             int64_t now_ms, bool want_doc, const struct job_op *claim)
{
    char token[24], lease[24], now[24], next[24] = "";
    snprintf(token, sizeof token, "%llu", (unsigned long long)op->token);
    snprintf(lease, sizeof lease, "%lld", (long long)op->lease_ms);
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    if (claim)
        snprintf(next, sizeof next, "%llu", (unsigned long long)claim->token);
    char *payload = json_text(op->payload);
    json_t *err = op->kind == JOB_OP_FAIL ? json_pack("{s:s, s:s}", "code", op->code, "message",
                                                      op->message ? op->message : op->code)
                                          : NULL;
    char *error = json_text(err);
    bool cancelled = op->kind == JOB_OP_FAIL && !strcmp(op->code, "cancelled");
    const char *args[] = {op_name(op->kind),
                          id,
                          token,
                          lease,
                          now,
                          payload ? payload : "",
                          error ? error : "",
                          cancelled ? "1" : "0",
                          s->consumer,
                          want_doc ? "1" : "0",
                          next};
    redisReply *r = redis_run(s, S_APPLY, id, NULL, 11, args);
    free(payload);
    free(error);
    json_decref(err);
    return r;
}

static int rd_apply(store *st, const char *id, const struct job_op *op, int64_t now_ms,
                    struct store_doc *out)
{
    if (!op_name(op->kind))
        return DS_E_INVALID;
    redisReply *r = run_apply(R(st), id, op, now_ms, out != NULL, NULL);
    int rc = redis_reply_rc(r);
    if (!rc)
        rc = render_fields(r, 1, id, out);
    freeReplyObject(r);
    return rc;
}

static int claim_reply(const redisReply *r, const struct job_op *op, struct job *out);

/* The worker's last write and its next claim in one round trip. */
static int rd_finish_claim(store *st, const char *id, const struct job_op *op,
                           const struct job_op *claim, int64_t now_ms, struct job *next,
                           int *claim_rc)
{
    struct redis_store *s = R(st);
    *claim_rc = DS_E_EMPTY;
    if (!op_name(op->kind))
        return DS_E_INVALID;
    if (s->recheck_pending) /* rd_claim() must look at this consumer's entries first */
        return rd_apply(st, id, op, now_ms, NULL);
    redisReply *r = run_apply(s, id, op, now_ms, false, claim);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        int rc = redis_reply_rc(r);
        freeReplyObject(r);
        s->recheck_pending = rc == DS_E_UNAVAILABLE; /* a claim may have happened */
        return rc ? rc : DS_E_IO;
    }
    int rc = redis_reply_rc(r->element[0]);
    *claim_rc = claim_reply(r->element[1], claim, next);
    freeReplyObject(r);
    return rc;
}

/* The job id and entry id of an XREADGROUP reply with one entry. */
static int read_entry(const redisReply *r, char *qid, size_t qcap, char id[JOB_ID_SIZE])
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1)
        return -1;
    const redisReply *entries = r->element[0]->element[1];
    if (entries->elements < 1)
        return -1;
    const redisReply *e = entries->element[0];
    if (e->elements < 2 || e->element[1]->elements < 2)
        return -1;
    snprintf(qid, qcap, "%s", e->element[0]->str);
    snprintf(id, JOB_ID_SIZE, "%s", e->element[1]->element[1]->str);
    return 0;
}

/* {'ok', id, type, input, attempts, max_attempts, version, seq, created, ttl}
 * -> *out; {'skip'} or {'empty'} -> DS_E_EMPTY. */
static int claim_reply(const redisReply *r, const struct job_op *op, struct job *out)
{
    const char *code = redis_code(r);
    if (!r)
        return DS_E_UNAVAILABLE;
    if (!strcmp(code, "skip") || !strcmp(code, "empty"))
        return DS_E_EMPTY;
    if (strcmp(code, "ok") || r->elements < 10) {
        int rc = redis_reply_rc(r);
        return rc ? rc : DS_E_IO;
    }
    memset(out, 0, sizeof *out);
    snprintf(out->id, sizeof out->id, "%s", r->element[1]->str);
    snprintf(out->type, sizeof out->type, "%s", r->element[2]->str);
    out->input = json_or_null(r->element[3]->str);
    out->attempts = atoi(r->element[4]->str);
    out->max_attempts = atoi(r->element[5]->str);
    out->version = strtoll(r->element[6]->str, NULL, 10);
    out->event_seq = strtoll(r->element[7]->str, NULL, 10);
    out->created_ms = strtoll(r->element[8]->str, NULL, 10);
    out->ttl_s = strtoll(r->element[9]->str, NULL, 10);
    out->state = JOB_RUNNING;
    out->lease_token = op->token;
    return 0;
}

/* Claims the next queue entry's job in one script call, without waiting. */
static int claim_next(struct redis_store *s, const struct job_op *op, int64_t now_ms,
                      struct job *out)
{
    char token[24], lease[24], now[24];
    snprintf(token, sizeof token, "%llu", (unsigned long long)op->token);
    snprintf(lease, sizeof lease, "%lld", (long long)op->lease_ms);
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    const char *args[] = {s->consumer, token, lease, now};
    redisReply *r = redis_run(s, S_CLAIM_NEXT, "-", NULL, 4, args);
    int rc = claim_reply(r, op, out);
    freeReplyObject(r);
    return rc;
}

/* Runs the claim script for one queue entry: 0 and *out, or DS_E_EMPTY if the
 * entry was stale (its job cancelled, requeued or gone). */
static int claim_entry(struct redis_store *s, const char *qid, const char *id,
                       const struct job_op *op, int64_t now_ms, struct job *out)
{
    char token[24], lease[24], now[24];
    snprintf(token, sizeof token, "%llu", (unsigned long long)op->token);
    snprintf(lease, sizeof lease, "%lld", (long long)op->lease_ms);
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    const char *args[] = {id, qid, token, lease, now};
    redisReply *r = redis_run(s, S_CLAIM, id, NULL, 5, args);
    int rc = claim_reply(r, op, out);
    freeReplyObject(r);
    return rc;
}

/* Waits up to half a second for a queue entry, then claims its job. After a
 * claim that failed midway (Redis went away between reading the entry and
 * running the script), the entries already delivered to this consumer are
 * tried first, so such a job does not wait a whole lease for the reaper. */
static int rd_claim(store *st, const struct job_op *op, int64_t now_ms, struct job *out)
{
    struct redis_store *s = R(st);
    if (!s->recheck_pending) { /* while there is work: one round trip */
        int rc = claim_next(s, op, now_ms, out);
        if (rc != DS_E_EMPTY) {
            s->recheck_pending = rc == DS_E_UNAVAILABLE || rc == DS_E_IO;
            return rc;
        }
    }
    int64_t waited_from = clock_mono_ms(); /* now_ms is older by the wait */
    for (int tries = 0; tries < 8; tries++) {
        bool own = s->recheck_pending;
        redisReply *r =
            redis_fmt(s,
                      own ? "XREADGROUP GROUP workers %s COUNT 1 STREAMS ds:queue 0"
                          : "XREADGROUP GROUP workers %s COUNT 1 BLOCK 500 STREAMS ds:queue >",
                      s->consumer);
        if (!r) {
            s->recheck_pending = true;
            return DS_E_UNAVAILABLE;
        }
        char qid[64], id[JOB_ID_SIZE];
        int found = r->type == REDIS_REPLY_ARRAY && read_entry(r, qid, sizeof qid, id) == 0;
        freeReplyObject(r);
        if (!found && own) {
            s->recheck_pending = false;
            continue;
        }
        if (!found)
            return DS_E_EMPTY;
        int rc = claim_entry(s, qid, id, op, now_ms + clock_mono_ms() - waited_from, out);
        if (rc == DS_E_UNAVAILABLE || rc == DS_E_IO)
            s->recheck_pending = true;
        if (rc != DS_E_EMPTY)
            return rc;
    }
    return DS_E_EMPTY;
}

/* Examines queue entries idle for lease_ms (their worker stopped heartbeating). */
static int rd_requeue_expired(store *st, int64_t now_ms, int64_t lease_ms, int *requeued,
                              int *failed)
{
    struct redis_store *s = R(st);
    *requeued = *failed = 0;
    redisReply *r = redis_fmt(s, "XAUTOCLAIM ds:queue workers reaper-%s %lld 0-0 COUNT 100",
                              s->consumer, (long long)lease_ms);
    if (!r)
        return DS_E_UNAVAILABLE;
    int rc = r->type == REDIS_REPLY_ARRAY && r->elements >= 2 ? 0 : DS_E_IO;
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    for (size_t i = 0; !rc && i < r->element[1]->elements; i++) {
        const redisReply *e = r->element[1]->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[1]->type != REDIS_REPLY_ARRAY || e->element[1]->elements < 2)
            continue; /* an entry deleted meanwhile */
        const char *id = e->element[1]->element[1]->str;
        const char *args[] = {id, e->element[0]->str, now};
        redisReply *q = redis_run(s, S_REQUEUE, id, NULL, 3, args);
        const char *code = redis_code(q);
        if (!strcmp(code, "requeued"))
            ++*requeued;
        else if (!strcmp(code, "failed"))
            ++*failed;
        else if (!q)
            rc = DS_E_UNAVAILABLE;
        freeReplyObject(q);
    }
    freeReplyObject(r);
    return rc;
}

static int rd_expire(store *st, int64_t now_ms, int *removed)
{
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    const char *args[] = {now, "1000"};
    redisReply *r = redis_run(R(st), S_EXPIRE, "-", NULL, 2, args);
    int rc = !r ? DS_E_UNAVAILABLE : r->type == REDIS_REPLY_INTEGER ? 0 : redis_reply_rc(r);
    *removed = rc ? 0 : (int)r->integer;
    freeReplyObject(r);
    return rc;
}

static int rd_remove(store *st, const char *id)
{
    const char *args[] = {id};
    redisReply *r = redis_run(R(st), S_REMOVE, id, NULL, 1, args);
    int rc = redis_reply_rc(r);
    freeReplyObject(r);
    return rc;
}

/* Adds the jobs of ids (newest first) that match the type filter to out.
 * Returns 1 when the page is full and a further match exists. */
static int add_page(struct redis_store *s, const redisReply *ids, const struct store_filter *f,
                    struct store_list *out, char last[JOB_ID_SIZE])
{
    for (size_t i = 0; i < ids->elements; i++) {
        const char *id = ids->element[i]->str;
        redisReply *r = redis_fmt(s, "HGETALL ds:{%s}:job", id);
        int rc = hash_reply(r);
        struct job_text t;
        int64_t seq;
        if (rc == 0)
            fields_to_text(r, 0, id, &t, &seq);
        bool match = rc == 0 && (!f->type || !strcmp(t.type, f->type));
        if (match && out->n == (size_t)f->limit) { /* one more exists: a next page */
            memcpy(out->next_cursor, last, JOB_ID_SIZE);
            freeReplyObject(r);
            return 1;
        }
        if (match) {
            out->docs[out->n++] = job_render_text(&t);
            snprintf(last, JOB_ID_SIZE, "%s", id);
        }
        freeReplyObject(r);
        if (rc == DS_E_UNAVAILABLE || rc == DS_E_IO)
            return rc; /* a vanished job (NOTFOUND) is just left out */
    }
    return 0;
}

static int rd_list(store *st, const struct store_filter *f, struct store_list *out)
{
    struct redis_store *s = R(st);
    char key[32], max[JOB_ID_SIZE + 2], last[JOB_ID_SIZE] = "";
    memset(out, 0, sizeof *out);
    if (f->has_state)
        snprintf(key, sizeof key, "ds:state:%d", f->state);
    else
        snprintf(key, sizeof key, "ds:jobs");
    snprintf(max, sizeof max, f->cursor ? "(%s" : "+", f->cursor);
    out->docs = calloc((size_t)f->limit, sizeof *out->docs);
    int rc = out->docs ? 0 : DS_E_NOMEM;
    while (rc == 0) {
        redisReply *ids = redis_fmt(s, "ZREVRANGEBYLEX %s %s - LIMIT 0 %d", key, max, f->limit + 1);
        if (!ids)
            rc = DS_E_UNAVAILABLE;
        else if (ids->type != REDIS_REPLY_ARRAY)
            rc = DS_E_IO;
        else
            rc = add_page(s, ids, f, out, last);
        bool more = ids && ids->type == REDIS_REPLY_ARRAY && ids->elements == (size_t)f->limit + 1;
        if (more)
            snprintf(max, sizeof max, "(%s", ids->element[ids->elements - 1]->str);
        freeReplyObject(ids);
        if (!more)
            break;
    }
    if (rc < 0) {
        store_list_clear(out);
        return rc;
    }
    return 0;
}

/* "SEQ NAME DATA" -> an event appended to out. */
static int push_event(struct job_events *out, const char *item)
{
    char name[16];
    long long seq;
    int n = 0;
    if (sscanf(item, "%lld %15s %n", &seq, name, &n) != 2 || n == 0)
        return DS_E_IO;
    const char *known = job_event_name(name);
    return job_events_push(out, seq, known ? known : "status", strdup(item + n));
}

/* A finished job keeps no event list: its last event is derived from its
 * fields. 0 with the event (if newer than after_seq) in out; NOTFOUND. */
static int terminal_event(struct redis_store *s, const char *id, int64_t after_seq,
                          struct job_events *out, int64_t *first_kept)
{
    redisReply *r = redis_fmt(s, "HMGET ds:{%s}:job st v sq rs er", id);
    int rc = !r                                                 ? DS_E_UNAVAILABLE
             : r->type != REDIS_REPLY_ARRAY || r->elements != 5 ? DS_E_IO
             : r->element[0]->type != REDIS_REPLY_STRING        ? DS_E_NOTFOUND
                                                                : 0;
    enum job_state st = rc ? JOB_QUEUED : (enum job_state)atoi(r->element[0]->str);
    if (!rc && job_state_terminal(st)) {
        int64_t seq = strtoll(r->element[2]->str, NULL, 10);
        const char *rs = r->element[3]->type == REDIS_REPLY_STRING ? r->element[3]->str : "";
        const char *er = r->element[4]->type == REDIS_REPLY_STRING ? r->element[4]->str : "";
        *first_kept = seq;
        if (seq > after_seq)
            rc = job_events_push(
                out, seq, job_terminal_event_name(st),
                job_terminal_event(id, strtoll(r->element[1]->str, NULL, 10), st, rs, er));
    }
    freeReplyObject(r);
    return rc;
}

/* The list holds consecutive seqs: the first one says where "after" is. */
static int rd_events(store *st, const char *id, int64_t after_seq, struct job_events *out,
                     int64_t *first_kept)
{
    struct redis_store *s = R(st);
    redisReply *first = redis_fmt(s, "LINDEX ds:{%s}:events 0", id);
    if (!first)
        return DS_E_UNAVAILABLE;
    *first_kept = first->type == REDIS_REPLY_STRING ? strtoll(first->str, NULL, 10) : 0;
    freeReplyObject(first);
    if (*first_kept == 0)
        return terminal_event(s, id, after_seq, out, first_kept);
    long long from = after_seq + 1 - *first_kept;
    redisReply *r = redis_fmt(s, "LRANGE ds:{%s}:events %lld -1", id, from > 0 ? from : 0);
    int rc = !r ? DS_E_UNAVAILABLE : r->type == REDIS_REPLY_ARRAY ? 0 : DS_E_IO;
    for (size_t i = 0; !rc && i < r->elements; i++)
        rc = push_event(out, r->element[i]->str);
    freeReplyObject(r);
    return rc;
}

static int rd_changes(store *st, int64_t *cursor, store_change_fn fn, void *arg)
{
    (void)st, (void)cursor, (void)fn, (void)arg; /* changes arrive through listen() */
    return 0;
}

static int rd_counts(store *st, int64_t counts[JOB_N_STATES])
{
    for (int i = 0; i < JOB_N_STATES; i++) {
        redisReply *r = redis_fmt(R(st), "ZCARD ds:state:%d", i);
        if (!r)
            return DS_E_UNAVAILABLE;
        counts[i] = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        freeReplyObject(r);
    }
    return 0;
}

/* Delivers one pub/sub message "ID EVENT" to fn. */
static void deliver(const redisReply *m, store_change_fn fn, void *arg)
{
    if (m->type != REDIS_REPLY_ARRAY || m->elements != 3 || strcmp(m->element[0]->str, "message"))
        return;
    char id[JOB_ID_SIZE], name[16];
    if (sscanf(m->element[2]->str, "%60s %15s", id, name) == 2)
        fn(id, name, arg);
}

static int rd_listen(store *st, store_change_fn fn, void *arg)
{
    struct redis_store *s = R(st);
    while (!atomic_load(&s->stop)) {
        redisReply *r = redis_ensure(s) ? NULL : redisCommand(s->c, "SUBSCRIBE ds:changes");
        if (!r) {
            redis_drop(s, "cannot subscribe");
            struct timespec ts = {0, 200 * 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        freeReplyObject(r);
        struct timeval forever = {0, 0};
        redisSetTimeout(s->c, forever);
        atomic_store(&s->listen_fd, s->c->fd);
        if (atomic_load(&s->stop))
            shutdown(s->c->fd, SHUT_RDWR);
        fn("*", "status", arg); /* changes made while we were not subscribed */
        void *m;
        while (redisGetReply(s->c, &m) == REDIS_OK) {
            deliver(m, fn, arg);
            freeReplyObject(m);
        }
        atomic_store(&s->listen_fd, -1);
        if (!atomic_load(&s->stop))
            redis_drop(s, "subscription lost");
        else
            redisFree(s->c), s->c = NULL;
    }
    return 0;
}

static void rd_unlisten(store *st)
{
    struct redis_store *s = R(st);
    atomic_store(&s->stop, 1);
    int fd = atomic_load(&s->listen_fd);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

/* --- asynchronous reads on an HTTP loop --- */

struct async_read {
    struct redis_store *s;
    store_read_fn fn;
    void *arg;
    bool peek;
    char id[JOB_ID_SIZE];
};

static void async_gone(const redisAsyncContext *ac, int status);

static void async_gone_on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK)
        async_gone(ac, status);
}

static void async_gone(const redisAsyncContext *ac, int status)
{
    struct redis_store *s = ac->data;
    (void)status;
    if (s && s->ac == ac)
        s->ac = NULL; /* hiredis frees the context after this callback */
}

static int async_ensure(struct redis_store *s)
{
    if (s->ac)
        return 0;
    int64_t now = clock_mono_ms();
    if (!s->loop || now < s->async_retry_at)
        return -1;
    s->async_retry_at = now + 500;
    redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
    if (!ac || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        return -1;
    }
    ac->data = s;
    redisLibeventAttach(ac, s->loop);
    redisAsyncSetConnectCallback(ac, async_gone_on_connect);
    redisAsyncSetDisconnectCallback(ac, async_gone);
    if (s->db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", s->db);
    s->ac = ac;
    return 0;
}

/* A read the async connection could not do (it broke): do it synchronously,
 * which reconnects and retries like every other command. */
static int read_sync(struct async_read *a, struct store_doc *doc)
{
    if (a->s->closing)
        return DS_E_UNAVAILABLE;
    if (a->peek)
        return rd_peek(&a->s->base, a->id, &doc->version, &doc->state);
    return rd_get(&a->s->base, a->id, doc);
}

static void async_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct async_read *a = privdata;
    struct store_doc doc = {.json = ""};
    int rc;
    (void)ac;
    if (!reply || redis_loading(reply))
        rc = read_sync(a, &doc);
    else if (a->peek)
        rc = peek_reply(reply, &doc.version, &doc.state);
    else if ((rc = hash_reply(reply)) == 0)
        rc = render_fields(reply, 0, a->id, &doc);
    a->fn(rc, rc ? NULL : &doc, a->arg);
    if (rc == 0 && !a->peek)
        free(doc.json);
    free(a);
}

static int rd_attach(store *st, struct event_base *base)
{
    R(st)->loop = base;
    return 0;
}

static int rd_get_async(store *st, const char *id, bool peek, store_read_fn fn, void *arg)
{
    struct redis_store *s = R(st);
    struct async_read *a = async_ensure(s) ? NULL : malloc(sizeof *a);
    if (!a)
        return DS_STORE_NO_ASYNC;
    *a = (struct async_read){s, fn, arg, peek, ""};
    snprintf(a->id, sizeof a->id, "%s", id);
    const char *format = peek ? "HMGET ds:{%s}:job v st" : "HGETALL ds:{%s}:job";
    if (redisAsyncCommand(s->ac, async_reply, a, format, id) != REDIS_OK) {
        free(a);
        return DS_STORE_NO_ASYNC;
    }
    return 0;
}

/* A create sent on the loop's connection. The command is kept: if that
 * connection breaks before the answer, it is sent again synchronously (the
 * script is idempotent for exactly this). */
struct async_create {
    struct redis_store *s;
    store_read_fn fn;
    void *arg;
    char *cmd; /* owned (redisFreeCommand) */
    size_t len;
    struct store_doc doc; /* owned: the new job, rendered before it is sent */
    char id[JOB_ID_SIZE];
};

static void async_created(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct async_create *a = privdata;
    redisReply *own = NULL, *r = reply;
    (void)ac;
    if (!r || redis_noscript(r) || redis_loading(r)) /* the synchronous path copes */
        r = own = a->s->closing ? NULL : redis_run_formatted(a->s, a->cmd, a->len);
    struct store_doc existing = {0};
    int rc = create_outcome(r, a->id, &existing);
    a->fn(rc, rc == 0 ? &a->doc : rc == DS_E_EXISTS ? &existing : NULL, a->arg);
    store_doc_clear(&existing);
    freeReplyObject(own);
    store_doc_clear(&a->doc);
    redisFreeCommand(a->cmd);
    free(a);
}

static int rd_create_async(store *st, const struct job *job, const struct job_events *ev,
                           const struct store_idem *idem, store_read_fn fn, void *arg)
{
    struct redis_store *s = R(st);
    struct async_create *a = async_ensure(s) ? NULL : calloc(1, sizeof *a);
    if (!a)
        return DS_STORE_NO_ASYNC;
    *a = (struct async_create){.s = s, .fn = fn, .arg = arg};
    snprintf(a->id, sizeof a->id, "%s", job->id);
    a->cmd = create_command(s, job, ev, idem, &a->len);
    if (a->cmd && store_doc_from_job(&a->doc, job) == 0 &&
        redisAsyncFormattedCommand(s->ac, async_created, a, a->cmd, a->len) == REDIS_OK)
        return 0;
    store_doc_clear(&a->doc);
    redisFreeCommand(a->cmd);
    free(a);
    return DS_STORE_NO_ASYNC;
}

const struct store_ops store_redis_ops = {
    .scheme = "redis://",
    .change_poll_ms = 0,
    .claim_waits = true,
    .open = rd_open,
    .close = rd_close,
    .ping = rd_ping,
    .id_key = rd_id_key,
    .create = rd_create,
    .get = rd_get,
    .peek = rd_peek,
    .load = rd_load,
    .apply = rd_apply,
    .finish_claim = rd_finish_claim,
    .claim = rd_claim,
    .requeue_expired = rd_requeue_expired,
    .expire = rd_expire,
    .remove = rd_remove,
    .list = rd_list,
    .events = rd_events,
    .changes = rd_changes,
    .counts = rd_counts,
    .listen = rd_listen,
    .unlisten = rd_unlisten,
    .attach = rd_attach,
    .get_async = rd_get_async,
    .create_async = rd_create_async,
};
