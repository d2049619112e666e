/* The redis:// backend's side on an HTTP loop: reads pipelined and creates
 * batched on an asynchronous connection, so a loop never blocks on Redis.
 *
 * DESIGN
 * A handle attached to a loop (store_attach()) opens a hiredis connection
 * driven by that loop. Reads (polls, 304 checks) go out as they come: all the
 * reads of requests in flight on the loop leave in one write. Creates are
 * gathered for one pass of the loop and sent as one call of the create
 * script (a flush event, activated by the first create of a pass, runs after
 * the requests already read): Redis then pays its fixed cost per script
 * call once per pass instead of once per job. The jobs' arguments are kept
 * until the reply: if the connection breaks first, they are sent again on
 * the synchronous connection, marked as a resend, so the script looks for
 * any job it already made.
 *
 * Anything the asynchronous connection cannot do (not connected, an error
 * such as LOADING or NOSCRIPT after a Redis restart) is done synchronously,
 * which reconnects and retries like every other call. */
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_redis_conn.h"
#include "util/clock.h"
#include "util/err.h"

/* --- the connection --- */

static void async_gone(const redisAsyncContext *ac, int status)
{
    struct redis_store *s = ac->data;
    (void)status;
    if (s && s->ac == ac)
        s->ac = NULL; /* hiredis frees the context after this callback */
}

static void async_gone_on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK)
        async_gone(ac, status);
}

/* Connects the loop's connection if needed (at most every 500 ms). 0 when
 * there is one to send on. */
static int async_ensure(struct redis_store *s)
{
    if (s->ac)
        return 0;
    int64_t now = clock_mono_ms();
    if (!s->loop || now < s->async_retry_at)
        return -1;
    s->async_retry_at = now + 500;
    redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
    if (!ac || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        return -1;
    }
    ac->data = s;
    redisLibeventAttach(ac, s->loop);
    redisAsyncSetConnectCallback(ac, async_gone_on_connect);
    redisAsyncSetDisconnectCallback(ac, async_gone);
    if (s->db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", s->db);
    s->ac = ac;
    return 0;
}

/* Whether a reply must be had synchronously instead: none (the connection
 * broke), or Redis restarting (LOADING) or without our scripts (NOSCRIPT). */
static bool redo(const redisReply *r)
{
    return !r || redis_loading(r) || redis_noscript(r);
}

/* --- reads --- */

struct async_read {
    struct redis_store *s;
    store_read_fn fn;
    void *arg;
    bool peek;
    char id[JOB_ID_SIZE];
};

static int read_sync(struct async_read *a, struct store_doc *doc)
{
    if (a->s->closing)
        return DS_E_UNAVAILABLE;
    if (a->peek)
        return redis_peek(&a->s->base, a->id, &doc->version, &doc->state);
    return redis_get(&a->s->base, a->id, doc);
}

static void async_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct async_read *a = privdata;
    struct store_doc doc = {.json = ""};
    int rc;
    (void)ac;
    if (redo(reply))
        rc = read_sync(a, &doc);
    else if (a->peek)
        rc = redis_peek_reply(reply, &doc.version, &doc.state);
    else if ((rc = redis_hash_reply(reply)) == 0)
        rc = redis_render_fields(reply, 0, a->id, &doc);
    a->fn(rc, rc ? NULL : &doc, a->arg);
    if (rc == 0 && !a->peek)
        free(doc.json);
    free(a);
}

int redis_get_async(store *st, const char *id, bool peek, store_read_fn fn, void *arg)
{
    struct redis_store *s = R(st);
    struct async_read *a = async_ensure(s) ? NULL : malloc(sizeof *a);
    if (!a)
        return DS_STORE_NO_ASYNC;
    *a = (struct async_read){s, fn, arg, peek, ""};
    snprintf(a->id, sizeof a->id, "%s", id);
    const char *format = peek ? "HMGET ds:{%s}:job v st" : "HGETALL ds:{%s}:job";
    if (redisAsyncCommand(s->ac, async_reply, a, format, id) != REDIS_OK) {
        free(a);
        return DS_STORE_NO_ASYNC;
    }
    return 0;
}

/* --- creates --- */

/* One create waiting for its answer. */
struct async_create {
    store_read_fn fn;
    void *arg;
    struct redis_create_args args;
    struct store_doc doc; /* owned: the new job, rendered before it is sent */
};

/* The creates of one loop pass, sent as one command. */
struct create_batch {
    struct redis_store *s;
    struct async_create **jobs; /* owned, and each of them */
    size_t n;
};

/* The batch's command (redisFreeCommand() it), or NULL. */
static char *batch_command(const struct create_batch *b, bool resend, size_t *len)
{
    struct redis_create_args **args = malloc(b->n * sizeof *args);
    for (size_t i = 0; args && i < b->n; i++)
        args[i] = &b->jobs[i]->args;
    char *cmd = args ? redis_create_command(b->s, args, b->n, resend, len) : NULL;
    free(args);
    return cmd;
}

static void async_create_free(struct async_create *a)
{
    redis_create_args_clear(&a->args);
    store_doc_clear(&a->doc);
    free(a);
}

/* Answers every create of the batch from the reply r, then frees it. */
static void batch_done(struct create_batch *b, const redisReply *r)
{
    int batch_rc = redis_create_batch_rc(r, b->n);
    for (size_t i = 0; i < b->n; i++) {
        struct async_create *a = b->jobs[i];
        struct store_doc existing = {0};
        int rc = batch_rc ? batch_rc : redis_create_outcome(r->element[i], a->args.id, &existing);
        a->fn(rc, rc == 0 ? &a->doc : rc == DS_E_EXISTS ? &existing : NULL, a->arg);
        store_doc_clear(&existing);
        async_create_free(a);
    }
    free(b->jobs);
    free(b);
}

/* The reply to the batch; without one, the batch goes again synchronously,
 * as a resend (any of its jobs may have been made). */
static void batch_replied(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct create_batch *b = privdata;
    redisReply *own = NULL, *r = reply;
    (void)ac;
    if (redo(r) && !b->s->closing) {
        size_t len;
        char *cmd = batch_command(b, true, &len);
        r = own = cmd ? redis_run_formatted(b->s, cmd, len) : NULL;
        redisFreeCommand(cmd);
    }
    batch_done(b, r);
    freeReplyObject(own);
}

/* The flush event: sends the creates gathered during this loop pass. */
static void flush_creates(evutil_socket_t fd, short what, void *arg)
{
    struct redis_store *s = arg;
    struct create_batch *b = calloc(1, sizeof *b);
    (void)fd, (void)what;
    if (!b) {
        for (size_t i = 0; i < s->n_creates; i++) {
            s->creates[i]->fn(DS_E_NOMEM, NULL, s->creates[i]->arg);
            async_create_free(s->creates[i]);
        }
        s->n_creates = 0;
        return;
    }
    *b = (struct create_batch){.s = s, .jobs = s->creates, .n = s->n_creates};
    s->creates = NULL;
    s->n_creates = s->cap_creates = 0;
    size_t len;
    char *cmd = batch_command(b, false, &len);
    int sent = cmd && async_ensure(s) == 0 &&
               redisAsyncFormattedCommand(s->ac, batch_replied, b, cmd, len) == REDIS_OK;
    redisFreeCommand(cmd); /* hiredis copied it */
    if (!sent)
        batch_replied(NULL, NULL, b); /* synchronously */
}

static int gather(struct redis_store *s, struct async_create *a)
{
    if (s->n_creates == s->cap_creates) {
        size_t cap = s->cap_creates ? s->cap_creates * 2 : 16;
        struct async_create **grown = realloc(s->creates, cap * sizeof *grown);
        if (!grown)
            return DS_E_NOMEM;
        s->creates = grown;
        s->cap_creates = cap;
    }
    s->creates[s->n_creates++] = a;
    if (s->n_creates == 1)
        event_active(s->flush, 0, 0);
    return 0;
}

int redis_create_async(store *st, const struct job *job, const struct job_events *ev,
                       const struct store_idem *idem, store_read_fn fn, void *arg)
{
    struct redis_store *s = R(st);
    (void)ev; /* the first event is derived when read */
    struct async_create *a = s->flush && async_ensure(s) == 0 ? calloc(1, sizeof *a) : NULL;
    if (!a)
        return DS_STORE_NO_ASYNC;
    a->fn = fn;
    a->arg = arg;
    if (redis_create_args(&a->args, job, idem) == 0 && store_doc_from_job(&a->doc, job) == 0 &&
        gather(s, a) == 0)
        return 0;
    async_create_free(a);
    return DS_STORE_NO_ASYNC;
}

int redis_attach(store *st, struct event_base *base)
{
    struct redis_store *s = R(st);
    s->loop = base;
    s->flush = event_new(base, -1, 0, flush_creates, s);
    return s->flush ? 0 : DS_E_NOMEM;
}

void redis_async_close(struct redis_store *s)
{
    s->closing = true;
    if (s->flush) {
        event_free(s->flush);
        for (size_t i = 0; i < s->n_creates; i++) {
            s->creates[i]->fn(DS_E_UNAVAILABLE, NULL, s->creates[i]->arg);
            async_create_free(s->creates[i]);
        }
        free(s->creates);
    }
    if (s->ac)
        redisAsyncFree(s->ac); /* replies still due are told UNAVAILABLE */
}
