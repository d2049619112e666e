/* Workers: the pool of threads that claim and run jobs, the job types they
 * run, and the context a running job reports through. */
#ifndef DS_WORKER_WORKER_H
#define DS_WORKER_WORKER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct watch_hub;
struct worker_pool;
struct job_ctx;

/* Why a job failed, as it appears in the job's error object. */
struct job_failure {
    char code[32];
    char message[256];
};

struct job_type {
    const char *name;
    /* Checks input before the job is created; 0, or -1 with why filled. */
    int (*validate)(const json_t *input, char *why, size_t cap);
    /* Runs the job on a worker thread. Returns 0 with *result (new
     * reference); or -1 with *fail filled for a failure of the job itself;
     * or a DS_E_* code that a job_ctx_* call returned (stop at once). */
    int (*run)(struct job_ctx *ctx, const json_t *input, json_t **result, struct job_failure *fail);
};

/* The type of that name, or NULL. */
const struct job_type *job_type_find(const char *name);
/* "sleep, ..." for error messages. */
const char *job_type_names(void);

/* --- reporting from a running job (worker thread only) --- */
/* Records a progress step. 0, or DS_E_CANCELLED (cancel requested: stop),
 * DS_E_LEASE_LOST (another worker has the job: stop, write nothing),
 * DS_E_DRAINING (the process is stopping: stop, the job is handed back). */
int job_ctx_progress(struct job_ctx *ctx, const char *stage, int percent, const char *message);
/* Streams answer text as a "token" event. Same returns. */
int job_ctx_token(struct job_ctx *ctx, const char *text);
/* Waits ms milliseconds, keeping the lease alive. Same returns. */
int job_ctx_sleep(struct job_ctx *ctx, int64_t ms);
/* Which attempt this run is (1 for the first; +1 for each takeover). */
int job_ctx_attempt(const struct job_ctx *ctx);

/* --- the pool --- */
/* Starts n worker threads (n may be 0), each with its own store handle.
 * Returns NULL after logging why. */
struct worker_pool *worker_pool_start(const struct config *cfg, struct watch_hub *hub, int n);
/* Stops claiming; running jobs may finish for drain_ms, then hand their
 * lease back (the job is queued again at once). Joins and frees the pool. */
void worker_pool_stop(struct worker_pool *pool, int drain_ms);

#endif
