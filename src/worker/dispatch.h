/* The dispatcher: for a store that settles many jobs per round trip
 * (store_can_settle()), one thread per pool claims jobs for the idle workers
 * and sends the last writes of the finished ones, batched. Private to the
 * worker pool. */
#ifndef DS_WORKER_DISPATCH_H
#define DS_WORKER_DISPATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "job/job.h"
#include "worker/worker.h"

struct dispatcher;

/* A finished job's last write (a success or a failure), owned by whoever
 * holds the struct. */
struct last_write {
    char id[JOB_ID_SIZE];
    enum job_op_kind kind; /* JOB_OP_SUCCEED or JOB_OP_FAIL */
    uint64_t token;
    json_t *result;          /* owned reference (succeed), or NULL */
    struct job_failure fail; /* code and message (fail) */
    int64_t since;           /* monotonic ms of the job's last write the store took */
};

/* Logs what a last write's outcome means for the job, if anything. */
void last_write_log(const char *job_id, int rc);

/* Starts the thread on its own store handle, for a pool of that many
 * workers. NULL after logging why. */
struct dispatcher *dispatcher_start(const char *store_uri, int64_t lease_ms, int workers);

/* Takes over a last write (*w then belongs to the dispatcher) and returns
 * true, unless it is waiting inside the store for new work or stopping:
 * then the worker writes it itself (false). */
bool dispatcher_take_write(struct dispatcher *d, struct last_write *w);

/* A worker's wait for its next job: 0 with *job (the caller job_clear()s
 * it; the lease token is job->lease_token), or -1 once the pool stops. */
int dispatcher_next_job(struct dispatcher *d, struct job *job);

/* Stops handing out jobs and wakes the waiting workers (call first). */
void dispatcher_wake_all(struct dispatcher *d);

/* After the workers are joined: sends the writes still held, hands back the
 * jobs claimed but not taken, joins the thread and frees everything. */
void dispatcher_stop(struct dispatcher *d);

#endif
