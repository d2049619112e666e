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
 * Where the store settles many jobs per round trip (Redis), claims and last
 * writes go through the pool's dispatcher instead (dispatch.c), batched.
 *
 * Stopping: `stopping` ends claiming; running jobs may finish until
 * `drain_deadline`, after which job_ctx_* return DS_E_DRAINING and the worker
 * releases the lease, so the job is queued again at once for another process. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "job/id.h"
#include "watch/hub.h"
#include "worker/dispatch.h"
#include "worker/worker.h"

struct worker {
    struct worker_pool *pool;
    pthread_t thread;
    store *st;
    struct dispatcher *dispatcher; /* NULL: it claims and writes itself */
};

struct worker_pool {
    const struct config *cfg;
    struct watch_hub *hub;
    int64_t lease_ms;
    int n;
    struct worker *w;
    atomic_int stopping;
    atomic_llong drain_deadline;     /* monotonic ms; 0 = not draining */
    struct dispatcher **dispatchers; /* one per GROUP workers, where the store settles */
    int n_dispatchers;
};

/* Workers per dispatcher: one round trip in flight per group, so that one
 * group's trip overlaps another's (Redis is busy with one while the other's
 * workers run their jobs). */
#define GROUP 16

struct job_ctx {
    struct worker *w;
    const struct job *job;
    uint64_t token;
    int64_t next_beat;  /* monotonic ms */
    int64_t last_write; /* monotonic ms of the last write the store took */
};

static bool past_drain(struct worker_pool *p)
{
    int64_t d = atomic_load(&p->drain_deadline);
    return d && clock_mono_ms() >= d;
}

/* A write under the job's lease. While the store is unavailable it is
 * retried for as long as the lease could still be ours: a short outage of the
 * store does not cost the job its progress. */
static int fenced(struct job_ctx *ctx, enum job_op_kind kind, const json_t *payload,
                  const char *code, const char *message)
{
    struct worker_pool *p = ctx->w->pool;
    struct job_op op = {.kind = kind,
                        .token = ctx->token,
                        .lease_ms = p->lease_ms,
                        .payload = payload,
                        .code = code,
                        .message = message};
    int rc = store_apply(ctx->w->st, ctx->job->id, &op, clock_now_ms(), NULL);
    for (int64_t delay = 50; rc == DS_E_UNAVAILABLE; delay = delay < 1000 ? delay * 2 : 1000) {
        if (clock_mono_ms() - ctx->last_write > p->lease_ms)
            return DS_E_LEASE_LOST; /* the reaper may have handed the job on */
        clock_sleep_ms(delay);
        rc = store_apply(ctx->w->st, ctx->job->id, &op, clock_now_ms(), NULL);
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
    int rc = payload ? fenced(ctx, JOB_OP_PROGRESS, payload, NULL, NULL) : DS_E_NOMEM;
    json_decref(payload);
    return rc;
}

int job_ctx_token(struct job_ctx *ctx, const char *text)
{
    if (past_drain(ctx->w->pool))
        return DS_E_DRAINING;
    json_t *payload = json_pack("{s:s}", "text", text);
    int rc = payload ? fenced(ctx, JOB_OP_TOKEN, payload, NULL, NULL) : DS_E_NOMEM;
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
            int rc = fenced(ctx, JOB_OP_HEARTBEAT, NULL, NULL, NULL);
            if (rc)
                return rc;
        }
        if (now >= until)
            return 0;
        int64_t slice = until - now;
        if (slice > 50) /* stay responsive to a drain */
            slice = 50;
        clock_sleep_ms(slice);
    }
}

int job_ctx_attempt(const struct job_ctx *ctx)
{
    return ctx->job->attempts;
}

/* A run's outcome as the last write to make (not for a drain or a lost lease). */
static void last_write_of(const struct job_ctx *ctx, int rc, json_t *result,
                          const struct job_failure *fail, struct last_write *lw)
{
    *lw = (struct last_write){.kind = rc == 0 ? JOB_OP_SUCCEED : JOB_OP_FAIL,
                              .token = ctx->token,
                              .since = ctx->last_write};
    snprintf(lw->id, sizeof lw->id, "%s", ctx->job->id);
    if (rc == 0)
        lw->result = json_incref(result);
    else if (rc == -1)
        lw->fail = *fail;
    else if (rc == DS_E_CANCELLED)
        lw->fail = (struct job_failure){"cancelled", "cancelled while running"};
    else {
        lw->fail = (struct job_failure){"internal", ""};
        snprintf(lw->fail.message, sizeof lw->fail.message, "%s", ds_strerror(rc));
    }
}

/* Writes the outcome of a run: itself, or through the dispatcher. */
static void finish(struct job_ctx *ctx, int rc, json_t *result, const struct job_failure *fail)
{
    if (rc == DS_E_LEASE_LOST || rc == DS_E_DRAINING) {
        int wrc = rc == DS_E_DRAINING ? fenced(ctx, JOB_OP_RELEASE, NULL, NULL, NULL) : rc;
        last_write_log(ctx->job->id, wrc);
        return;
    }
    struct last_write lw;
    last_write_of(ctx, rc, result, fail, &lw);
    struct dispatcher *d = ctx->w->dispatcher;
    if (d && dispatcher_take_write(d, &lw))
        return;
    int wrc = fenced(ctx, lw.kind, lw.result, lw.fail.code, lw.fail.message);
    last_write_log(lw.id, wrc);
    json_decref(lw.result);
}

static void run_job(struct worker *w, const struct job *job, uint64_t token)
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
    finish(&ctx, rc, result, &fail);
    json_decref(result);
}

/* After a failed claim: says so once per outage, waits 100 ms doubling to 2 s. */
static void back_off(int rc, int *last_rc, int64_t *delay_ms)
{
    if (rc != *last_rc)
        log_warn("worker: cannot claim a job: %s; backing off", ds_strerror(rc));
    *last_rc = rc;
    clock_sleep_ms(*delay_ms);
    *delay_ms = *delay_ms < 1000 ? *delay_ms * 2 : 2000;
}

/* A worker that claims for itself. */
static void claim_and_run(struct worker *w)
{
    struct worker_pool *p = w->pool;
    int last_rc = 0;
    int64_t delay_ms = 100;
    while (!atomic_load(&p->stopping)) {
        struct job job;
        struct job_op op = {
            .kind = JOB_OP_CLAIM, .token = job_lease_token_new(), .lease_ms = p->lease_ms};
        int rc = store_claim(w->st, &op, clock_now_ms(), &job);
        if (rc && rc != DS_E_EMPTY) {
            back_off(rc, &last_rc, &delay_ms);
            continue;
        }
        if (last_rc)
            log_info("worker: claiming jobs again");
        last_rc = 0;
        delay_ms = 100;
        if (rc == DS_E_EMPTY) {
            if (!w->st->ops->claim_waits)
                watch_hub_wait_work(p->hub, 1000);
            continue;
        }
        watch_hub_kick(p->hub);
        run_job(w, &job, op.token);
        job_clear(&job);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct dispatcher *d = w->dispatcher;
    struct job job;
    if (!d)
        claim_and_run(w);
    else
        while (dispatcher_next_job(d, &job) == 0) {
            run_job(w, &job, job.lease_token);
            job_clear(&job);
        }
    return NULL;
}

/* Starts the dispatcher of the next group of workers. 0 or -1. */
static int start_dispatcher(struct worker_pool *p, int workers)
{
    struct dispatcher *d = dispatcher_start(p->cfg->store, p->lease_ms, workers);
    if (d)
        p->dispatchers[p->n_dispatchers++] = d;
    return d ? 0 : -1;
}

struct worker_pool *worker_pool_start(const struct config *cfg, struct watch_hub *hub, int n)
{
    struct worker_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->w = calloc((size_t)(n ? n : 1), sizeof *p->w)) ||
        !(p->dispatchers = calloc((size_t)(n / GROUP + 1), sizeof *p->dispatchers))) {
        if (p)
            free(p->w);
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
        int rc = store_open(cfg->store, &w->st, &why);
        if (!rc && p->n % GROUP == 0 && store_can_settle(w->st))
            rc = start_dispatcher(p, n - p->n < GROUP ? n - p->n : GROUP);
        w->dispatcher = p->n_dispatchers ? p->dispatchers[p->n_dispatchers - 1] : NULL;
        if (rc || pthread_create(&w->thread, NULL, worker_main, w)) {
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
    for (int i = 0; i < p->n_dispatchers; i++)
        dispatcher_wake_all(p->dispatchers[i]);
    for (int i = 0; i < p->n; i++) {
        pthread_join(p->w[i].thread, NULL);
        store_close(p->w[i].st);
    }
    for (int i = 0; i < p->n_dispatchers; i++)
        dispatcher_stop(p->dispatchers[i]);
    free(p->dispatchers);
    free(p->w);
    free(p);
}
