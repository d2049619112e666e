/* GET /v1/jobs/{id}/events: a job's changes as Server-Sent Events.
 *
 * DESIGN
 * The stream sends what the store kept after the client's last event id
 * (Last-Event-ID header, or ?last_event_id= for a browser's first connect),
 * then parks on a watch and sends new events as the hub reports changes. If
 * the client's position is older than the kept events, a `snapshot` event
 * with the whole job comes first, numbered just before the oldest kept one. The stream ends after
 * the terminal event
 * (`result` or `error`); a client that already has it gets 204, which makes
 * EventSource stop reconnecting. On drain the stream just ends: the client
 * resumes on another instance from its last id. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "util/err.h"
#include "watch/hub.h"

struct sse {
    struct http_request *req;
    struct api_loop *L;
    struct watch *watch;
    struct event *heartbeat;
    char id[JOB_ID_SIZE];
    int64_t last_seq; /* the last event id the client has */
};

static void sse_free(struct sse *s)
{
    metrics_sse_clients(-1);
    watch_remove(s->L->app->hub, s->watch);
    if (s->heartbeat)
        event_free(s->heartbeat);
    free(s);
}

static void sse_end(struct sse *s)
{
    struct http_request *req = s->req;
    sse_free(s);
    http_stream_end(req);
}

/* Writes one event; -1 if the stream was dropped (slow reader). */
static int sse_write(struct sse *s, int64_t seq, const char *name, const char *data)
{
    char head[96];
    int n = snprintf(head, sizeof head, "id: %lld\nevent: %s\ndata: ", (long long)seq, name);
    if (http_stream_write(s->req, head, (size_t)n) ||
        http_stream_write(s->req, data, strlen(data)) || http_stream_write(s->req, "\n\n", 2))
        return -1;
    s->last_seq = seq;
    return 0;
}

/* The whole job as a `snapshot` event: the doc with job_id added in front.
 * Its id is the one before the oldest kept event, so every kept event
 * (the terminal one above all) still follows it. */
static int send_snapshot(struct sse *s, const struct store_doc *doc, int64_t id)
{
    size_t len = strlen(doc->json) + JOB_ID_LEN + 16;
    char *data = malloc(len);
    if (!data)
        return -1;
    snprintf(data, len, "{\"job_id\":\"%s\",%s", s->id, doc->json + 1);
    int rc = sse_write(s, id, "snapshot", data);
    free(data);
    return rc;
}

enum pump { PUMP_KEEP, PUMP_END, PUMP_DROPPED };

/* The client missed events the store no longer keeps: send the whole job. */
static enum pump catch_up(struct sse *s, int64_t first_kept)
{
    struct store_doc doc = {0};
    enum pump out = PUMP_END;
    if (store_get(s->L->st, s->id, &doc) == 0)
        out = send_snapshot(s, &doc, first_kept - 1) ? PUMP_DROPPED : PUMP_KEEP;
    store_doc_clear(&doc);
    return out;
}

/* Sends every event after last_seq. Returns 1 when the stream is over (ended,
 * or dropped and freed), 0 while it waits for more. */
static int sse_pump(struct sse *s)
{
    struct job_events ev = {0};
    int64_t first_kept = 0;
    /* A vanished job or a failing store ends the stream; the client retries. */
    enum pump out =
        store_events(s->L->st, s->id, s->last_seq, &ev, &first_kept) ? PUMP_END : PUMP_KEEP;
    if (out == PUMP_KEEP && ev.n && ev.v[0].seq > s->last_seq + 1)
        out = catch_up(s, ev.v[0].seq);
    for (size_t i = 0; out == PUMP_KEEP && i < ev.n; i++) {
        if (ev.v[i].seq <= s->last_seq)
            continue;
        if (sse_write(s, ev.v[i].seq, ev.v[i].name, ev.v[i].data))
            out = PUMP_DROPPED; /* s is freed */
        else if (!strcmp(ev.v[i].name, "result") || !strcmp(ev.v[i].name, "error"))
            out = PUMP_END;
    }
    job_events_clear(&ev);
    if (out == PUMP_END)
        sse_end(s);
    return out != PUMP_KEEP;
}

static void sse_woken(void *arg)
{
    sse_pump(arg);
}

static void sse_beat(evutil_socket_t fd, short what, void *arg)
{
    struct sse *s = arg;
    (void)fd, (void)what;
    http_stream_write(s->req, ": keep-alive\n\n", 14);
}

static void sse_hook(struct http_request *req, enum http_hook_event ev, void *arg)
{
    (void)req;
    if (ev == HTTP_HOOK_ABORT)
        sse_free(arg);
    else
        sse_end(arg);
}

/* Last-Event-ID header or ?last_event_id=; 0 if neither. Answers 400 on junk. */
static int resume_point(struct http_request *req, int64_t *seq)
{
    char buf[24];
    const char *v = http_req_header(req, "Last-Event-ID");
    int found = v ? 1 : http_req_param(req, "last_event_id", buf, sizeof buf);
    if (!v && found == 1)
        v = buf;
    char *end;
    long long n = found == 1 ? strtoll(v, &end, 10) : 0;
    if (found == -1 || (found == 1 && (!*v || *end || n < 0))) {
        http_problem(req, 400, "Last-Event-ID must be a non-negative event id, got '%.32s'",
                     found == 1 ? v : "(too long)");
        return -1;
    }
    *seq = n;
    return 0;
}

static void start_stream(struct http_request *req, const char *id, int64_t seq)
{
    struct api_loop *L = api_loop_of(req);
    struct event_base *base = http_loop_base(http_req_loop(req));
    struct sse *s = calloc(1, sizeof *s);
    if (!s) {
        http_problem(req, 500, "out of memory");
        return;
    }
    metrics_sse_clients(1);
    *s = (struct sse){.req = req, .L = L, .last_seq = seq};
    snprintf(s->id, sizeof s->id, "%s", id);
    s->watch = watch_add(L->app->hub, id, base, sse_woken, s);
    s->heartbeat = event_new(base, -1, EV_PERSIST, sse_beat, s);
    struct timeval tv = {L->app->cfg->sse_heartbeat, 0};
    if (!s->watch || !s->heartbeat || event_add(s->heartbeat, &tv)) {
        sse_free(s);
        http_problem(req, 500, "out of memory");
        return;
    }
    http_add_header(req, "Cache-Control", "no-cache");
    http_add_header(req, "X-Accel-Buffering", "no");
    http_stream_start(req, 200, "text/event-stream", sse_hook, s);
    static const char hello[] = ": datasphere event stream\nretry: 2000\n\n";
    if (http_stream_write(req, hello, sizeof hello - 1) == 0)
        sse_pump(s);
}

void jobs_events(struct http_request *req)
{
    struct api_loop *L = api_loop_of(req);
    const char *id;
    int64_t seq;
    if (api_job_id(req, &id) || resume_point(req, &seq))
        return;
    struct store_doc doc = {0};
    int rc = store_get(L->st, id, &doc);
    if (rc)
        api_store_error(req, rc, id);
    else if (job_state_terminal(doc.state) && seq >= doc.event_seq)
        http_send(req, 204, NULL, NULL, 0);
    else if (atomic_load(&L->app->draining))
        http_problem(req, 503, "this instance is shutting down; reconnect to another");
    else
        start_stream(req, id, seq);
    store_doc_clear(&doc);
}
