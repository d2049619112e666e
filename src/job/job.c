/* The job state machine and its renderings.
 *
 * DESIGN
 * transitions[][] below is the only place that says which state may follow
 * which. job_apply() is the only function that changes a job after creation:
 * it checks the lease fence (a worker must present the token of the current
 * lease), consults the table, bumps `version` on every visible change, and
 * appends the SSE events that describe the change. Each event's data is one
 * line of JSON carrying job_id and version, rendered here once and stored,
 * so streaming an event later is a copy, not a render. */
#include "job/job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"
#include "util/err.h"

static const char *const state_names[JOB_N_STATES] = {"queued", "running", "succeeded", "failed",
                                                      "cancelled"};

/* transitions[from][to]: the one transition table. */
static const bool transitions[JOB_N_STATES][JOB_N_STATES] = {
    [JOB_QUEUED] = {[JOB_RUNNING] = true, [JOB_CANCELLED] = true},
    [JOB_RUNNING] = {[JOB_QUEUED] = true, /* lease lost or given back */
                     [JOB_SUCCEEDED] = true,
                     [JOB_FAILED] = true,
                     [JOB_CANCELLED] = true},
};

const char *job_state_name(enum job_state s)
{
    return (unsigned)s < JOB_N_STATES ? state_names[s] : "unknown";
}

int job_state_parse(const char *name, enum job_state *out)
{
    for (int s = 0; s < JOB_N_STATES; s++)
        if (!strcmp(name, state_names[s])) {
            *out = (enum job_state)s;
            return 0;
        }
    return DS_E_INVALID;
}

bool job_state_terminal(enum job_state s)
{
    return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_CANCELLED;
}

bool job_transition_allowed(enum job_state from, enum job_state to)
{
    return (unsigned)from < JOB_N_STATES && (unsigned)to < JOB_N_STATES && transitions[from][to];
}

const char *job_event_name(const char *name)
{
    static const char *const names[] = {"snapshot", "status", "progress",
                                        "token",    "result", "error"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i]))
            return names[i];
    return NULL;
}

int job_events_push(struct job_events *ev, int64_t seq, const char *name, char *data)
{
    if (!data)
        return DS_E_NOMEM;
    if (ev->n == ev->cap) {
        size_t cap = ev->cap ? ev->cap * 2 : 4;
        struct job_event *v = realloc(ev->v, cap * sizeof *v);
        if (!v) {
            free(data);
            return DS_E_NOMEM;
        }
        ev->v = v;
        ev->cap = cap;
    }
    ev->v[ev->n++] = (struct job_event){seq, name, data};
    return 0;
}

void job_events_clear(struct job_events *ev)
{
    for (size_t i = 0; i < ev->n; i++)
        free(ev->v[i].data);
    free(ev->v);
    *ev = (struct job_events){0};
}

/* Renders {"job_id","version", ...fields} and appends it as the next event.
 * Steals the reference to fields. */
static int emit(struct job *job, struct job_events *ev, const char *name, json_t *fields)
{
    json_t *o = json_object();
    if (!o || !fields) {
        json_decref(o);
        json_decref(fields);
        return DS_E_NOMEM;
    }
    json_object_set_new(o, "job_id", json_string(job->id));
    json_object_set_new(o, "version", json_integer(job->version));
    json_object_update(o, fields);
    json_decref(fields);
    char *data = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return job_events_push(ev, ++job->event_seq, name, data);
}

static int emit_status(struct job *job, struct job_events *ev)
{
    return emit(
        job, ev, "status",
        json_pack("{s:s, s:i}", "status", job_state_name(job->state), "attempts", job->attempts));
}

int job_init(struct job *job, const char *id, const char *type, json_t *input, int64_t ttl_s,
             int max_attempts, int64_t now_ms, struct job_events *ev)
{
    memset(job, 0, sizeof *job);
    snprintf(job->id, sizeof job->id, "%s", id);
    snprintf(job->type, sizeof job->type, "%s", type);
    job->state = JOB_QUEUED;
    job->input = json_incref(input);
    job->attempts = 1;
    job->max_attempts = max_attempts;
    job->created_ms = now_ms;
    job->ttl_s = ttl_s;
    job->version = 1;
    return emit_status(job, ev);
}

/* Moves to a new state through the table and emits the matching event. */
static int move(struct job *job, enum job_state to, int64_t now_ms, struct job_events *ev)
{
    if (!job_transition_allowed(job->state, to))
        return DS_E_CONFLICT;
    job->state = to;
    job->version++;
    if (to == JOB_RUNNING)
        job->started_ms = now_ms;
    if (to == JOB_QUEUED) {
        job->lease_token = 0;
        job->lease_expires_ms = 0;
    }
    if (!job_state_terminal(to))
        return emit_status(job, ev);
    job->finished_ms = now_ms;
    job->expires_ms = now_ms + job->ttl_s * 1000;
    job->lease_token = 0;
    if (to == JOB_SUCCEEDED)
        return emit(job, ev, "result",
                    json_pack("{s:s, s:O}", "status", "succeeded", "result", job->result));
    return emit(job, ev, "error",
                json_pack("{s:s, s:O}", "status", job_state_name(to), "error", job->error));
}

static void set_error(struct job *job, const char *code, const char *message)
{
    json_decref(job->error);
    job->error = json_pack("{s:s, s:s}", "code", code, "message", message ? message : code);
}

/* The lease fence: only the current lease holder of a running job may write. */
static int fence(const struct job *job, const struct job_op *op)
{
    if (job->state != JOB_RUNNING || job->lease_token != op->token)
        return DS_E_LEASE_LOST;
    return 0;
}

static int apply_claim(struct job *job, const struct job_op *op, int64_t now, struct job_events *ev)
{
    if (job->state != JOB_QUEUED)
        return DS_E_CONFLICT;
    job->lease_token = op->token;
    job->lease_expires_ms = now + op->lease_ms;
    return move(job, JOB_RUNNING, now, ev);
}

static int apply_step(struct job *job, const struct job_op *op, int64_t now, struct job_events *ev)
{
    int rc = fence(job, op);
    if (rc)
        return rc;
    if (job->cancel_requested)
        return DS_E_CANCELLED;
    job->lease_expires_ms = now + op->lease_ms;
    if (op->kind == JOB_OP_HEARTBEAT)
        return 0;
    if (op->kind == JOB_OP_TOKEN)
        return emit(job, ev, "token", json_deep_copy(op->payload));
    json_decref(job->progress);
    job->progress = json_deep_copy(op->payload);
    job->version++;
    return emit(job, ev, "progress", json_deep_copy(op->payload));
}

static int apply_finish(struct job *job, const struct job_op *op, int64_t now,
                        struct job_events *ev)
{
    int rc = fence(job, op);
    if (rc)
        return rc;
    if (op->kind == JOB_OP_SUCCEED) {
        job->result = json_deep_copy(op->payload);
        return move(job, JOB_SUCCEEDED, now, ev);
    }
    bool cancelled = !strcmp(op->code, "cancelled");
    set_error(job, op->code, op->message);
    return move(job, cancelled ? JOB_CANCELLED : JOB_FAILED, now, ev);
}

static int apply_cancel(struct job *job, int64_t now, struct job_events *ev)
{
    if (job_state_terminal(job->state))
        return DS_E_CONFLICT;
    if (job->state == JOB_RUNNING) {
        if (!job->cancel_requested) {
            job->cancel_requested = true;
            job->version++;
        }
        return 0;
    }
    set_error(job, "cancelled", "cancelled before it started");
    return move(job, JOB_CANCELLED, now, ev);
}

static int apply_requeue(struct job *job, int64_t now, struct job_events *ev)
{
    if (job->state != JOB_RUNNING || job->lease_expires_ms > now)
        return DS_E_INVALID;
    if (job->attempts >= job->max_attempts) {
        set_error(job, "worker_lost",
                  "the worker running this job stopped and no attempts are left");
        return move(job, JOB_FAILED, now, ev);
    }
    job->attempts++;
    return move(job, JOB_QUEUED, now, ev);
}

int job_apply(struct job *job, const struct job_op *op, int64_t now_ms, struct job_events *ev)
{
    switch (op->kind) {
    case JOB_OP_CLAIM:
        return apply_claim(job, op, now_ms, ev);
    case JOB_OP_HEARTBEAT:
    case JOB_OP_PROGRESS:
    case JOB_OP_TOKEN:
        return apply_step(job, op, now_ms, ev);
    case JOB_OP_SUCCEED:
    case JOB_OP_FAIL:
        return apply_finish(job, op, now_ms, ev);
    case JOB_OP_CANCEL:
        return apply_cancel(job, now_ms, ev);
    case JOB_OP_RELEASE: {
        int rc = fence(job, op);
        return rc ? rc : move(job, JOB_QUEUED, now_ms, ev);
    }
    case JOB_OP_REQUEUE:
        return apply_requeue(job, now_ms, ev);
    }
    return DS_E_INVALID;
}

static json_t *time_or_null(int64_t ms)
{
    if (!ms)
        return json_null();
    char buf[CLOCK_RFC3339_LEN];
    clock_rfc3339(ms, buf);
    return json_string(buf);
}

static json_t *links(const char *id)
{
    char self[80], events[96], cancel[96];
    snprintf(self, sizeof self, "/v1/jobs/%s", id);
    snprintf(events, sizeof events, "%s/events", self);
    snprintf(cancel, sizeof cancel, "%s/cancel", self);
    return json_pack("{s:s, s:s, s:s}", "self", self, "events", events, "cancel", cancel);
}

static json_t *or_null(json_t *v)
{
    return v ? json_incref(v) : json_null();
}

json_t *job_to_json(const struct job *job)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_string(job->id));
    json_object_set_new(o, "type", json_string(job->type));
    json_object_set_new(o, "status", json_string(job_state_name(job->state)));
    json_object_set_new(o, "progress", or_null(job->progress));
    json_object_set_new(o, "input", or_null(job->input));
    json_object_set_new(o, "result", or_null(job->result));
    json_object_set_new(o, "error", or_null(job->error));
    json_object_set_new(o, "attempts", json_integer(job->attempts));
    json_object_set_new(o, "max_attempts", json_integer(job->max_attempts));
    json_object_set_new(o, "cancel_requested", json_boolean(job->cancel_requested));
    json_object_set_new(o, "created_at", time_or_null(job->created_ms));
    json_object_set_new(o, "started_at", time_or_null(job->started_ms));
    json_object_set_new(o, "finished_at", time_or_null(job->finished_ms));
    json_object_set_new(o, "expires_at", time_or_null(job->expires_ms));
    json_object_set_new(o, "version", json_integer(job->version));
    json_object_set_new(o, "links", links(job->id));
    return o;
}

char *job_render(const struct job *job)
{
    json_t *o = job_to_json(job);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

void job_clear(struct job *job)
{
    json_decref(job->input);
    json_decref(job->progress);
    json_decref(job->result);
    json_decref(job->error);
    job->input = job->progress = job->result = job->error = NULL;
}

int job_copy(struct job *dst, const struct job *src)
{
    *dst = *src;
    dst->input = src->input ? json_deep_copy(src->input) : NULL;
    dst->progress = src->progress ? json_deep_copy(src->progress) : NULL;
    dst->result = src->result ? json_deep_copy(src->result) : NULL;
    dst->error = src->error ? json_deep_copy(src->error) : NULL;
    if ((src->input && !dst->input) || (src->progress && !dst->progress) ||
        (src->result && !dst->result) || (src->error && !dst->error)) {
        job_clear(dst);
        return DS_E_NOMEM;
    }
    return 0;
}
