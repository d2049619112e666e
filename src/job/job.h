/* The job: its states, the one transition table, and its JSON renderings.
 *
 * Every change to a job goes through job_apply(), which checks the transition
 * table and the lease fence, bumps `version`, and appends the events that
 * SSE clients see. Store backends persist what job_apply() produced; they
 * never change a job by hand, so SQLite and memory behave identically. */
#ifndef DS_JOB_JOB_H
#define DS_JOB_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "job/id.h"

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED, JOB_N_STATES };

#define JOB_TYPE_MAX    32
#define JOB_EVENTS_KEPT 1000 /* per job; older events are answered by a snapshot */

struct job {
    char id[JOB_ID_SIZE];
    char type[JOB_TYPE_MAX];
    enum job_state state;
    json_t *input;    /* owned; never NULL after job_init */
    json_t *progress; /* owned; NULL until the first progress step */
    json_t *result;   /* owned; set only when succeeded */
    json_t *error;    /* owned; {"code","message"}, only when failed or cancelled */
    int attempts, max_attempts;
    int64_t created_ms, started_ms, finished_ms, expires_ms; /* 0 = null */
    int64_t ttl_s;
    int64_t version;   /* +1 on every visible change; the ETag */
    int64_t event_seq; /* sequence number of the last event */
    uint64_t lease_token;
    int64_t lease_expires_ms;
    bool cancel_requested;
};

/* One event of a job's stream. data is one line of JSON with job_id and version. */
struct job_event {
    int64_t seq;
    const char *name; /* static string: "status", "progress", "token", "result", "error" */
    char *data;       /* owned */
};

/* A growable list of events; job_apply() appends to it. */
struct job_events {
    struct job_event *v;
    size_t n, cap;
};

enum job_op_kind {
    JOB_OP_CLAIM,     /* queued -> running under a new lease */
    JOB_OP_HEARTBEAT, /* extend the lease; no visible change */
    JOB_OP_PROGRESS,  /* payload {"stage","percent","message"} */
    JOB_OP_TOKEN,     /* payload {"text"}: streamed answer text */
    JOB_OP_SUCCEED,   /* payload: the result */
    JOB_OP_FAIL,      /* code + message */
    JOB_OP_CANCEL,    /* queued -> cancelled; running -> cancel requested */
    JOB_OP_RELEASE,   /* a draining worker gives its lease back: -> queued */
    JOB_OP_REQUEUE,   /* the reaper: lease expired -> queued or failed worker_lost */
};

/* A requested change. Borrowed pointers stay owned by the caller. */
struct job_op {
    enum job_op_kind kind;
    uint64_t token;   /* the lease token, for fenced kinds */
    int64_t lease_ms; /* CLAIM, HEARTBEAT, PROGRESS, TOKEN: new lease length */
    const json_t *payload;
    const char *code, *message; /* FAIL */
};

const char *job_state_name(enum job_state s);
/* Returns 0 and sets *out, or DS_E_INVALID for an unknown name. */
int job_state_parse(const char *name, enum job_state *out);
bool job_state_terminal(enum job_state s);
/* The transition table: may a job move from `from` to `to`? */
bool job_transition_allowed(enum job_state from, enum job_state to);

/* Makes a new queued job (version 1, one "status" event appended to ev).
 * Takes a new reference to input. Returns 0 or DS_E_NOMEM. */
int job_init(struct job *job, const char *id, const char *type, json_t *input, int64_t ttl_s,
             int max_attempts, int64_t now_ms, struct job_events *ev);

/* Applies op at time now_ms. On success returns 0 and appends the events it
 * produced to ev (possibly none). On refusal returns, and changes nothing:
 *   DS_E_LEASE_LOST  fenced op whose token is not the current lease
 *   DS_E_CANCELLED   PROGRESS/TOKEN/HEARTBEAT after a cancel request
 *   DS_E_CONFLICT    the transition table forbids it (e.g. cancel a finished job)
 *   DS_E_INVALID     REQUEUE of a job whose lease has not expired */
int job_apply(struct job *job, const struct job_op *op, int64_t now_ms, struct job_events *ev);

/* The public job object as compact JSON. Caller frees. NULL on no memory. */
char *job_render(const struct job *job);

/* A job whose JSON values are already rendered (as a store keeps them);
 * NULL or "" is null. Every pointer is borrowed. */
struct job_text {
    const char *id, *type;
    enum job_state state;
    const char *progress, *input, *result, *error;
    int attempts, max_attempts;
    bool cancel_requested;
    int64_t created_ms, started_ms, finished_ms, expires_ms;
    int64_t version;
};

/* The job object from its texts, without parsing them: the one renderer of
 * the job object (job_render() feeds it). Caller frees; NULL on no memory. */
char *job_render_text(const struct job_text *t);

/* Releases what a job owns; the struct itself may be reused after job_init. */
void job_clear(struct job *job);
/* Deep copy; returns 0 or DS_E_NOMEM. */
int job_copy(struct job *dst, const struct job *src);

/* Appends an event; takes ownership of data. Returns 0 or DS_E_NOMEM. */
int job_events_push(struct job_events *ev, int64_t seq, const char *name, char *data);
void job_events_clear(struct job_events *ev);

/* The last event of a finished job: its name ("result" or "error") and its
 * data, from the job's texts. The one definition of that event, for stores
 * that derive it instead of keeping it. Caller frees; NULL on no memory. */
/* The data of a "status" event exactly as job_init() and job_apply() make
 * it, for a backend that derives the events every job has (the first,
 * queued at version 1; the first claim's, running at version 2) instead of
 * storing them. Caller frees; NULL without memory. */
char *job_status_event(const char *id, int64_t version, enum job_state state, int attempts);

const char *job_terminal_event_name(enum job_state state);
char *job_terminal_event(const char *id, int64_t version, enum job_state state, const char *result,
                         const char *error);

/* Maps an event name back to the static string used in struct job_event. */
const char *job_event_name(const char *name);

#endif
