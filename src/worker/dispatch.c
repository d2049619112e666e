/* The dispatcher (see dispatch.h): batches the worker pool's claims and last
 * writes into one store round trip.
 *
 * DESIGN
 * On Redis every script call costs Redis a fixed share of its one core
 * (reading and answering the call, running the script, the append-only log):
 * measured, about 40 µs of a busy worker's 105 µs per job, however little the
 * job does. So the workers do not claim or finish on their own connections:
 * an idle worker waits in dispatcher_next_job(), a finished one hands its
 * last write to dispatcher_take_write(), and this thread sends all the writes
 * that are due with a claim for every idle worker in one store_settle().
 * It never claims more jobs than there are idle workers, so no job waits
 * behind another while a worker could run it.
 *
 * When the queue is empty the thread waits for new work inside the store
 * (store_claim() blocks up to half a second); meanwhile the workers write
 * their results themselves, so a result never waits for that. Progress steps
 * and heartbeats always go from the worker's own connection.
 *
 * Locking: mu guards everything below it in struct dispatcher; the store
 * handle is this thread's alone, and the lock is never held across a store
 * call. */
#include "worker/dispatch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "job/id.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#define BATCH       64  /* writes or claims per round trip, at most */
#define COALESCE_US 200 /* see coalesce() */

struct dispatcher {
    store *st;
    int64_t lease_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* this thread: writes are due or a worker is idle */
    pthread_cond_t job_ready; /* workers: a job is ready, or stopping */
    bool stopping;
    bool in_store_wait; /* blocked in store_claim(): workers write themselves */
    int workers;        /* in the pool */
    int idle;           /* workers waiting in dispatcher_next_job() */
    struct last_write out[BATCH];
    size_t n_out;
    struct job ready[BATCH]; /* claimed for idle workers, not taken yet */
    size_t n_ready;
};

static void last_write_clear(struct last_write *w)
{
    json_decref(w->result);
    w->result = NULL;
}

void last_write_log(const char *job_id, int rc)
{
    if (rc == DS_E_LEASE_LOST)
        log_warn("job %s: lease lost to another worker; this attempt's writes are discarded",
                 job_id);
    else if (rc)
        log_error("job %s: cannot record its outcome: %s", job_id, ds_strerror(rc));
}

/* Sends writes w[0..n) and claims up to want jobs into claimed[]. While the
 * store is unavailable the writes are retried for as long as their lease
 * could still hold; then they are given up as lost. Returns how many jobs it
 * claimed. */
static size_t settle(struct dispatcher *d, struct last_write *w, size_t n, size_t want,
                     struct job *claimed)
{
    struct store_write sw[BATCH];
    uint64_t tokens[BATCH];
    int rcs[BATCH];
    for (size_t i = 0; i < n; i++)
        sw[i] = (struct store_write){w[i].id,
                                     {.kind = w[i].kind,
                                      .token = w[i].token,
                                      .lease_ms = d->lease_ms,
                                      .payload = w[i].result,
                                      .code = w[i].fail.code,
                                      .message = w[i].fail.message}};
    for (size_t j = 0; j < want; j++)
        tokens[j] = job_lease_token_new();
    size_t got = 0;
    int rc =
        store_settle(d->st, sw, n, rcs, tokens, want, d->lease_ms, clock_now_ms(), claimed, &got);
    for (int64_t delay = 50; rc && n; delay = delay < 1000 ? delay * 2 : 1000) {
        bool live = false; /* a write whose lease may still hold */
        for (size_t i = 0; i < n; i++)
            live |= clock_mono_ms() - w[i].since <= d->lease_ms;
        if (!live)
            break;
        clock_sleep_ms(delay);
        rc = store_settle(d->st, sw, n, rcs, tokens, 0, d->lease_ms, clock_now_ms(), claimed, &got);
    }
    for (size_t i = 0; i < n; i++)
        last_write_log(w[i].id, rc ? DS_E_LEASE_LOST : rcs[i]);
    if (rc && !n)
        clock_sleep_ms(100); /* a claim failed: do not spin while the store is away */
    return rc ? 0 : got;
}

/* Waits inside the store for the next job (up to half a second). */
static void wait_for_work(struct dispatcher *d)
{
    d->in_store_wait = true;
    pthread_mutex_unlock(&d->mu);
    struct job job;
    struct job_op op = {
        .kind = JOB_OP_CLAIM, .token = job_lease_token_new(), .lease_ms = d->lease_ms};
    int rc = store_claim(d->st, &op, clock_now_ms(), &job);
    if (rc && rc != DS_E_EMPTY)
        clock_sleep_ms(100);
    pthread_mutex_lock(&d->mu);
    d->in_store_wait = false;
    if (rc == 0) {
        job.lease_token = op.token;
        d->ready[d->n_ready++] = job;
        pthread_cond_signal(&d->job_ready);
    }
}

static size_t wanted(const struct dispatcher *d)
{
    size_t idle = d->idle > 0 ? (size_t)d->idle : 0;
    size_t want = !d->stopping && idle > d->n_ready ? idle - d->n_ready : 0;
    return want < BATCH - d->n_ready ? want : BATCH - d->n_ready;
}

/* Gives the workers still running a job a moment (COALESCE_US) to finish
 * too, so their writes and claims share this round trip: short jobs then
 * settle a batch per trip instead of one or two. A long job costs each
 * round trip this moment, nothing more. */
static void coalesce(struct dispatcher *d)
{
    struct timespec until = clock_mono_after(COALESCE_US);
    while (!d->stopping && d->idle < d->workers && d->n_out < BATCH &&
           pthread_cond_timedwait(&d->wake, &d->mu, &until) == 0)
        ;
}

static void *dispatch_main(void *arg)
{
    struct dispatcher *d = arg;
    struct last_write w[BATCH];
    struct job claimed[BATCH];
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->n_out && !wanted(d) && !d->stopping)
            pthread_cond_wait(&d->wake, &d->mu);
        coalesce(d);
        size_t n = d->n_out, want = wanted(d);
        if (!n && !want)
            break; /* stopping, and nothing left to write */
        memcpy(w, d->out, n * sizeof *w);
        d->n_out = 0;
        pthread_mutex_unlock(&d->mu);
        size_t got = settle(d, w, n, want, claimed);
        for (size_t i = 0; i < n; i++)
            last_write_clear(&w[i]);
        pthread_mutex_lock(&d->mu);
        memcpy(d->ready + d->n_ready, claimed, got * sizeof *claimed);
        d->n_ready += got;
        pthread_cond_broadcast(&d->job_ready);
        if (want && !got && !n && !d->n_out)
            wait_for_work(d); /* the queue is empty */
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

struct dispatcher *dispatcher_start(const char *store_uri, int64_t lease_ms, int workers)
{
    struct dispatcher *d = calloc(1, sizeof *d);
    const char *why = NULL;
    if (!d || store_open(store_uri, &d->st, &why)) {
        log_error("worker: cannot start the dispatcher: %s", why ? why : "no memory");
        free(d);
        return NULL;
    }
    d->lease_ms = lease_ms;
    d->workers = workers;
    pthread_mutex_init(&d->mu, NULL);
    clock_mono_cond_init(&d->wake);
    pthread_cond_init(&d->job_ready, NULL);
    if (pthread_create(&d->thread, NULL, dispatch_main, d)) {
        log_error("worker: cannot start the dispatcher: no thread");
        store_close(d->st);
        free(d);
        return NULL;
    }
    return d;
}

bool dispatcher_take_write(struct dispatcher *d, struct last_write *w)
{
    pthread_mutex_lock(&d->mu);
    bool take = !d->stopping && !d->in_store_wait && d->n_out < BATCH;
    if (take)
        d->out[d->n_out++] = *w; /* no signal: the worker's next_job() gives one */
    pthread_mutex_unlock(&d->mu);
    return take;
}

int dispatcher_next_job(struct dispatcher *d, struct job *job)
{
    pthread_mutex_lock(&d->mu);
    d->idle++;
    pthread_cond_signal(&d->wake);
    while (!d->n_ready && !d->stopping)
        pthread_cond_wait(&d->job_ready, &d->mu);
    d->idle--;
    int rc = d->stopping ? -1 : 0;
    if (!rc)
        *job = d->ready[--d->n_ready];
    pthread_mutex_unlock(&d->mu);
    return rc;
}

void dispatcher_wake_all(struct dispatcher *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_broadcast(&d->job_ready);
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->mu);
}

void dispatcher_stop(struct dispatcher *d)
{
    if (!d)
        return;
    dispatcher_wake_all(d);
    pthread_join(d->thread, NULL);
    for (size_t i = 0; i < d->n_ready; i++) { /* claimed as the pool stopped: hand back */
        struct job_op op = {.kind = JOB_OP_RELEASE, .token = d->ready[i].lease_token};
        int rc = store_apply(d->st, d->ready[i].id, &op, clock_now_ms(), NULL);
        if (rc)
            log_warn("job %s: cannot hand it back: %s; it runs again after its lease",
                     d->ready[i].id, ds_strerror(rc));
        job_clear(&d->ready[i]);
    }
    store_close(d->st);
    pthread_cond_destroy(&d->job_ready);
    pthread_cond_destroy(&d->wake);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
