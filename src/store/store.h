/* The job store interface: one opaque handle per thread, one backend per file.
 *
 * A backend fills a const struct store_ops; the inline wrappers below carry
 * the contract. Handles are not thread-safe: open one per thread (HTTP loop,
 * worker, reaper, watch hub). Every write is atomic: the job row, its events
 * and (for create) the idempotency key commit together or not at all.
 *
 * All strings returned through struct store_doc / store_list / job_events are
 * owned by the caller, who frees them with the matching *_clear(). */
#ifndef DS_STORE_STORE_H
#define DS_STORE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "job/job.h"
#include "util/err.h"

typedef struct store store;

#define DS_STORE_NO_ASYNC 1 /* store_get_async(): read synchronously instead */

/* What a poll needs: the pre-rendered job object and its version. */
struct store_doc {
    char *json; /* owned; the job object */
    int64_t version;
    int64_t event_seq;
    enum job_state state;
};

struct store_filter {
    bool has_state;
    enum job_state state;
    const char *type;   /* NULL = any */
    const char *cursor; /* NULL = from the newest; else ids older than this */
    int limit;
};

struct store_list {
    char **docs; /* owned; n rendered job objects, newest first */
    size_t n;
    char next_cursor[JOB_ID_SIZE]; /* "" when there is no further page */
};

/* An idempotent create: the same key with the same body hash returns the
 * existing job; with another hash it is refused. */
struct store_idem {
    const char *key;       /* NULL = no idempotency key */
    const char *body_hash; /* hex digest of the canonical request */
    int64_t expires_ms;
};

/* A worker's last write to a job, for store_settle(). */
struct store_write {
    const char *id;
    struct job_op op;
};

/* Receives the outcome of an asynchronous read; doc (NULL unless rc is 0) and
 * its json are borrowed for the duration of the call. */
typedef void (*store_read_fn)(int rc, const struct store_doc *doc, void *arg);

struct event_base;

/* Called by store_changes() for each changed job, in commit order. */
typedef void (*store_change_fn)(const char *job_id, const char *event_name, void *arg);

struct store_ops {
    const char *scheme; /* URI prefix, e.g. "sqlite:" */
    /* How often the watch hub must look for changes by other processes when
     * change_fd() gives it nothing to wait on (0: never; the backend pushes
     * them through listen(), or no other process can write). */
    int change_poll_ms;
    /* claim() itself waits a while for work (no need to wait elsewhere). */
    bool claim_waits;
    int (*open)(const char *location, store **out);
    void (*close)(store *st);
    int (*ping)(store *st);
    int (*id_key)(store *st, uint8_t key[JOB_ID_KEY_LEN]);
    int (*create)(store *st, const struct job *job, const struct job_events *ev,
                  const struct store_idem *idem, struct store_doc *out);
    int (*get)(store *st, const char *id, struct store_doc *out);
    int (*peek)(store *st, const char *id, int64_t *version, enum job_state *state);
    int (*load)(store *st, const char *id, struct job *out);
    int (*apply)(store *st, const char *id, const struct job_op *op, int64_t now_ms,
                 struct store_doc *out);
    int (*claim)(store *st, const struct job_op *op, int64_t now_ms, struct job *out);
    /* Optional: see store_settle(). */
    int (*settle)(store *st, const struct store_write *w, size_t n, int *rcs,
                  const uint64_t *tokens, size_t n_claim, int64_t lease_ms, int64_t now_ms,
                  struct job *claimed, size_t *n_claimed);
    int (*requeue_expired)(store *st, int64_t now_ms, int64_t lease_ms, int *requeued, int *failed);
    int (*expire)(store *st, int64_t now_ms, int *removed);
    int (*remove)(store *st, const char *id);
    int (*list)(store *st, const struct store_filter *f, struct store_list *out);
    int (*events)(store *st, const char *id, int64_t after_seq, struct job_events *out,
                  int64_t *first_kept);
    int (*changes)(store *st, int64_t *cursor, store_change_fn fn, void *arg);
    int (*counts)(store *st, int64_t counts[JOB_N_STATES]);
    /* Optional: blocks delivering every change by any process to a job to fn
     * (creates need not be: nothing waits on a job before its id is known)
     * until store_unlisten() is called from another thread. */
    int (*listen)(store *st, store_change_fn fn, void *arg);
    void (*unlisten)(store *st);
    /* Optional: reads that complete on an event loop, pipelined with the
     * other reads of that loop (network stores). */
    int (*attach)(store *st, struct event_base *base);
    /* Optional: a descriptor (owned by the handle) that becomes readable when
     * another process may have committed, or -1. */
    int (*change_fd)(store *st);
    int (*get_async)(store *st, const char *id, bool peek, store_read_fn fn, void *arg);
    int (*create_async)(store *st, const struct job *job, const struct job_events *ev,
                        const struct store_idem *idem, store_read_fn fn, void *arg);
};

/* Every backend's handle begins with this. */
struct store {
    const struct store_ops *ops;
};

extern const struct store_ops store_memory_ops;
extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_redis_ops;

/* Opens a handle on the store named by uri ("memory:", "sqlite:PATH").
 * Returns 0, or DS_E_INVALID for an unknown scheme, or the backend's error;
 * on error *out is NULL and *why (if not NULL) points at a static message. */
int store_open(const char *uri, store **out, const char **why);

/* Closes a handle; NULL is allowed. */
static inline void store_close(store *st)
{
    if (st)
        st->ops->close(st);
}

/* 0 when the store answers, DS_E_UNAVAILABLE otherwise. */
static inline int store_ping(store *st)
{
    return st->ops->ping(st);
}

/* The deployment's id MAC key, created on first use and then shared by all. */
static inline int store_id_key(store *st, uint8_t key[JOB_ID_KEY_LEN])
{
    return st->ops->id_key(st, key);
}

/* Persists a new job with its first events, atomically with the idempotency
 * key. 0: created, *out is the new doc. DS_E_EXISTS: the key names a job made
 * from the same body, *out is that job's doc. DS_E_IDEM_MISMATCH: same key,
 * other body; *out untouched. */
static inline int store_create(store *st, const struct job *job, const struct job_events *ev,
                               const struct store_idem *idem, struct store_doc *out)
{
    return st->ops->create(st, job, ev, idem, out);
}

/* The rendered job. 0 or DS_E_NOTFOUND. */
static inline int store_get(store *st, const char *id, struct store_doc *out)
{
    return st->ops->get(st, id, out);
}

/* Only the version and state (a revalidation needs no body). 0 or DS_E_NOTFOUND. */
static inline int store_peek(store *st, const char *id, int64_t *version, enum job_state *state)
{
    return st->ops->peek(st, id, version, state);
}

/* The whole job, for workers. Caller job_clear()s *out. 0 or DS_E_NOTFOUND. */
static inline int store_load(store *st, const char *id, struct job *out)
{
    return st->ops->load(st, id, out);
}

/* Applies op to the job atomically (see job_apply() for refusals); on success
 * *out (may be NULL) is the new doc. DS_E_NOTFOUND if the job is gone. */
static inline int store_apply(store *st, const char *id, const struct job_op *op, int64_t now_ms,
                              struct store_doc *out)
{
    return st->ops->apply(st, id, op, now_ms, out);
}

/* Claims the oldest queued job under op->token. 0 and *out filled (caller
 * job_clear()s), or DS_E_EMPTY. */
static inline int store_claim(store *st, const struct job_op *op, int64_t now_ms, struct job *out)
{
    return st->ops->claim(st, op, now_ms, out);
}

/* Whether the store can settle many jobs in one round trip. */
static inline bool store_can_settle(const store *st)
{
    return st->ops->settle != NULL;
}

/* Workers' last writes to their jobs (w[i].op on w[i].id, each under its
 * lease; rcs[i] gets what store_apply() would return) and the claim of up to
 * n_claim queued jobs, the j-th under tokens[j] (*n_claimed of them, into
 * claimed[]; the caller job_clear()s each), in one round trip. Returns 0, or
 * DS_E_UNAVAILABLE / DS_E_IO when it is not known what was done (retrying a
 * write then gets DS_E_LEASE_LOST if it was). Only where store_can_settle(). */
static inline int store_settle(store *st, const struct store_write *w, size_t n, int *rcs,
                               const uint64_t *tokens, size_t n_claim, int64_t lease_ms,
                               int64_t now_ms, struct job *claimed, size_t *n_claimed)
{
    return st->ops->settle(st, w, n, rcs, tokens, n_claim, lease_ms, now_ms, claimed, n_claimed);
}

/* Requeues running jobs whose lease expired, or fails those out of attempts.
 * lease_ms is the configured lease (a backend may use it to find candidates). */
static inline int store_requeue_expired(store *st, int64_t now_ms, int64_t lease_ms, int *requeued,
                                        int *failed)
{
    return st->ops->requeue_expired(st, now_ms, lease_ms, requeued, failed);
}

/* Deletes finished jobs past their TTL, their events and stale idempotency keys. */
static inline int store_expire(store *st, int64_t now_ms, int *removed)
{
    return st->ops->expire(st, now_ms, removed);
}

/* Forgets a terminal job. 0, DS_E_NOTFOUND, or DS_E_CONFLICT if not terminal. */
static inline int store_remove(store *st, const char *id)
{
    return st->ops->remove(st, id);
}

/* One page of jobs, newest first. Caller store_list_clear()s *out. */
static inline int store_list(store *st, const struct store_filter *f, struct store_list *out)
{
    return st->ops->list(st, f, out);
}

/* Events of a job with seq > after_seq, oldest first, appended to *out;
 * *first_kept is the oldest retained seq (0 if none). DS_E_NOTFOUND if gone. */
static inline int store_events(store *st, const char *id, int64_t after_seq, struct job_events *out,
                               int64_t *first_kept)
{
    return st->ops->events(st, id, after_seq, out, first_kept);
}

/* Calls fn for every change committed (by any process) after *cursor and
 * advances it. A *cursor of -1 starts at "now" and reports nothing. */
static inline int store_changes(store *st, int64_t *cursor, store_change_fn fn, void *arg)
{
    return st->ops->changes(st, cursor, fn, arg);
}

/* Number of jobs in each state. */
static inline int store_counts(store *st, int64_t counts[JOB_N_STATES])
{
    return st->ops->counts(st, counts);
}

/* Blocks, calling fn for every change by any process, until store_unlisten()
 * (from another thread). Only for backends with a listen op. */
static inline int store_listen(store *st, store_change_fn fn, void *arg)
{
    return st->ops->listen(st, fn, arg);
}

static inline void store_unlisten(store *st)
{
    st->ops->unlisten(st);
}

/* Lets this handle read asynchronously on base (its thread only, from now
 * on). 0, or DS_E_INVALID when the backend has no asynchronous reads. */
static inline int store_attach(store *st, struct event_base *base)
{
    return st->ops->attach ? st->ops->attach(st, base) : DS_STORE_NO_ASYNC;
}

/* Reads a job (peek: version and state only, json is "") and calls fn on
 * the attached loop's thread with the outcome, which is what store_get() or
 * store_peek() would have returned. Returns 0 when fn will be called, or
 * DS_STORE_NO_ASYNC when the caller must read synchronously instead. */
static inline int store_get_async(store *st, const char *id, bool peek, store_read_fn fn, void *arg)
{
    return st->ops->get_async ? st->ops->get_async(st, id, peek, fn, arg) : DS_STORE_NO_ASYNC;
}

/* store_create() completing on the attached loop: fn gets what store_create()
 * returns and the doc it would fill (the new job, or the existing one for
 * DS_E_EXISTS). Returns 0 when fn will be called, or DS_STORE_NO_ASYNC when
 * the caller must create synchronously instead. */
static inline int store_create_async(store *st, const struct job *job, const struct job_events *ev,
                                     const struct store_idem *idem, store_read_fn fn, void *arg)
{
    return st->ops->create_async ? st->ops->create_async(st, job, ev, idem, fn, arg)
                                 : DS_STORE_NO_ASYNC;
}

/* A descriptor to wait on for other processes' commits (drain it with
 * read() when it fires), or -1: then look every change_poll_ms. */
static inline int store_change_fd(store *st)
{
    return st->ops->change_fd ? st->ops->change_fd(st) : -1;
}

void store_doc_clear(struct store_doc *doc);
void store_list_clear(struct store_list *list);

/* Fills doc from a job (renders it). 0 or DS_E_NOMEM. For backends. */
int store_doc_from_job(struct store_doc *doc, const struct job *job);

#endif
