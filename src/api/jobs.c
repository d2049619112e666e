/* /v1/jobs: create, read (with ETag and long-poll), cancel, delete, list.
 *
 * DESIGN
 * A read is one store_get() of the pre-rendered job and one write: no JSON
 * is parsed or built on the poll path. A long-poll (?wait=N with
 * If-None-Match) registers a watch before it reads, so a change between the
 * read and the park cannot be missed; the watch hub then wakes it on this
 * loop's thread, and it answers once `version` differs (or 304 after N s). */
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "util/clock.h"
#include "util/err.h"
#include "watch/hub.h"
#include "worker/worker.h"

#define IDEM_TTL_MS (24LL * 3600 * 1000)

static void send_doc(struct http_request *req, int status, const struct store_doc *doc)
{
    http_add_header(req, "ETag", "\"v%lld\"", (long long)doc->version);
    http_add_header(req, "Cache-Control", "no-cache");
    if (!job_state_terminal(doc->state))
        http_add_header(req, "Retry-After", "1");
    http_send(req, status, "application/json", doc->json, strlen(doc->json));
}

/* --- create --- */

static int is_json(const char *ctype)
{
    if (!ctype)
        return 0;
    while (*ctype == ' ')
        ctype++;
    size_t n = strlen("application/json");
    return !strncasecmp(ctype, "application/json", n) &&
           (ctype[n] == '\0' || ctype[n] == ';' || ctype[n] == ' ');
}

/* Parses and checks the body; answers the error itself and returns NULL. */
static json_t *parse_create(struct http_request *req)
{
    size_t len;
    const char *body = http_req_body(req, &len);
    json_error_t err;
    json_t *root = json_loadb(body, len, 0, &err);
    if (!root) {
        http_problem(req, 400, "the body is not valid JSON: %s (line %d, column %d)", err.text,
                     err.line, err.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        http_problem(req, 400, "the body must be a JSON object");
        json_decref(root);
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "type") && strcmp(key, "input") && strcmp(key, "ttl_seconds") &&
            strcmp(key, "max_attempts")) {
            http_problem(req, 400,
                         "unknown field '%s' (fields: type, input, ttl_seconds, "
                         "max_attempts)",
                         key);
            json_decref(root);
            return NULL;
        }
    }
    return root;
}

/* Reads an optional integer field in [lo, hi]; answers 400 and returns -1. */
static int opt_int(struct http_request *req, json_t *root, const char *key, long lo, long hi,
                   long *out)
{
    json_t *v = json_object_get(root, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        http_problem(req, 400, "%s must be an integer from %ld to %ld", key, lo, hi);
        return -1;
    }
    *out = (long)json_integer_value(v);
    return 0;
}

static const struct job_type *check_type(struct http_request *req, json_t *root, json_t **input)
{
    json_t *type = json_object_get(root, "type");
    if (!json_is_string(type)) {
        http_problem(req, 400, "type is %s; it must be a string naming a job type (%s)",
                     type ? "not a string" : "missing", job_type_names());
        return NULL;
    }
    const struct job_type *t = job_type_find(json_string_value(type));
    if (!t) {
        http_problem(req, 422, "unknown job type '%.64s' (known: %s)", json_string_value(type),
                     job_type_names());
        return NULL;
    }
    *input = json_object_get(root, "input");
    if (!json_is_object(*input)) {
        http_problem(req, 400, "input is %s; it must be a JSON object",
                     *input ? "not an object" : "missing");
        return NULL;
    }
    char why[300];
    if (t->validate(*input, why, sizeof why)) {
        http_problem(req, 422, "%s", why);
        return NULL;
    }
    return t;
}

/* The Idempotency-Key header: absent, or 1-255 visible ASCII characters. */
static int check_idem_key(struct http_request *req, const char **key)
{
    *key = http_req_header(req, "Idempotency-Key");
    if (!*key)
        return 0;
    size_t n = strlen(*key);
    int ok = n > 0 && n <= 255;
    for (size_t i = 0; ok && i < n; i++)
        ok = (*key)[i] > 32 && (*key)[i] < 127;
    if (!ok)
        http_problem(req, 400, "Idempotency-Key must be 1 to 255 visible ASCII characters");
    return ok ? 0 : -1;
}

static void body_hash(json_t *root, char hex[65])
{
    char *canon = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)(canon ? canon : ""),
                       canon ? strlen(canon) : 0);
    sodium_bin2hex(hex, 65, digest, sizeof digest);
    free(canon);
}

/* Answers a create from the store's outcome; doc is the new job (rc 0) or
 * the one an idempotent replay names (DS_E_EXISTS). */
static void answer_create(struct http_request *req, int rc, const struct store_doc *doc,
                          const char *id, const char *idem_key)
{
    if (rc == 0) {
        watch_hub_kick(api_loop_of(req)->app->hub);
        http_add_header(req, "Location", "/v1/jobs/%s", id);
        send_doc(req, 202, doc);
    } else if (rc == DS_E_EXISTS) {
        /* job_render() writes "id" first: {"id":"job_..." */
        http_add_header(req, "Location", "/v1/jobs/%.*s", JOB_ID_LEN, doc->json + 7);
        send_doc(req, 200, doc);
    } else if (rc == DS_E_IDEM_MISMATCH) {
        http_problem(req, 422, "Idempotency-Key '%s' was already used with a different body",
                     idem_key);
    } else {
        api_store_error(req, rc, id);
    }
}

/* A create in flight on the loop's store connection. */
struct pending_create {
    struct http_request *req; /* NULL once the client went away */
    char id[JOB_ID_SIZE];
    char idem_key[256];
};

static void create_hook(struct http_request *req, enum http_hook_event ev, void *arg)
{
    struct pending_create *pc = arg;
    (void)req;
    if (ev == HTTP_HOOK_ABORT)
        pc->req = NULL; /* the store's callback frees pc */
}

static void created(int rc, const struct store_doc *doc, void *arg)
{
    struct pending_create *pc = arg;
    if (pc->req)
        answer_create(pc->req, rc, doc, pc->id, pc->idem_key);
    free(pc);
}

/* Sends the create on the loop's store connection; 0 if it did (the
 * request is parked until the answer). */
static int create_async(struct http_request *req, const struct job *job,
                        const struct job_events *ev, const struct store_idem *idem)
{
    struct pending_create *pc = malloc(sizeof *pc);
    if (!pc)
        return -1;
    *pc = (struct pending_create){.req = req};
    snprintf(pc->id, sizeof pc->id, "%s", job->id);
    snprintf(pc->idem_key, sizeof pc->idem_key, "%s", idem->key ? idem->key : "");
    if (store_create_async(api_loop_of(req)->st, job, ev, idem, created, pc) != 0) {
        free(pc);
        return -1;
    }
    http_park(req, create_hook, pc);
    return 0;
}

static void store_new_job(struct http_request *req, json_t *root, const struct job_type *t,
                          json_t *input, long ttl, long max_attempts, const char *idem_key)
{
    struct api_loop *L = api_loop_of(req);
    int64_t now_us = clock_now_us(), now = now_us / 1000;
    char id[JOB_ID_SIZE], hash[65] = "";
    job_id_new(L->app->id_key, now_us, id);
    if (idem_key)
        body_hash(root, hash);
    struct job job;
    struct job_events ev = {0};
    struct store_doc doc = {0};
    struct store_idem idem = {idem_key, hash, now + IDEM_TTL_MS};
    int rc = job_init(&job, id, t->name, input, ttl, (int)max_attempts, now, &ev);
    if (rc) {
        api_store_error(req, rc, id);
    } else if (create_async(req, &job, &ev, &idem) != 0) {
        rc = store_create(L->st, &job, &ev, &idem, &doc);
        answer_create(req, rc, &doc, id, idem_key);
    }
    store_doc_clear(&doc);
    job_events_clear(&ev);
    job_clear(&job);
}

void jobs_create(struct http_request *req)
{
    struct api_loop *L = api_loop_of(req);
    if (!is_json(http_req_header(req, "Content-Type"))) {
        http_problem(req, 415, "the body must be sent with Content-Type: application/json");
        return;
    }
    const char *idem_key;
    if (check_idem_key(req, &idem_key))
        return;
    json_t *root = parse_create(req), *input = NULL;
    const struct job_type *t = root ? check_type(req, root, &input) : NULL;
    long ttl = L->app->cfg->job_ttl, attempts = L->app->cfg->max_attempts;
    if (t && !opt_int(req, root, "ttl_seconds", 1, 30 * 86400, &ttl) &&
        !opt_int(req, root, "max_attempts", 1, 100, &attempts))
        store_new_job(req, root, t, input, ttl, attempts, idem_key);
    json_decref(root);
}

/* --- read, with long-poll --- */

struct poll_wait {
    struct http_request *req;
    struct api_loop *L;
    struct watch *watch;
    struct event *timer;
    char id[JOB_ID_SIZE];
    int64_t known;
};

/* If-None-Match: "v7" (or W/"v7") -> 7; anything else -> -1. */
static int64_t known_version(struct http_request *req)
{
    const char *inm = http_req_header(req, "If-None-Match");
    long long v;
    char close;
    if (!inm)
        return -1;
    if (!strncmp(inm, "W/", 2))
        inm += 2;
    if (sscanf(inm, "\"v%lld%c", &v, &close) != 2 || close != '"' || v < 0)
        return -1;
    return v;
}

static void poll_free(struct poll_wait *pw)
{
    watch_remove(pw->L->app->hub, pw->watch);
    event_free(pw->timer);
    free(pw);
}

/* Answers with the current job: 200 if changed, else 304 (or keeps waiting). */
static void poll_answer(struct poll_wait *pw, int must_answer)
{
    struct store_doc doc = {0};
    int rc = store_get(pw->L->st, pw->id, &doc);
    if (rc == 0 && doc.version == pw->known && !must_answer) {
        store_doc_clear(&doc);
        return;
    }
    struct http_request *req = pw->req;
    char id[JOB_ID_SIZE];
    memcpy(id, pw->id, sizeof id);
    int64_t known = pw->known;
    poll_free(pw);
    if (rc)
        api_store_error(req, rc, id);
    else
        send_doc(req, doc.version == known ? 304 : 200, &doc);
    store_doc_clear(&doc);
}

static void poll_woken(void *arg)
{
    poll_answer(arg, 0);
}

static void poll_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    poll_answer(arg, 1);
}

static void poll_hook(struct http_request *req, enum http_hook_event ev, void *arg)
{
    (void)req;
    if (ev == HTTP_HOOK_ABORT)
        poll_free(arg);
    else
        poll_answer(arg, 1);
}

static void park(struct http_request *req, const char *id, int64_t known, int wait_s)
{
    struct api_loop *L = api_loop_of(req);
    struct event_base *base = http_loop_base(http_req_loop(req));
    struct poll_wait *pw = calloc(1, sizeof *pw);
    if (!pw) {
        http_problem(req, 500, "out of memory");
        return;
    }
    *pw = (struct poll_wait){.req = req, .L = L, .known = known};
    snprintf(pw->id, sizeof pw->id, "%s", id);
    pw->watch = watch_add(L->app->hub, id, base, poll_woken, pw);
    pw->timer = evtimer_new(base, poll_timeout, pw);
    struct timeval tv = {wait_s, 0};
    if (!pw->watch || !pw->timer || evtimer_add(pw->timer, &tv)) {
        poll_free(pw);
        http_problem(req, 500, "out of memory");
        return;
    }
    http_park(req, poll_hook, pw);
    poll_answer(pw, 0); /* the watch is in place: now a change cannot slip by */
}

static int wait_param(struct http_request *req, int *wait_s)
{
    char buf[16];
    int found = http_req_param(req, "wait", buf, sizeof buf);
    char *end;
    long v = found == 1 ? strtol(buf, &end, 10) : 0;
    if (found == -1 || (found == 1 && (!*buf || *end || v < 0 || v > 60))) {
        http_problem(req, 400, "wait must be an integer number of seconds from 0 to 60");
        return -1;
    }
    *wait_s = (int)v;
    return 0;
}

/* --- read, pipelined on the loop where the store reads asynchronously --- */

struct async_get {
    struct http_request *req; /* NULL once the client went away */
    int64_t known;            /* If-None-Match version, or -1 */
    char id[JOB_ID_SIZE];
};

static void async_hook(struct http_request *req, enum http_hook_event ev, void *arg)
{
    struct async_get *g = arg;
    (void)req;
    if (ev == HTTP_HOOK_ABORT)
        g->req = NULL; /* the read's callback frees g */
    /* DRAIN: the answer is already on its way */
}

static void async_got(int rc, const struct store_doc *doc, void *arg);

static void async_revalidated(int rc, const struct store_doc *doc, void *arg)
{
    struct async_get *g = arg;
    if (g->req && rc == 0 && doc->version != g->known) { /* changed: now the body */
        struct api_loop *L = api_loop_of(g->req);
        if (store_get_async(L->st, g->id, false, async_got, g) == 0)
            return;
        struct store_doc full = {0};
        rc = store_get(L->st, g->id, &full);
        async_got(rc, &full, g);
        store_doc_clear(&full);
        return;
    }
    async_got(rc, doc, g);
}

static void async_got(int rc, const struct store_doc *doc, void *arg)
{
    struct async_get *g = arg;
    if (g->req && rc)
        api_store_error(g->req, rc, g->id);
    else if (g->req)
        send_doc(g->req, doc->version == g->known ? 304 : 200, doc);
    free(g);
}

/* Starts an asynchronous read; returns 0 if it did (the request is parked). */
static int read_async(struct http_request *req, const char *id, int64_t known)
{
    struct api_loop *L = api_loop_of(req);
    struct async_get *g = malloc(sizeof *g);
    if (!g)
        return -1;
    *g = (struct async_get){.req = req, .known = known};
    snprintf(g->id, sizeof g->id, "%s", id);
    store_read_fn fn = known >= 0 ? async_revalidated : async_got;
    if (store_get_async(L->st, id, known >= 0, fn, g) != 0) {
        free(g);
        return -1;
    }
    http_park(req, async_hook, g);
    return 0;
}

/* Revalidation: answers 304 from the version alone when it still matches.
 * Returns 1 when it answered. */
static int not_modified(struct http_request *req, const char *id, int64_t known)
{
    int64_t version;
    enum job_state state;
    if (store_peek(api_loop_of(req)->st, id, &version, &state) || version != known)
        return 0; /* changed, gone or failing: the full read answers */
    struct store_doc doc = {.json = "", .version = version, .state = state};
    send_doc(req, 304, &doc);
    return 1;
}

void jobs_get(struct http_request *req)
{
    struct api_loop *L = api_loop_of(req);
    const char *id;
    int wait_s;
    if (api_job_id(req, &id) || wait_param(req, &wait_s))
        return;
    int64_t known = known_version(req);
    if (wait_s > 0 && known >= 0 && !atomic_load(&L->app->draining)) {
        park(req, id, known, wait_s);
        return;
    }
    if (read_async(req, id, known) == 0)
        return;
    if (known >= 0 && not_modified(req, id, known))
        return;
    struct store_doc doc = {0};
    int rc = store_get(L->st, id, &doc);
    if (rc)
        api_store_error(req, rc, id);
    else
        send_doc(req, doc.version == known ? 304 : 200, &doc);
    store_doc_clear(&doc);
}

/* --- cancel, delete --- */

void jobs_cancel(struct http_request *req)
{
    struct api_loop *L = api_loop_of(req);
    const char *id;
    if (api_job_id(req, &id))
        return;
    struct job_op op = {.kind = JOB_OP_CANCEL};
    struct store_doc doc = {0};
    int rc = store_apply(L->st, id, &op, clock_now_ms(), &doc);
    if (rc == 0) {
        watch_hub_kick(L->app->hub);
        send_doc(req, 202, &doc);
    } else if (rc == DS_E_CONFLICT) {
        http_problem(req, 409, "job %s has already finished; there is nothing to cancel", id);
    } else {
        api_store_error(req, rc, id);
    }
    store_doc_clear(&doc);
}

void jobs_delete(struct http_request *req)
{
    struct api_loop *L = api_loop_of(req);
    const char *id;
    if (api_job_id(req, &id))
        return;
    int rc = store_remove(L->st, id);
    if (rc == 0)
        http_send(req, 204, NULL, NULL, 0);
    else if (rc == DS_E_CONFLICT)
        http_problem(req, 409, "job %s has not finished; cancel it first", id);
    else
        api_store_error(req, rc, id);
}

/* --- list --- */

static int list_filter(struct http_request *req, struct store_filter *f, char *type, char *cursor)
{
    struct api_loop *L = api_loop_of(req);
    char status[16], limit[16];
    int s = http_req_param(req, "status", status, sizeof status);
    int t = http_req_param(req, "type", type, JOB_TYPE_MAX);
    int c = http_req_param(req, "cursor", cursor, JOB_ID_SIZE);
    int l = http_req_param(req, "limit", limit, sizeof limit);
    char *end;
    f->limit = l == 1 ? (int)strtol(limit, &end, 10) : 20;
    if (s == -1 || (s == 1 && job_state_parse(status, &f->state))) {
        http_problem(req, 400,
                     "status must be one of queued, running, succeeded, failed, "
                     "cancelled");
        return -1;
    }
    if (l == -1 || (l == 1 && (!*limit || *end || f->limit < 1 || f->limit > 100))) {
        http_problem(req, 400, "limit must be an integer from 1 to 100");
        return -1;
    }
    if (t == -1) {
        http_problem(req, 400, "type is too long");
        return -1;
    }
    if (c == -1 || (c == 1 && job_id_check(L->app->id_key, cursor, NULL) != JOB_ID_VALID)) {
        http_problem(req, 400, "cursor is not a next_cursor this server gave out");
        return -1;
    }
    f->has_state = s == 1;
    f->type = t == 1 ? type : NULL;
    f->cursor = c == 1 ? cursor : NULL;
    return 0;
}

void jobs_list(struct http_request *req)
{
    struct api_loop *L = api_loop_of(req);
    struct store_filter f = {0};
    struct store_list list = {0};
    char type[JOB_TYPE_MAX], cursor[JOB_ID_SIZE];
    if (list_filter(req, &f, type, cursor))
        return;
    int rc = store_list(L->st, &f, &list);
    if (rc) {
        api_store_error(req, rc, "");
        return;
    }
    struct evbuffer *out = evbuffer_new();
    evbuffer_add_printf(out, "{\"jobs\":[");
    for (size_t i = 0; i < list.n; i++)
        evbuffer_add_printf(out, "%s%s", i ? "," : "", list.docs[i]);
    if (*list.next_cursor)
        evbuffer_add_printf(out, "],\"next_cursor\":\"%s\"}", list.next_cursor);
    else
        evbuffer_add_printf(out, "],\"next_cursor\":null}");
    size_t len = evbuffer_get_length(out);
    http_send(req, 200, "application/json", (const char *)evbuffer_pullup(out, -1), len);
    evbuffer_free(out);
    store_list_clear(&list);
}
