/* The worker pool: threads that claim queued jobs and run them under a lease.
 *
 * DESIGN
 * Each worker owns a store handle. It claims the oldest queued job under a
 * fresh random lease token, runs the job's type, and writes every progress
 * step, heartbeat and the final result through store_apply() with that token:
 * if the reaper (of any process) handed the job to another worker meanwhile,
 * the write is refused (DS_E_LEASE_LOST) and this worker drops the job
 * without writing anything. Idle workers block on the watch hub until a
 * status change anywhere may have queued a job (1 s at most, as a safety net).
 *
 * Stopping: `stopping` ends claiming; running jobs may finish until
 * `drain_deadline`, after which job_ctx_* return DS_E_DRAINING and the worker
 * releases the lease, so the job is queued again at once for another process. */
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "watch/hub.h"
#include "worker/worker.h"

struct worker {
    struct worker_pool *pool;
    pthread_t thread;
    store *st;
};

struct worker_pool {
    const struct config *cfg;
    struct watch_hub *hub;
    int64_t lease_ms;
    int n;
    struct worker *w;
    atomic_int stopping;
    atomic_llong drain_deadline; /* monotonic ms; 0 = not draining */
};

struct job_ctx {
    struct worker *w;
    const struct job *job;
    uint64_t token;
    int64_t next_beat;  /* monotonic ms */
    int64_t last_write; /* monotonic ms of the last write the store took */
};

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static bool past_drain(struct worker_pool *p)
{
    int64_t d = atomic_load(&p->drain_deadline);
    return d && clock_mono_ms() >= d;
}

/* A job claimed together with the last write of the one before it. */
struct next_claim {
    uint64_t token;
    int rc; /* 0: job holds it; DS_E_EMPTY: none was claimed */
    struct job job;
};

static int write_once(struct job_ctx *ctx, const struct job_op *op, struct next_claim *nc)
{
    if (!nc)
        return store_apply(ctx->w->st, ctx->job->id, op, clock_now_ms(), NULL);
    struct job_op claim = {.kind = JOB_OP_CLAIM, .token = nc->token, .lease_ms = op->lease_ms};
    return store_finish_claim(ctx->w->st, ctx->job->id, op, &claim, clock_now_ms(), &nc->job,
                              &nc->rc);
}

/* A write under the job's lease (with nc, the last one, which may claim the
 * next job too). While the store is unavailable it is retried for as long as
 * the lease could still be ours: a short outage of the store does not cost
 * the job its progress. */
static int fenced(struct job_ctx *ctx, enum job_op_kind kind, const json_t *payload,
                  const char *code, const char *message, struct next_claim *nc)
{
    struct worker_pool *p = ctx->w->pool;
    struct job_op op = {.kind = kind,
                        .token = ctx->token,
                        .lease_ms = p->lease_ms,
                        .payload = payload,
                        .code = code,
                        .message = message};
    int rc = write_once(ctx, &op, nc);
    for (int64_t delay = 50; rc == DS_E_UNAVAILABLE; delay = delay < 1000 ? delay * 2 : 1000) {
        if (clock_mono_ms() - ctx->last_write > p->lease_ms)
            return DS_E_LEASE_LOST; /* the reaper may have handed the job on */
        sleep_ms(delay);
        rc = write_once(ctx, &op, nc);
    }
    if (rc == 0) {
        ctx->last_write = clock_mono_ms();
        if (kind != JOB_OP_HEARTBEAT)
            watch_hub_kick(p->hub);
    }
    ctx->next_beat = clock_mono_ms() + p->lease_ms / 3;
    return rc;
}

int job_ctx_progress(struct job_ctx *ctx, const char *stage, int percent, const char *message)
{
    if (past_drain(ctx->w->pool))
        return DS_E_DRAINING;
    json_t *payload =
        json_pack("{s:s, s:i, s:s}", "stage", stage, "percent", percent, "message", message);
    int rc = payload ? fenced(ctx, JOB_OP_PROGRESS, payload, NULL, NULL, NULL) : DS_E_NOMEM;
    json_decref(payload);
    return rc;
}

int job_ctx_token(struct job_ctx *ctx, const char *text)
{
    if (past_drain(ctx->w->pool))
        return DS_E_DRAINING;
    json_t *payload = json_pack("{s:s}", "text", text);
    int rc = payload ? fenced(ctx, JOB_OP_TOKEN, payload, NULL, NULL, NULL) : DS_E_NOMEM;
    json_decref(payload);
    return rc;
}

int job_ctx_sleep(struct job_ctx *ctx, int64_t ms)
{
    int64_t until = clock_mono_ms() + ms;
    for (;;) {
        if (past_drain(ctx->w->pool))
            return DS_E_DRAINING;
        int64_t now = clock_mono_ms();
        if (now >= ctx->next_beat) {
            int rc = fenced(ctx, JOB_OP_HEARTBEAT, NULL, NULL, NULL, NULL);
            if (rc)
                return rc;
        }
        if (now >= until)
            return 0;
        int64_t slice = until - now;
        if (slice > 50) /* stay responsive to a drain */
            slice = 50;
        sleep_ms(slice);
    }
}

int job_ctx_attempt(const struct job_ctx *ctx)
{
    return ctx->job->attempts;
}

/* Writes the outcome of a run; a success or failure may claim the next job
 * in the same round trip (nc). */
static void finish(struct job_ctx *ctx, int rc, json_t *result, const struct job_failure *fail,
                   struct next_claim *nc)
{
    int wrc;
    if (rc == 0)
        wrc = fenced(ctx, JOB_OP_SUCCEED, result, NULL, NULL, nc);
    else if (rc == -1)
        wrc = fenced(ctx, JOB_OP_FAIL, NULL, fail->code, fail->message, nc);
    else if (rc == DS_E_CANCELLED)
        wrc = fenced(ctx, JOB_OP_FAIL, NULL, "cancelled", "cancelled while running", nc);
    else if (rc == DS_E_DRAINING)
        wrc = fenced(ctx, JOB_OP_RELEASE, NULL, NULL, NULL, NULL);
    else if (rc == DS_E_LEASE_LOST)
        wrc = DS_E_LEASE_LOST;
    else
        wrc = fenced(ctx, JOB_OP_FAIL, NULL, "internal", ds_strerror(rc), nc);
    if (wrc == DS_E_LEASE_LOST)
        log_warn("job %s: lease lost to another worker; this attempt's writes are discarded",
                 ctx->job->id);
    else if (wrc)
        log_error("job %s: cannot record its outcome: %s", ctx->job->id, ds_strerror(wrc));
}

/* Runs a claimed job to its end. With nc (not stopping), the last write
 * also claims the next job when the store can. */
static void run_job(struct worker *w, const struct job *job, uint64_t token, struct next_claim *nc)
{
    int64_t now = clock_mono_ms();
    struct job_ctx ctx = {w, job, token, now + w->pool->lease_ms / 3, now};
    struct job_failure fail = {"", ""};
    json_t *result = NULL;
    const struct job_type *type = job_type_find(job->type);
    int rc = -1;
    if (type) {
        rc = type->run(&ctx, job->input, &result, &fail);
    } else {
        snprintf(fail.code, sizeof fail.code, "unknown_type");
        snprintf(fail.message, sizeof fail.message, "no worker knows job type '%s'", job->type);
    }
    finish(&ctx, rc, result, &fail, atomic_load(&w->pool->stopping) ? NULL : nc);
    json_decref(result);
}

static uint64_t new_token(void)
{
    uint64_t t = 0;
    while (t == 0 || t > INT64_MAX) /* stored as a signed 64-bit integer */
        randombytes_buf(&t, sizeof t);
    return t;
}

/* After a failed claim: says so once per outage, waits 100 ms doubling to 2 s. */
static void back_off(int rc, int *last_rc, int64_t *delay_ms)
{
    if (rc != *last_rc)
        log_warn("worker: cannot claim a job: %s; backing off", ds_strerror(rc));
    *last_rc = rc;
    sleep_ms(*delay_ms);
    *delay_ms = *delay_ms < 1000 ? *delay_ms * 2 : 2000;
}

/* Claims a job, waiting for one a while: 0, DS_E_EMPTY, or an error after
 * which it backed off. */
static int claim(struct worker *w, uint64_t token, struct job *job, int *last_rc, int64_t *delay_ms)
{
    struct worker_pool *p = w->pool;
    struct job_op op = {.kind = JOB_OP_CLAIM, .token = token, .lease_ms = p->lease_ms};
    int rc = store_claim(w->st, &op, clock_now_ms(), job);
    if (rc && rc != DS_E_EMPTY) {
        back_off(rc, last_rc, delay_ms);
        return rc;
    }
    if (*last_rc)
        log_info("worker: claiming jobs again");
    *last_rc = 0;
    *delay_ms = 100;
    if (rc == DS_E_EMPTY && !w->st->ops->claim_waits)
        watch_hub_wait_work(p->hub, 1000);
    return rc;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct worker_pool *p = w->pool;
    int last_rc = 0;
    int64_t delay_ms = 100;
    struct next_claim nc = {.rc = DS_E_EMPTY};
    while (!atomic_load(&p->stopping)) {
        struct job job;
        uint64_t token = nc.token;
        if (nc.rc == 0) { /* claimed with the last write */
            job = nc.job;
        } else if (claim(w, token = new_token(), &job, &last_rc, &delay_ms)) {
            continue;
        }
        watch_hub_kick(p->hub);
        nc = (struct next_claim){.token = new_token(), .rc = DS_E_EMPTY};
        run_job(w, &job, token, &nc);
        job_clear(&job);
    }
    if (nc.rc == 0) { /* claimed as the pool stopped: hand it back at once */
        struct job_ctx ctx = {w, &nc.job, nc.token, 0, clock_mono_ms()};
        fenced(&ctx, JOB_OP_RELEASE, NULL, NULL, NULL, NULL);
        job_clear(&nc.job);
    }
    return NULL;
}

struct worker_pool *worker_pool_start(const struct config *cfg, struct watch_hub *hub, int n)
{
    struct worker_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->w = calloc((size_t)(n ? n : 1), sizeof *p->w))) {
        free(p);
        return NULL;
    }
    p->cfg = cfg;
    p->hub = hub;
    p->lease_ms = (int64_t)cfg->lease_seconds * 1000;
    for (; p->n < n; p->n++) {
        struct worker *w = &p->w[p->n];
        const char *why = NULL;
        w->pool = p;
        if (store_open(cfg->store, &w->st, &why) ||
            pthread_create(&w->thread, NULL, worker_main, w)) {
            log_error("worker: cannot start: %s", why ? why : "no thread");
            store_close(w->st);
            worker_pool_stop(p, 0);
            return NULL;
        }
    }
    return p;
}

void worker_pool_stop(struct worker_pool *p, int drain_ms)
{
    if (!p)
        return;
    atomic_store(&p->drain_deadline, clock_mono_ms() + drain_ms);
    atomic_store(&p->stopping, 1);
    watch_hub_wake_workers(p->hub);
    for (int i = 0; i < p->n; i++) {
        pthread_join(p->w[i].thread, NULL);
        store_close(p->w[i].st);
    }
    free(p->w);
    free(p);
}
