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

char *job_status_event(const char *id, int64_t version, enum job_state state, int attempts)
{
    struct job job = {.state = state, .attempts = attempts, .version = version};
    struct job_events ev = {0};
    char *data = NULL;
    snprintf(job.id, sizeof job.id, "%s", id);
    if (emit_status(&job, &ev) == 0 && ev.n == 1) {
        data = ev.v[0].data; /* taken from ev */
        ev.v[0].data = NULL;
    }
    job_events_clear(&ev);
    return data;
}

static char *dump(const json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

const char *job_terminal_event_name(enum job_state state)
{
    return state == JOB_SUCCEEDED ? "result" : "error";
}

char *job_terminal_event(const char *id, int64_t version, enum job_state state, const char *result,
                         const char *error)
{
    bool ok = state == JOB_SUCCEEDED;
    const char *value = ok ? result : error;
    size_t len = strlen(id) + (value ? strlen(value) : 4) + 96;
    char *data = malloc(len);
    if (data)
        snprintf(data, len, "{\"job_id\":\"%s\",\"version\":%lld,\"status\":\"%s\",\"%s\":%s}", id,
                 (long long)version, job_state_name(state), ok ? "result" : "error",
                 value && *value ? value : "null");
    return data;
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
    char *result = dump(job->result), *error = dump(job->error);
    char *data = job_terminal_event(job->id, job->version, to, result, error);
    free(result);
    free(error);
    return job_events_push(ev, ++job->event_seq, job_terminal_event_name(to), data);
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

/* Writes a JSON string; ids and type names are plain ASCII, but a stored
 * row is not trusted to be. */
static void put_string(FILE *f, const char *v)
{
    fputc('"', f);
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void put_time(FILE *f, const char *key, int64_t ms)
{
    char buf[CLOCK_RFC3339_LEN];
    if (!ms) {
        fprintf(f, ",\"%s\":null", key);
        return;
    }
    clock_rfc3339(ms, buf);
    fprintf(f, ",\"%s\":\"%s\"", key, buf);
}

static const char *json_or_null(const char *text)
{
    return text && *text ? text : "null";
}

char *job_render_text(const struct job_text *t)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    fprintf(f, "{\"id\":");
    put_string(f, t->id);
    fprintf(f, ",\"type\":");
    put_string(f, t->type);
    fprintf(f, ",\"status\":\"%s\",\"progress\":%s,\"input\":%s,\"result\":%s,\"error\":%s",
            job_state_name(t->state), json_or_null(t->progress), json_or_null(t->input),
            json_or_null(t->result), json_or_null(t->error));
    fprintf(f, ",\"attempts\":%d,\"max_attempts\":%d,\"cancel_requested\":%s", t->attempts,
            t->max_attempts, t->cancel_requested ? "true" : "false");
    put_time(f, "created_at", t->created_ms);
    put_time(f, "started_at", t->started_ms);
    put_time(f, "finished_at", t->finished_ms);
    put_time(f, "expires_at", t->expires_ms);
    fprintf(f, ",\"version\":%lld,\"links\":{\"self\":\"/v1/jobs/%s\",", (long long)t->version,
            t->id);
    fprintf(f, "\"events\":\"/v1/jobs/%s/events\",\"cancel\":\"/v1/jobs/%s/cancel\"}}", t->id,
            t->id);
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

char *job_render(const struct job *job)
{
    char *progress = dump(job->progress), *input = dump(job->input);
    char *result = dump(job->result), *error = dump(job->error);
    struct job_text t = {job->id,
                         job->type,
                         job->state,
                         progress,
                         input,
                         result,
                         error,
                         job->attempts,
                         job->max_attempts,
                         job->cancel_requested,
                         job->created_ms,
                         job->started_ms,
                         job->finished_ms,
                         job->expires_ms,
                         job->version};
    char *doc = job_render_text(&t);
    free(progress);
    free(input);
    free(result);
    free(error);
    return doc;
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
