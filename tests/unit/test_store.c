/* The store contract: the same cases run against every backend. A backend
 * is correct when it passes all of them; the Redis backend must too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"

struct fixture {
    const char *backend; /* "memory" or "sqlite" */
    char uri[256];
    char dir[64];
    store *st;
    uint8_t key[JOB_ID_KEY_LEN];
    int64_t now;
};

static int redis_port;

/* Empties the test Redis between cases. */
static void redis_flush(void)
{
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    freeReplyObject(redisCommand(c, "FLUSHALL"));
    redisFree(c);
}

static int setup(void **state)
{
    struct fixture *f = *state;
    if (!strcmp(f->backend, "redis")) {
        redis_flush();
        snprintf(f->uri, sizeof f->uri, "redis://127.0.0.1:%d", redis_port);
    } else if (!strcmp(f->backend, "sqlite")) {
        strcpy(f->dir, "/tmp/ds-store-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->uri, sizeof f->uri, "sqlite:%s/jobs.db", f->dir);
    } else {
        strcpy(f->uri, "memory:");
    }
    assert_int_equal(store_open(f->uri, &f->st, NULL), 0);
    assert_int_equal(store_id_key(f->st, f->key), 0);
    f->now = clock_now_ms(); /* real time: Redis expires keys by its own clock */
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->st);
    if (f->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
        assert_int_equal(system(cmd), 0);
    }
    return 0;
}

/* Creates a sleep job; returns its id in id. */
static void create(struct fixture *f, char id[JOB_ID_SIZE], int max_attempts)
{
    json_t *input = json_pack("{s:i, s:i}", "steps", 1, "step_ms", 0);
    struct job job;
    struct job_events ev = {0};
    struct store_doc doc = {0};
    job_id_new(f->key, ++f->now, id);
    assert_int_equal(job_init(&job, id, "sleep", input, 60, max_attempts, f->now, &ev), 0);
    assert_int_equal(store_create(f->st, &job, &ev, NULL, &doc), 0);
    assert_int_equal(doc.version, 1);
    assert_non_null(strstr(doc.json, id));
    store_doc_clear(&doc);
    job_events_clear(&ev);
    job_clear(&job);
    json_decref(input);
}

static int64_t claim(struct fixture *f, uint64_t token, int64_t lease_ms, char id[JOB_ID_SIZE])
{
    struct job job;
    struct job_op op = {.kind = JOB_OP_CLAIM, .token = token, .lease_ms = lease_ms};
    int rc = store_claim(f->st, &op, f->now, &job);
    if (rc)
        return rc;
    snprintf(id, JOB_ID_SIZE, "%s", job.id);
    assert_int_equal(job.lease_token, token);
    assert_non_null(job.input);
    job_clear(&job);
    return 0;
}

static int op(struct fixture *f, const char *id, enum job_op_kind kind, uint64_t token)
{
    json_t *payload = json_pack("{s:s, s:i, s:s}", "stage", "s", "percent", 1, "message", "m");
    struct job_op o = {.kind = kind,
                       .token = token,
                       .lease_ms = 1000,
                       .payload = payload,
                       .code = "boom",
                       .message = "it broke"};
    int rc = store_apply(f->st, id, &o, f->now, NULL);
    json_decref(payload);
    return rc;
}

static enum job_state state_of(struct fixture *f, const char *id, int64_t *version)
{
    struct store_doc doc = {0};
    assert_int_equal(store_get(f->st, id, &doc), 0);
    if (version)
        *version = doc.version;
    store_doc_clear(&doc);
    return doc.state;
}

static void create_and_get(void **state)
{
    struct fixture *f = *state;
    char id[JOB_ID_SIZE];
    create(f, id, 3);
    int64_t v;
    assert_int_equal(state_of(f, id, &v), JOB_QUEUED);
    assert_int_equal(v, 1);
    enum job_state st;
    v = 0;
    assert_int_equal(store_peek(f->st, id, &v, &st), 0);
    assert_int_equal(v, 1);
    assert_int_equal(st, JOB_QUEUED);
    struct store_doc doc = {0};
    char other[JOB_ID_SIZE];
    job_id_new(f->key, f->now, other);
    assert_int_equal(store_get(f->st, other, &doc), DS_E_NOTFOUND);
    assert_int_equal(store_peek(f->st, other, &v, &st), DS_E_NOTFOUND);
}

static void idempotency_key(void **state)
{
    struct fixture *f = *state;
    json_t *input = json_object();
    struct job job;
    struct job_events ev = {0};
    struct store_doc doc = {0};
    char id[JOB_ID_SIZE], id2[JOB_ID_SIZE];
    struct store_idem idem = {"k1", "hash-a", f->now + 1000};
    job_id_new(f->key, f->now, id);
    job_init(&job, id, "sleep", input, 60, 1, f->now, &ev);
    assert_int_equal(store_create(f->st, &job, &ev, &idem, &doc), 0);
    store_doc_clear(&doc);
    job_clear(&job);
    job_events_clear(&ev);
    job_id_new(f->key, f->now, id2);
    job_init(&job, id2, "sleep", input, 60, 1, f->now, &ev);
    assert_int_equal(store_create(f->st, &job, &ev, &idem, &doc), DS_E_EXISTS);
    assert_non_null(strstr(doc.json, id)); /* the first job, not a new one */
    store_doc_clear(&doc);
    idem.body_hash = "hash-b";
    assert_int_equal(store_create(f->st, &job, &ev, &idem, &doc), DS_E_IDEM_MISMATCH);
    job_clear(&job);
    job_events_clear(&ev);
    json_decref(input);
}

static void claim_is_fifo_and_exclusive(void **state)
{
    struct fixture *f = *state;
    char a[JOB_ID_SIZE], b[JOB_ID_SIZE], got[JOB_ID_SIZE];
    create(f, a, 3);
    create(f, b, 3);
    assert_int_equal(claim(f, 11, 1000, got), 0);
    assert_string_equal(got, a);
    assert_int_equal(claim(f, 12, 1000, got), 0);
    assert_string_equal(got, b);
    assert_int_equal(claim(f, 13, 1000, got), DS_E_EMPTY);
    assert_int_equal(state_of(f, a, NULL), JOB_RUNNING);
}

static void writes_are_fenced(void **state)
{
    struct fixture *f = *state;
    char id[JOB_ID_SIZE], got[JOB_ID_SIZE];
    int64_t v1, v2;
    create(f, id, 3);
    assert_int_equal(claim(f, 21, 1000, got), 0);
    state_of(f, id, &v1);
    assert_int_equal(op(f, id, JOB_OP_PROGRESS, 99), DS_E_LEASE_LOST);
    assert_int_equal(op(f, id, JOB_OP_PROGRESS, 21), 0);
    state_of(f, id, &v2);
    assert_int_equal(v2, v1 + 1);
    assert_int_equal(op(f, id, JOB_OP_SUCCEED, 99), DS_E_LEASE_LOST);
    assert_int_equal(op(f, id, JOB_OP_SUCCEED, 21), 0);
    assert_int_equal(state_of(f, id, NULL), JOB_SUCCEEDED);
    assert_int_equal(op(f, id, JOB_OP_SUCCEED, 21), DS_E_LEASE_LOST);
}

static void expired_lease_is_taken_over(void **state)
{
    struct fixture *f = *state;
    char id[JOB_ID_SIZE], got[JOB_ID_SIZE];
    int requeued, failed;
    create(f, id, 2);
    assert_int_equal(claim(f, 31, 1000, got), 0);
    assert_int_equal(store_requeue_expired(f->st, f->now + 999, 0, &requeued, &failed), 0);
    assert_int_equal(requeued + failed, 0);
    f->now += 1000;
    assert_int_equal(store_requeue_expired(f->st, f->now, 0, &requeued, &failed), 0);
    assert_int_equal(requeued, 1);
    assert_int_equal(state_of(f, id, NULL), JOB_QUEUED);
    assert_int_equal(claim(f, 32, 1000, got), 0);
    /* The first worker comes back: its writes are refused. */
    assert_int_equal(op(f, id, JOB_OP_PROGRESS, 31), DS_E_LEASE_LOST);
    assert_int_equal(op(f, id, JOB_OP_SUCCEED, 31), DS_E_LEASE_LOST);
    f->now += 1000;
    assert_int_equal(store_requeue_expired(f->st, f->now, 0, &requeued, &failed), 0);
    assert_int_equal(failed, 1); /* max_attempts 2 reached */
    struct job job;
    assert_int_equal(store_load(f->st, id, &job), 0);
    assert_int_equal(job.state, JOB_FAILED);
    assert_string_equal(json_string_value(json_object_get(job.error, "code")), "worker_lost");
    job_clear(&job);
}

static void cancel_and_remove(void **state)
{
    struct fixture *f = *state;
    char id[JOB_ID_SIZE], got[JOB_ID_SIZE];
    create(f, id, 3);
    assert_int_equal(store_remove(f->st, id), DS_E_CONFLICT);
    assert_int_equal(claim(f, 41, 1000, got), 0);
    assert_int_equal(op(f, id, JOB_OP_CANCEL, 0), 0);
    assert_int_equal(op(f, id, JOB_OP_PROGRESS, 41), DS_E_CANCELLED);
    assert_int_equal(op(f, id, JOB_OP_FAIL, 41), 0);
    assert_int_equal(state_of(f, id, NULL), JOB_FAILED);
    assert_int_equal(op(f, id, JOB_OP_CANCEL, 0), DS_E_CONFLICT);
    assert_int_equal(store_remove(f->st, id), 0);
    struct store_doc doc = {0};
    assert_int_equal(store_get(f->st, id, &doc), DS_E_NOTFOUND);
    assert_int_equal(store_remove(f->st, id), DS_E_NOTFOUND);
}

/* Seqs are consecutive from first_kept; returns the number of events. */
static size_t check_consecutive(const struct job_events *ev, int64_t first_kept)
{
    for (size_t i = 0; i < ev->n; i++)
        assert_int_equal(ev->v[i].seq, first_kept + (int64_t)i);
    return ev->n;
}

/* A store keeps every event of an unfinished job (up to JOB_EVENTS_KEPT)
 * and at least the terminal event of a finished one; a reader older than
 * what is kept is answered with a snapshot by the API. */
static void events_in_order(void **state)
{
    struct fixture *f = *state;
    char id[JOB_ID_SIZE], got[JOB_ID_SIZE], first_data[200];
    create(f, id, 3);
    /* Before any claim: the one event every job starts with, to the byte. */
    struct job_events ev0 = {0};
    int64_t first0 = -1;
    assert_int_equal(store_events(f->st, id, 0, &ev0, &first0), 0);
    assert_int_equal(first0, 1);
    assert_int_equal(ev0.n, 1);
    assert_int_equal(ev0.v[0].seq, 1);
    assert_string_equal(ev0.v[0].name, "status");
    snprintf(first_data, sizeof first_data,
             "{\"job_id\":\"%s\",\"version\":1,\"status\":\"queued\",\"attempts\":1}", id);
    assert_string_equal(ev0.v[0].data, first_data);
    job_events_clear(&ev0);
    assert_int_equal(claim(f, 51, 1000, got), 0);
    assert_int_equal(store_events(f->st, id, 1, &ev0, &first0), 0); /* just the claim's */
    assert_int_equal(ev0.n, 1);
    assert_int_equal(ev0.v[0].seq, 2);
    job_events_clear(&ev0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(op(f, id, JOB_OP_PROGRESS, 51), 0);
    struct job_events ev = {0};
    int64_t first = -1;
    assert_int_equal(store_events(f->st, id, 0, &ev, &first), 0);
    assert_int_equal(first, 1);
    assert_int_equal(check_consecutive(&ev, 1), 5); /* queued, running, 3 progress */
    assert_string_equal(ev.v[1].name, "status");
    snprintf(first_data, sizeof first_data,
             "{\"job_id\":\"%s\",\"version\":2,\"status\":\"running\",\"attempts\":1}", id);
    assert_string_equal(ev.v[1].data, first_data);
    assert_string_equal(ev.v[4].name, "progress");
    job_events_clear(&ev);
    assert_int_equal(store_events(f->st, id, 3, &ev, &first), 0);
    assert_int_equal(ev.n, 2);
    assert_int_equal(ev.v[0].seq, 4);
    job_events_clear(&ev);
    assert_int_equal(op(f, id, JOB_OP_SUCCEED, 51), 0);
    assert_int_equal(store_events(f->st, id, 0, &ev, &first), 0);
    assert_true(first >= 1 && first <= 6);
    assert_int_equal(check_consecutive(&ev, first), (size_t)(7 - first));
    assert_string_equal(ev.v[ev.n - 1].name, "result");
    assert_non_null(strstr(ev.v[ev.n - 1].data, "\"status\":\"succeeded\""));
    job_events_clear(&ev);
}

static void list_pages_newest_first(void **state)
{
    struct fixture *f = *state;
    char ids[5][JOB_ID_SIZE], got[JOB_ID_SIZE];
    for (int i = 0; i < 5; i++)
        create(f, ids[i], 3);
    assert_int_equal(claim(f, 61, 1000, got), 0); /* ids[0] runs */
    struct store_filter filter = {.limit = 2};
    struct store_list page = {0};
    assert_int_equal(store_list(f->st, &filter, &page), 0);
    assert_int_equal(page.n, 2);
    assert_non_null(strstr(page.docs[0], ids[4]));
    assert_non_null(strstr(page.docs[1], ids[3]));
    assert_string_equal(page.next_cursor, ids[3]);
    char cursor[JOB_ID_SIZE];
    strcpy(cursor, page.next_cursor);
    store_list_clear(&page);
    filter.cursor = cursor;
    filter.limit = 10;
    assert_int_equal(store_list(f->st, &filter, &page), 0);
    assert_int_equal(page.n, 3);
    assert_string_equal(page.next_cursor, "");
    store_list_clear(&page);
    struct store_filter running = {.limit = 10, .has_state = true, .state = JOB_RUNNING};
    assert_int_equal(store_list(f->st, &running, &page), 0);
    assert_int_equal(page.n, 1);
    assert_non_null(strstr(page.docs[0], ids[0]));
    store_list_clear(&page);
    int64_t counts[JOB_N_STATES];
    assert_int_equal(store_counts(f->st, counts), 0);
    assert_int_equal(counts[JOB_QUEUED], 4);
    assert_int_equal(counts[JOB_RUNNING], 1);
    /* Running jobs page like the rest: newest first, by cursor. */
    assert_int_equal(claim(f, 62, 1000, got), 0); /* ids[1] */
    assert_int_equal(claim(f, 63, 1000, got), 0); /* ids[2] */
    running.limit = 2;
    assert_int_equal(store_list(f->st, &running, &page), 0);
    assert_int_equal(page.n, 2);
    assert_non_null(strstr(page.docs[0], ids[2]));
    assert_non_null(strstr(page.docs[1], ids[1]));
    assert_string_equal(page.next_cursor, ids[1]);
    strcpy(cursor, page.next_cursor);
    store_list_clear(&page);
    running.cursor = cursor;
    assert_int_equal(store_list(f->st, &running, &page), 0);
    assert_int_equal(page.n, 1);
    assert_non_null(strstr(page.docs[0], ids[0]));
    assert_string_equal(page.next_cursor, "");
    store_list_clear(&page);
    assert_int_equal(store_counts(f->st, counts), 0);
    assert_int_equal(counts[JOB_QUEUED], 2);
    assert_int_equal(counts[JOB_RUNNING], 3);
}

struct seen {
    pthread_mutex_t mu;
    int n;
    char last[JOB_ID_SIZE];
    store *listener;
};

static void on_change(const char *job_id, const char *name, void *arg)
{
    struct seen *s = arg;
    (void)name;
    if (!strcmp(job_id, "*"))
        return; /* "look at everything": sent when a subscription (re)starts */
    pthread_mutex_lock(&s->mu);
    s->n++;
    snprintf(s->last, sizeof s->last, "%s", job_id);
    pthread_mutex_unlock(&s->mu);
}

static void *listen_main(void *arg)
{
    struct seen *s = arg;
    store_listen(s->listener, on_change, s);
    return NULL;
}

/* For a backend that pushes changes: every change by another handle to a
 * job arrives (a create need not: nothing waits on a job before its id is
 * known). */
static void pushed_changes(struct fixture *f)
{
    struct seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pthread_t t;
    char id[JOB_ID_SIZE];
    create(f, id, 3);
    assert_int_equal(store_open(f->uri, &seen.listener, NULL), 0);
    assert_int_equal(pthread_create(&t, NULL, listen_main, &seen), 0);
    usleep(100000); /* let it subscribe */
    assert_int_equal(op(f, id, JOB_OP_CANCEL, 0), 0);
    for (int i = 0; i < 200 && !seen.n; i++)
        usleep(5000);
    store_unlisten(seen.listener);
    pthread_join(t, NULL);
    store_close(seen.listener);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.last, id);
}

static void changes_feed_sees_other_handles(void **state)
{
    struct fixture *f = *state;
    if (f->st->ops->listen) {
        pushed_changes(f);
        return;
    }
    store *watcher;
    assert_int_equal(store_open(f->uri, &watcher, NULL), 0);
    int64_t cursor = -1;
    struct seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(store_changes(watcher, &cursor, on_change, &seen), 0);
    assert_int_equal(seen.n, 0);
    char id[JOB_ID_SIZE];
    create(f, id, 3);
    assert_int_equal(store_changes(watcher, &cursor, on_change, &seen), 0);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.last, id);
    assert_int_equal(store_changes(watcher, &cursor, on_change, &seen), 0);
    assert_int_equal(seen.n, 1); /* nothing new */
    /* The id key is one for the deployment, whichever handle asks. */
    uint8_t key[JOB_ID_KEY_LEN];
    assert_int_equal(store_id_key(watcher, key), 0);
    assert_memory_equal(key, f->key, JOB_ID_KEY_LEN);
    store_close(watcher);
}

static void finished_jobs_expire(void **state)
{
    struct fixture *f = *state;
    char id[JOB_ID_SIZE], got[JOB_ID_SIZE];
    int removed;
    create(f, id, 3); /* ttl 60 s */
    assert_int_equal(claim(f, 71, 1000, got), 0);
    assert_int_equal(op(f, id, JOB_OP_SUCCEED, 71), 0);
    assert_int_equal(store_expire(f->st, f->now + 59000, &removed), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(store_expire(f->st, f->now + 60000, &removed), 0);
    assert_int_equal(removed, 1);
    struct store_doc doc = {0};
    assert_int_equal(store_get(f->st, id, &doc), DS_E_NOTFOUND);
    struct job_events ev = {0};
    int64_t first;
    store_events(f->st, id, 0, &ev, &first);
    assert_int_equal(ev.n, 0);
}

/* Where the store settles in batches: last writes and claims in one call,
 * each write fenced on its own, never more claims than tokens. */
static void settle_writes_and_claims(void **state)
{
    struct fixture *f = *state;
    if (!store_can_settle(f->st))
        skip();
    char a[JOB_ID_SIZE], b[JOB_ID_SIZE], got[JOB_ID_SIZE];
    create(f, a, 3);
    create(f, b, 3);
    assert_int_equal(claim(f, 11, 1000, got), 0);
    assert_string_equal(got, a);
    assert_int_equal(claim(f, 12, 1000, got), 0);
    for (int i = 0; i < 3; i++)
        create(f, got, 3);
    json_t *result = json_pack("{s:b}", "ok", 1);
    struct store_write w[2] = {
        {a, {.kind = JOB_OP_SUCCEED, .token = 11, .lease_ms = 1000, .payload = result}},
        {b, {.kind = JOB_OP_SUCCEED, .token = 99, .lease_ms = 1000, .payload = result}}};
    int rcs[2];
    uint64_t tokens[2] = {21, 22};
    struct job claimed[2];
    size_t n = 9;
    assert_int_equal(store_settle(f->st, w, 2, rcs, tokens, 2, 1000, f->now, claimed, &n), 0);
    assert_int_equal(rcs[0], 0);
    assert_int_equal(rcs[1], DS_E_LEASE_LOST); /* b is 12's, not 99's */
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(claimed[i].lease_token, tokens[i]);
        assert_int_equal(claimed[i].state, JOB_RUNNING);
        assert_non_null(claimed[i].input);
        job_clear(&claimed[i]);
    }
    struct store_doc doc = {0};
    assert_int_equal(store_get(f->st, a, &doc), 0);
    assert_int_equal(doc.state, JOB_SUCCEEDED);
    store_doc_clear(&doc);
    assert_int_equal(store_get(f->st, b, &doc), 0);
    assert_int_equal(doc.state, JOB_RUNNING);
    store_doc_clear(&doc);
    /* One job is left: two tokens claim one; then none. */
    assert_int_equal(store_settle(f->st, NULL, 0, rcs, tokens, 2, 1000, f->now, claimed, &n), 0);
    assert_int_equal(n, 1);
    job_clear(&claimed[0]);
    assert_int_equal(store_settle(f->st, NULL, 0, rcs, tokens, 2, 1000, f->now, claimed, &n), 0);
    assert_int_equal(n, 0);
    json_decref(result);
}

#define CASES(fx)                                                                                  \
    cmocka_unit_test_prestate_setup_teardown(create_and_get, setup, teardown, fx),                 \
        cmocka_unit_test_prestate_setup_teardown(idempotency_key, setup, teardown, fx),            \
        cmocka_unit_test_prestate_setup_teardown(claim_is_fifo_and_exclusive, setup, teardown,     \
                                                 fx),                                              \
        cmocka_unit_test_prestate_setup_teardown(writes_are_fenced, setup, teardown, fx),          \
        cmocka_unit_test_prestate_setup_teardown(expired_lease_is_taken_over, setup, teardown,     \
                                                 fx),                                              \
        cmocka_unit_test_prestate_setup_teardown(cancel_and_remove, setup, teardown, fx),          \
        cmocka_unit_test_prestate_setup_teardown(events_in_order, setup, teardown, fx),            \
        cmocka_unit_test_prestate_setup_teardown(list_pages_newest_first, setup, teardown, fx),    \
        cmocka_unit_test_prestate_setup_teardown(changes_feed_sees_other_handles, setup, teardown, \
                                                 fx),                                              \
        cmocka_unit_test_prestate_setup_teardown(finished_jobs_expire, setup, teardown, fx),       \
        cmocka_unit_test_prestate_setup_teardown(settle_writes_and_claims, setup, teardown, fx)

/* Starts a private redis-server on a free port; returns its pid. */
static pid_t start_redis(void)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        redis_port = 20000 + (int)(getpid() * 7 + attempt * 131) % 30000;
        char port[16];
        snprintf(port, sizeof port, "%d", redis_port);
        pid_t pid = fork();
        if (pid == 0) {
            freopen("/dev/null", "w", stdout);
            execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save",
                   "", "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 100; i++) {
            usleep(20000);
            redisContext *c = redisConnect("127.0.0.1", redis_port);
            int up = c && !c->err;
            redisFree(c);
            if (up)
                return pid;
            if (waitpid(pid, NULL, WNOHANG) == pid)
                break; /* the port was taken: try another */
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

int main(void)
{
    if (job_id_setup())
        return 1;
    static struct fixture memory = {.backend = "memory"}, sqlite = {.backend = "sqlite"},
                          redis = {.backend = "redis"};
    const struct CMUnitTest memory_tests[] = {CASES(&memory)};
    const struct CMUnitTest sqlite_tests[] = {CASES(&sqlite)};
    const struct CMUnitTest redis_tests[] = {CASES(&redis)};
    int failed = cmocka_run_group_tests_name("store contract: memory", memory_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("store contract: sqlite", sqlite_tests, NULL, NULL);
    pid_t redis_pid = start_redis();
    if (redis_pid < 0) {
        fprintf(stderr, "cannot start redis-server for the redis contract tests\n");
        return failed + 1;
    }
    failed += cmocka_run_group_tests_name("store contract: redis", redis_tests, NULL, NULL);
    kill(redis_pid, SIGTERM);
    waitpid(redis_pid, NULL, 0);
    return failed;
}
