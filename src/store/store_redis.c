/* The redis://HOST:PORT[/DB] backend: jobs in Redis, shared by any number of
 * instances on any number of hosts.
 *
 * DESIGN
 * Every change is one Lua script (store_redis_lua.c): atomic, fenced by the
 * lease token, bumping `version`, appending to the job's event list and
 * publishing "ID EVENT" on ds:changes in one step (one message per call, a
 * line per change); C never reads, modifies and writes back. The scripts get
 * the transition table generated from job_transition_allowed(), so it is
 * written once, in job.c.
 *
 * Keys (all keys of one job share the hash tag {ID}):
 *   ds:{ID}:job      hash: the job's fields (C renders the job object from them)
 *   ds:{ID}:events   list of "SEQ NAME DATA", capped at about 1,000 entries;
 *                    deleted when the job finishes (its last event is
 *                    derived from the job's fields)
 *   ds:queue         stream + consumer group "workers": XREADGROUP claims,
 *                    heartbeats XCLAIM (keeping the entry fresh), the reaper
 *                    XAUTOCLAIMs entries idle past the lease (a dead worker's)
 *   ds:jobs, ds:state:N   zsets of ids (list pages; counts by state), but
 *                    none for running jobs: their queue entries, which the
 *                    group's workers hold, say which and how many
 *   ds:expiry        zset id -> expiry ms, swept by the reaper
 *   ds:idem:SHA      "BODYHASH ID", 24 h
 *   ds:meta          hash: the id MAC key
 * A finished job's two keys get PEXPIREAT at its expiry.
 *
 * Connections, reconnection and script loading are store_redis_conn.c's.
 * A handle attached to an HTTP loop also reads and creates on an
 * asynchronous connection of that loop: store_redis_async.c. A worker pool
 * claims and finishes jobs in batches through rd_settle(). */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

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
int redis_render_fields(const redisReply *r, size_t from, const char *id, struct store_doc *out)
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
    redis_async_close(s); /* pending reads and creates are told UNAVAILABLE */
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

int redis_create_args(struct redis_create_args *a, const struct job *job,
                      const struct store_idem *idem)
{
    memset(a, 0, sizeof *a);
    snprintf(a->id, sizeof a->id, "%s", job->id);
    snprintf(a->type, sizeof a->type, "%s", job->type);
    snprintf(a->ttl, sizeof a->ttl, "%lld", (long long)job->ttl_s);
    snprintf(a->ma, sizeof a->ma, "%d", job->max_attempts);
    snprintf(a->now, sizeof a->now, "%lld", (long long)job->created_ms);
    snprintf(a->idem_ms, sizeof a->idem_ms, "%lld",
             (long long)(idem ? idem->expires_ms - job->created_ms : 0));
    if (idem && idem->key) { /* the client's key, hashed into a tidy Redis key */
        unsigned char d[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(d, (const unsigned char *)idem->key, strlen(idem->key));
        memcpy(a->idem_key, "ds:idem:", 8);
        sodium_bin2hex(a->idem_key + 8, sizeof a->idem_key - 8, d, 24);
        snprintf(a->hash, sizeof a->hash, "%s", idem->body_hash);
    }
    a->input = json_text(job->input);
    return a->input ? 0 : DS_E_NOMEM;
}

void redis_create_args_clear(struct redis_create_args *a)
{
    free(a->input);
    a->input = NULL;
}

char *redis_create_command(const struct redis_store *s, struct redis_create_args *const *jobs,
                           size_t n, bool resend, size_t *len)
{
    const char **argv = malloc((2 + 9 * n) * sizeof *argv);
    char count[24];
    if (!argv)
        return NULL;
    snprintf(count, sizeof count, "%zu", n);
    argv[0] = count;
    argv[1] = resend ? "1" : "0";
    for (size_t i = 0; i < n; i++) {
        const struct redis_create_args *a = jobs[i];
        const char *v[] = {a->id,  a->type,     a->input, a->ttl,    a->ma,
                           a->now, a->idem_key, a->hash,  a->idem_ms};
        memcpy(argv + 2 + 9 * i, v, sizeof v);
    }
    char *cmd = redis_format_script(s, S_CREATE, "-", NULL, (int)(2 + 9 * n), argv, len);
    free(argv);
    return cmd;
}

int redis_create_batch_rc(const redisReply *r, size_t n)
{
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == n)
        return 0;
    return r && r->type != REDIS_REPLY_ERROR ? DS_E_IO : redis_reply_rc(r);
}

int redis_create_outcome(const redisReply *job, const char *id, struct store_doc *out)
{
    int rc = redis_reply_rc(job);
    if (rc == DS_E_EXISTS) {
        int drc = redis_render_fields(job, 1, id, out);
        rc = drc ? drc : rc;
    }
    return rc;
}

static int rd_create(store *st, const struct job *job, const struct job_events *ev,
                     const struct store_idem *idem, struct store_doc *out)
{
    struct redis_store *s = R(st);
    (void)ev; /* its one event, the first, is derived when read (redis_lua_create) */
    struct redis_create_args a, *one = &a;
    size_t len;
    char *cmd = NULL;
    int rc = redis_create_args(&a, job, idem);
    /* a resend: the connection layer sends it again if a reply is lost */
    if (!rc && !(cmd = redis_create_command(s, &one, 1, true, &len)))
        rc = DS_E_NOMEM;
    if (!rc) {
        redisReply *r = redis_run_formatted(s, cmd, len);
        rc = redis_create_batch_rc(r, 1);
        if (!rc)
            rc = redis_create_outcome(r->element[0], job->id, out);
        if (rc == 0 && out)
            rc = store_doc_from_job(out, job);
        freeReplyObject(r);
    }
    redisFreeCommand(cmd);
    redis_create_args_clear(&a);
    return rc;
}

/* An HGETALL of a job hash -> 0, or why not. */
int redis_hash_reply(const redisReply *r)
{
    if (!r)
        return DS_E_UNAVAILABLE;
    if (r->type != REDIS_REPLY_ARRAY)
        return DS_E_IO;
    return r->elements ? 0 : DS_E_NOTFOUND;
}

int redis_get(store *st, const char *id, struct store_doc *out)
{
    redisReply *r = redis_fmt(R(st), "HGETALL ds:{%s}:job", id);
    int rc = redis_hash_reply(r);
    if (!rc)
        rc = redis_render_fields(r, 0, id, out);
    freeReplyObject(r);
    return rc;
}

/* An HMGET v st -> version and state. */
int redis_peek_reply(const redisReply *r, int64_t *version, enum job_state *state)
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

int redis_peek(store *st, const char *id, int64_t *version, enum job_state *state)
{
    redisReply *r = redis_fmt(R(st), "HMGET ds:{%s}:job v st", id);
    int rc = redis_peek_reply(r, version, state);
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

/* The texts a write sends: its payload and error as JSON ('' when none), and
 * whether a failure is a cancellation. */
struct write_text {
    char *payload, *error; /* owned */
    bool cancelled;
};

static int write_text(const struct job_op *op, struct write_text *t)
{
    json_t *err = op->kind == JOB_OP_FAIL ? json_pack("{s:s, s:s}", "code", op->code, "message",
                                                      op->message ? op->message : op->code)
                                          : NULL;
    t->payload = json_text(op->payload);
    t->error = json_text(err);
    t->cancelled = op->kind == JOB_OP_FAIL && !strcmp(op->code, "cancelled");
    json_decref(err);
    return t->payload && t->error ? 0 : DS_E_NOMEM;
}

static void write_text_clear(struct write_text *t)
{
    free(t->payload);
    free(t->error);
}

static int rd_apply(store *st, const char *id, const struct job_op *op, int64_t now_ms,
                    struct store_doc *out)
{
    struct redis_store *s = R(st);
    if (!op_name(op->kind))
        return DS_E_INVALID;
    char token[24], lease[24], now[24];
    snprintf(token, sizeof token, "%llu", (unsigned long long)op->token);
    snprintf(lease, sizeof lease, "%lld", (long long)op->lease_ms);
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    struct write_text t;
    int rc = write_text(op, &t);
    if (!rc) {
        const char *args[] = {
            op_name(op->kind),       id,          token,          lease, now, t.payload, t.error,
            t.cancelled ? "1" : "0", s->consumer, out ? "1" : "0"};
        redisReply *r = redis_run(s, S_APPLY, id, NULL, 10, args);
        rc = redis_reply_rc(r);
        if (!rc)
            rc = redis_render_fields(r, 1, id, out);
        freeReplyObject(r);
    }
    write_text_clear(&t);
    return rc;
}

static int claim_reply(const redisReply *r, uint64_t token, struct job *out);
static int recheck_own(struct redis_store *s, const struct job_op *op, int64_t now_ms,
                       struct job *out);

/* The settle script's arguments: 5 + 6 per write + 1 per token, in buf
 * (numbers) and texts (JSON, owned, n of them). */
struct settle_args {
    const char **argv;
    char (*num)[24]; /* one per write and per token, plus 3 */
    struct write_text *texts;
    size_t n;
};

static void settle_args_clear(struct settle_args *a)
{
    for (size_t i = 0; a->texts && i < a->n; i++)
        write_text_clear(&a->texts[i]);
    free(a->argv);
    free(a->num);
    free(a->texts);
}

static int settle_args(struct redis_store *s, const struct store_write *w, size_t n,
                       const uint64_t *tokens, size_t n_claim, int64_t lease_ms, int64_t now_ms,
                       struct settle_args *a)
{
    *a = (struct settle_args){.n = n};
    a->argv = malloc((5 + 6 * n + n_claim) * sizeof *a->argv);
    a->num = malloc((5 + n + n_claim) * sizeof *a->num);
    a->texts = calloc(n ? n : 1, sizeof *a->texts);
    if (!a->argv || !a->num || !a->texts)
        return DS_E_NOMEM;
    snprintf(a->num[0], 24, "%lld", (long long)lease_ms);
    snprintf(a->num[1], 24, "%lld", (long long)now_ms);
    snprintf(a->num[2], 24, "%zu", n);
    snprintf(a->num[3], 24, "%zu", n_claim);
    const char **v = a->argv;
    *v++ = s->consumer, *v++ = a->num[0], *v++ = a->num[1], *v++ = a->num[2], *v++ = a->num[3];
    for (size_t i = 0; i < n; i++) {
        if (!op_name(w[i].op.kind) || write_text(&w[i].op, &a->texts[i]))
            return DS_E_NOMEM;
        snprintf(a->num[4 + i], 24, "%llu", (unsigned long long)w[i].op.token);
        *v++ = op_name(w[i].op.kind), *v++ = w[i].id, *v++ = a->num[4 + i];
        *v++ = a->texts[i].payload, *v++ = a->texts[i].error;
        *v++ = a->texts[i].cancelled ? "1" : "0";
    }
    for (size_t j = 0; j < n_claim; j++) {
        snprintf(a->num[4 + n + j], 24, "%llu", (unsigned long long)tokens[j]);
        *v++ = a->num[4 + n + j];
    }
    return 0;
}

/* Many workers' last writes and their next claims in one script call. */
static int rd_settle(store *st, const struct store_write *w, size_t n, int *rcs,
                     const uint64_t *tokens, size_t n_claim, int64_t lease_ms, int64_t now_ms,
                     struct job *claimed, size_t *n_claimed)
{
    struct redis_store *s = R(st);
    *n_claimed = 0;
    if (s->recheck_pending && n_claim) { /* our own pending entries first */
        int rc = rd_settle(st, w, n, rcs, tokens, 0, lease_ms, now_ms, claimed, n_claimed);
        struct job_op op = {.kind = JOB_OP_CLAIM, .token = tokens[0], .lease_ms = lease_ms};
        if (!rc && recheck_own(s, &op, now_ms, claimed) == 0)
            *n_claimed = 1;
        return rc;
    }
    struct settle_args a;
    int rc = settle_args(s, w, n, tokens, n_claim, lease_ms, now_ms, &a);
    redisReply *r =
        rc ? NULL : redis_run(s, S_SETTLE, "-", NULL, (int)(5 + 6 * n + n_claim), a.argv);
    settle_args_clear(&a);
    if (rc)
        return rc;
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
              r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == n &&
              r->elements <= 1 + n_claim;
    if (!ok) {
        rc = r ? redis_reply_rc(r) : DS_E_UNAVAILABLE;
        s->recheck_pending = true; /* jobs may have been claimed for us */
        freeReplyObject(r);
        return rc ? rc : DS_E_IO;
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *code = r->element[0]->element[i];
        rcs[i] = code->type == REDIS_REPLY_STRING ? redis_code_rc(code->str) : DS_E_IO;
    }
    for (size_t j = 1; j < r->elements; j++)
        if (claim_reply(r->element[j], tokens[j - 1], &claimed[*n_claimed]) == 0)
            ++*n_claimed;
    freeReplyObject(r);
    return 0;
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
static int claim_reply(const redisReply *r, uint64_t token, struct job *out)
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
    out->lease_token = token;
    return 0;
}

/* Claims the next queue entry's job without waiting: 0, DS_E_EMPTY, or why
 * not. */
static int claim_next(struct redis_store *s, const struct job_op *op, int64_t now_ms,
                      struct job *out)
{
    int rc;
    size_t got;
    int settled = rd_settle(&s->base, NULL, 0, &rc, &op->token, 1, op->lease_ms, now_ms, out, &got);
    return settled ? settled : got ? 0 : DS_E_EMPTY;
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
    int rc = claim_reply(r, op->token, out);
    freeReplyObject(r);
    return rc;
}

/* After a call that failed midway (Redis went away between a blocking read
 * and its claim, or a reply was lost): this consumer's pending entries whose
 * job is still queued are claimed now instead of after a lease. One pass;
 * entries of running jobs are left to their lease. 0 with *out, DS_E_EMPTY,
 * or why not. */
static int recheck_own(struct redis_store *s, const struct job_op *op, int64_t now_ms,
                       struct job *out)
{
    redisReply *r =
        redis_fmt(s, "XREADGROUP GROUP workers %s COUNT 100 STREAMS ds:queue 0", s->consumer);
    if (!r)
        return DS_E_UNAVAILABLE;
    const redisReply *entries =
        r->type == REDIS_REPLY_ARRAY && r->elements == 1 ? r->element[0]->element[1] : NULL;
    int rc = DS_E_EMPTY;
    for (size_t i = 0; entries && rc == DS_E_EMPTY && i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->elements == 2 && e->element[1]->elements == 2)
            rc =
                claim_entry(s, e->element[0]->str, e->element[1]->element[1]->str, op, now_ms, out);
    }
    if (rc != DS_E_UNAVAILABLE && rc != DS_E_IO)
        s->recheck_pending = false;
    freeReplyObject(r);
    return rc;
}

/* Claims the next queued job, first looking at this consumer's own pending
 * entries when a call failed midway; when the queue is empty, waits up to
 * half a second for an entry, then claims its job. */
static int rd_claim(store *st, const struct job_op *op, int64_t now_ms, struct job *out)
{
    struct redis_store *s = R(st);
    if (s->recheck_pending) {
        int rc = recheck_own(s, op, now_ms, out);
        if (rc != DS_E_EMPTY)
            return rc;
    }
    int rc = claim_next(s, op, now_ms, out); /* while there is work: one round trip */
    if (rc != DS_E_EMPTY) {
        s->recheck_pending = rc == DS_E_UNAVAILABLE || rc == DS_E_IO;
        return rc;
    }
    int64_t waited_from = clock_mono_ms(); /* now_ms is older by the wait */
    for (int tries = 0; tries < 8; tries++) {
        redisReply *r = redis_fmt(
            s, "XREADGROUP GROUP workers %s COUNT 1 BLOCK 500 STREAMS ds:queue >", s->consumer);
        if (!r) {
            s->recheck_pending = true;
            return DS_E_UNAVAILABLE;
        }
        char qid[64], id[JOB_ID_SIZE];
        int found = r->type == REDIS_REPLY_ARRAY && read_entry(r, qid, sizeof qid, id) == 0;
        freeReplyObject(r);
        if (!found)
            return DS_E_EMPTY;
        rc = claim_entry(s, qid, id, op, now_ms + clock_mono_ms() - waited_from, out);
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

/* Adds the jobs of ids[0..n) (newest first) that match the filter to out.
 * Returns 1 when the page is full and a further match exists. */
static int add_page(struct redis_store *s, const char *const *ids, size_t n,
                    const struct store_filter *f, struct store_list *out, char last[JOB_ID_SIZE])
{
    for (size_t i = 0; i < n; i++) {
        redisReply *r = redis_fmt(s, "HGETALL ds:{%s}:job", ids[i]);
        int rc = redis_hash_reply(r);
        struct job_text t;
        int64_t seq;
        if (rc == 0)
            fields_to_text(r, 0, ids[i], &t, &seq);
        bool match = rc == 0 && (!f->type || !strcmp(t.type, f->type)) &&
                     (!f->has_state || t.state == f->state);
        if (match && out->n == (size_t)f->limit) { /* one more exists: a next page */
            memcpy(out->next_cursor, last, JOB_ID_SIZE);
            freeReplyObject(r);
            return 1;
        }
        if (match) {
            out->docs[out->n++] = job_render_text(&t);
            snprintf(last, JOB_ID_SIZE, "%s", ids[i]);
        }
        freeReplyObject(r);
        if (rc == DS_E_UNAVAILABLE || rc == DS_E_IO)
            return rc; /* a vanished job (NOTFOUND) is just left out */
    }
    return 0;
}

/* Pages through a zset of ids (ds:jobs or ds:state:N), newest first. */
static int list_zset(struct redis_store *s, const char *key, const struct store_filter *f,
                     struct store_list *out)
{
    char max[JOB_ID_SIZE + 2], last[JOB_ID_SIZE] = "";
    snprintf(max, sizeof max, f->cursor ? "(%s" : "+", f->cursor);
    const char **ids = malloc((size_t)(f->limit + 1) * sizeof *ids);
    int rc = ids ? 0 : DS_E_NOMEM;
    for (bool more = true; rc == 0 && more;) {
        redisReply *r = redis_fmt(s, "ZREVRANGEBYLEX %s %s - LIMIT 0 %d", key, max, f->limit + 1);
        rc = !r ? DS_E_UNAVAILABLE : r->type != REDIS_REPLY_ARRAY ? DS_E_IO : 0;
        size_t n = rc ? 0 : r->elements;
        for (size_t i = 0; i < n; i++)
            ids[i] = r->element[i]->str;
        if (!rc)
            rc = add_page(s, ids, n, f, out, last);
        more = n == (size_t)f->limit + 1;
        if (more)
            snprintf(max, sizeof max, "(%s", ids[n - 1]);
        freeReplyObject(r);
    }
    free(ids);
    return rc;
}

static int newest_first(const void *a, const void *b)
{
    return strcmp(*(const char *const *)b, *(const char *const *)a);
}

/* The group's last delivered queue entry into last ("" if none): the
 * entries up to it are exactly the running jobs' (acknowledged entries are
 * deleted at once). */
static int last_delivered(struct redis_store *s, char last[64])
{
    redisReply *g = redis_fmt(s, "XINFO GROUPS ds:queue");
    *last = '\0';
    for (size_t i = 0; g && g->type == REDIS_REPLY_ARRAY && i < g->elements; i++) {
        const redisReply *grp = g->element[i];
        bool ours = false;
        for (size_t k = 0; grp->type == REDIS_REPLY_ARRAY && k + 1 < grp->elements; k += 2) {
            const redisReply *key = grp->element[k], *val = grp->element[k + 1];
            if (val->type != REDIS_REPLY_STRING)
                continue;
            if (!strcmp(key->str, "name"))
                ours = !strcmp(val->str, "workers");
            else if (ours && !strcmp(key->str, "last-delivered-id"))
                snprintf(last, 64, "%s", val->str);
        }
    }
    int rc = g ? 0 : DS_E_UNAVAILABLE;
    freeReplyObject(g);
    return rc;
}

/* Running jobs have no zset: their ids come from the queue entries handed to
 * workers (as many as there are busy workers), sorted newest first. */
static int list_running(struct redis_store *s, const struct store_filter *f, struct store_list *out)
{
    char last[64], page_last[JOB_ID_SIZE] = "";
    int rc = last_delivered(s, last);
    if (rc || !*last)
        return rc;
    redisReply *r = redis_fmt(s, "XREVRANGE ds:queue %s -", last);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return r ? DS_E_IO : DS_E_UNAVAILABLE;
    }
    const char **ids = malloc((r->elements + 1) * sizeof *ids);
    size_t n = 0;
    for (size_t i = 0; ids && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->elements == 2 && e->element[1]->elements == 2) {
            const char *id = e->element[1]->element[1]->str;
            if (!f->cursor || strcmp(id, f->cursor) < 0)
                ids[n++] = id;
        }
    }
    if (ids) {
        qsort(ids, n, sizeof *ids, newest_first);
        rc = add_page(s, ids, n, f, out, page_last);
    }
    free(ids);
    freeReplyObject(r);
    return ids ? rc : DS_E_NOMEM;
}

static int rd_list(store *st, const struct store_filter *f, struct store_list *out)
{
    struct redis_store *s = R(st);
    char key[32] = "ds:jobs";
    memset(out, 0, sizeof *out);
    if (f->has_state)
        snprintf(key, sizeof key, "ds:state:%d", f->state);
    out->docs = calloc((size_t)f->limit, sizeof *out->docs);
    int rc = !out->docs                                ? DS_E_NOMEM
             : f->has_state && f->state == JOB_RUNNING ? list_running(s, f, out)
                                                       : list_zset(s, key, f, out);
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

/* Pushes the events every job starts with, those of seqs after_seq+1..upto
 * (at most 1: queued at version 1; 2: the first claim's running, version 2,
 * attempts 1). Redis stores neither: they are the same for every job. */
static int push_first_events(const char *id, int64_t after_seq, int64_t upto,
                             struct job_events *out)
{
    int rc = 0;
    if (after_seq < 1 && upto >= 1)
        rc = job_events_push(out, 1, "status", job_status_event(id, 1, JOB_QUEUED, 1));
    if (!rc && after_seq < 2 && upto >= 2)
        rc = job_events_push(out, 2, "status", job_status_event(id, 2, JOB_RUNNING, 1));
    return rc;
}

/* Events derived from a job's fields where no list holds them: a finished
 * job's last one, or the first one or two of a job with no event of its own
 * yet. 0 with the events newer than after_seq in out; NOTFOUND. */
static int derived_events(struct redis_store *s, const char *id, int64_t after_seq,
                          struct job_events *out, int64_t *first_kept)
{
    redisReply *r = redis_fmt(s, "HMGET ds:{%s}:job st v sq rs er", id);
    int rc = !r                                                 ? DS_E_UNAVAILABLE
             : r->type != REDIS_REPLY_ARRAY || r->elements != 5 ? DS_E_IO
             : r->element[0]->type != REDIS_REPLY_STRING        ? DS_E_NOTFOUND
                                                                : 0;
    enum job_state st = rc ? JOB_QUEUED : (enum job_state)atoi(r->element[0]->str);
    int64_t seq = rc ? 0 : strtoll(r->element[2]->str, NULL, 10);
    if (!rc && job_state_terminal(st)) {
        const char *rs = r->element[3]->type == REDIS_REPLY_STRING ? r->element[3]->str : "";
        const char *er = r->element[4]->type == REDIS_REPLY_STRING ? r->element[4]->str : "";
        *first_kept = seq;
        if (seq > after_seq)
            rc = job_events_push(
                out, seq, job_terminal_event_name(st),
                job_terminal_event(id, strtoll(r->element[1]->str, NULL, 10), st, rs, er));
    } else if (!rc && seq <= 2) {
        *first_kept = 1;
        rc = push_first_events(id, after_seq, seq, out);
    }
    freeReplyObject(r);
    return rc;
}

/* The list holds consecutive seqs from 3 on (2 in data written before the
 * second event was derived too); the first element says where "after" is. */
static int rd_events(store *st, const char *id, int64_t after_seq, struct job_events *out,
                     int64_t *first_kept)
{
    struct redis_store *s = R(st);
    redisReply *first = redis_fmt(s, "LINDEX ds:{%s}:events 0", id);
    if (!first)
        return DS_E_UNAVAILABLE;
    int64_t listed = first->type == REDIS_REPLY_STRING ? strtoll(first->str, NULL, 10) : 0;
    freeReplyObject(first);
    if (listed == 0)
        return derived_events(s, id, after_seq, out, first_kept);
    *first_kept = listed <= 3 ? 1 : listed;
    int rc = listed <= 3 ? push_first_events(id, after_seq, listed - 1, out) : 0;
    long long from = after_seq + 1 - listed;
    redisReply *r =
        rc ? NULL : redis_fmt(s, "LRANGE ds:{%s}:events %lld -1", id, from > 0 ? from : 0);
    if (!rc)
        rc = !r ? DS_E_UNAVAILABLE : r->type == REDIS_REPLY_ARRAY ? 0 : DS_E_IO;
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

/* Running jobs are counted by the queue entries workers hold (the group's
 * pending list); every other state by its zset. */
static int rd_counts(store *st, int64_t counts[JOB_N_STATES])
{
    for (int i = 0; i < JOB_N_STATES; i++) {
        redisReply *r = i == JOB_RUNNING ? redis_fmt(R(st), "XPENDING ds:queue workers")
                                         : redis_fmt(R(st), "ZCARD ds:state:%d", i);
        if (!r)
            return DS_E_UNAVAILABLE;
        const redisReply *n = r->type == REDIS_REPLY_ARRAY && r->elements ? r->element[0] : r;
        counts[i] = n->type == REDIS_REPLY_INTEGER ? n->integer : 0;
        freeReplyObject(r);
    }
    return 0;
}

/* Delivers one pub/sub message, a line "ID EVENT" per change, to fn. */
static void deliver(const redisReply *m, store_change_fn fn, void *arg)
{
    if (m->type != REDIS_REPLY_ARRAY || m->elements != 3 || strcmp(m->element[0]->str, "message"))
        return;
    char id[JOB_ID_SIZE], name[16];
    int used = 0;
    for (const char *line = m->element[2]->str; sscanf(line, "%60s %15s%n", id, name, &used) == 2;
         line += used)
        fn(id, name, arg);
}

static int rd_listen(store *st, store_change_fn fn, void *arg)
{
    struct redis_store *s = R(st);
    while (!atomic_load(&s->stop)) {
        redisReply *r = redis_ensure(s) ? NULL : redisCommand(s->c, "SUBSCRIBE ds:changes");
        if (!r) {
            redis_drop(s, "cannot subscribe");
            clock_sleep_ms(200);
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

const struct store_ops store_redis_ops = {
    .scheme = "redis://",
    .change_poll_ms = 0,
    .claim_waits = true,
    .open = rd_open,
    .close = rd_close,
    .ping = rd_ping,
    .id_key = rd_id_key,
    .create = rd_create,
    .get = redis_get,
    .peek = redis_peek,
    .load = rd_load,
    .apply = rd_apply,
    .settle = rd_settle,
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
    .attach = redis_attach,
    .get_async = redis_get_async,
    .create_async = redis_create_async,
};
