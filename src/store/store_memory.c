/* The memory: backend: jobs in this process's heap, as the system we replace
 * kept them. It exists for tests and to show the failure it causes: a second
 * process cannot see these jobs, and its id MAC key differs, so a poll that
 * lands on another instance is a 404.
 *
 * DESIGN
 * Every handle opened in one process shares one struct mem_state (refcounted;
 * freed when the last handle closes). One mutex guards it all. Jobs sit in an
 * array in creation order; lookups are linear, which is fine for the test
 * sizes this backend serves. Changes go into a ring that store_changes()
 * reads; a reader that fell behind the ring is told "*" (everything changed). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "util/err.h"

#define RING 4096

struct mem_entry {
    struct job job;
    char *doc; /* rendered job, owned */
    struct job_events ev;
};

struct mem_idem {
    char key[256], hash[80], job_id[JOB_ID_SIZE];
    int64_t expires_ms;
};

struct mem_change {
    char job_id[JOB_ID_SIZE];
    const char *name;
};

struct mem_state {
    pthread_mutex_t mu;
    int refs;
    uint8_t key[JOB_ID_KEY_LEN];
    struct mem_entry *jobs;
    size_t n, cap;
    struct mem_idem *idem;
    size_t n_idem, cap_idem;
    struct mem_change ring[RING];
    int64_t change_seq;
};

struct mem_store {
    struct store base;
    struct mem_state *s; /* shared, refcounted */
};

static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mem_state *shared;

#define S(st) (((struct mem_store *)(st))->s)

static int mem_open(const char *location, store **out)
{
    (void)location;
    struct mem_store *m = calloc(1, sizeof *m);
    if (!m)
        return DS_E_NOMEM;
    pthread_mutex_lock(&shared_mu);
    if (!shared && (shared = calloc(1, sizeof *shared))) {
        pthread_mutex_init(&shared->mu, NULL);
        job_id_random_key(shared->key);
    }
    if (shared)
        shared->refs++;
    m->s = shared;
    pthread_mutex_unlock(&shared_mu);
    if (!m->s) {
        free(m);
        return DS_E_NOMEM;
    }
    m->base.ops = &store_memory_ops;
    *out = &m->base;
    return 0;
}

static void entry_free(struct mem_entry *e)
{
    job_clear(&e->job);
    free(e->doc);
    job_events_clear(&e->ev);
}

static void mem_close(store *st)
{
    struct mem_state *s = S(st);
    pthread_mutex_lock(&shared_mu);
    if (--s->refs == 0) {
        for (size_t i = 0; i < s->n; i++)
            entry_free(&s->jobs[i]);
        free(s->jobs);
        free(s->idem);
        pthread_mutex_destroy(&s->mu);
        free(s);
        shared = NULL;
    }
    pthread_mutex_unlock(&shared_mu);
    free(st);
}

static int mem_ping(store *st)
{
    (void)st;
    return 0;
}

static int mem_id_key(store *st, uint8_t key[JOB_ID_KEY_LEN])
{
    memcpy(key, S(st)->key, JOB_ID_KEY_LEN);
    return 0;
}

static struct mem_entry *find(struct mem_state *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->jobs[i].job.id, id))
            return &s->jobs[i];
    return NULL;
}

static void log_change(struct mem_state *s, const char *id, const struct job_events *ev)
{
    for (size_t i = 0; i < ev->n; i++) {
        struct mem_change *c = &s->ring[s->change_seq++ % RING];
        memcpy(c->job_id, id, JOB_ID_SIZE);
        c->name = ev->v[i].name;
    }
}

/* Moves copies of new events into the entry, dropping the oldest past the cap. */
static int keep_events(struct mem_entry *e, const struct job_events *ev)
{
    for (size_t i = 0; i < ev->n; i++) {
        if (job_events_push(&e->ev, ev->v[i].seq, ev->v[i].name, strdup(ev->v[i].data)))
            return DS_E_NOMEM;
    }
    if (e->ev.n > JOB_EVENTS_KEPT) {
        size_t drop = e->ev.n - JOB_EVENTS_KEPT;
        for (size_t i = 0; i < drop; i++)
            free(e->ev.v[i].data);
        memmove(e->ev.v, e->ev.v + drop, (e->ev.n - drop) * sizeof *e->ev.v);
        e->ev.n -= drop;
    }
    return 0;
}

static int doc_of(const struct mem_entry *e, struct store_doc *out)
{
    if (!out)
        return 0;
    out->json = strdup(e->doc);
    out->version = e->job.version;
    out->event_seq = e->job.event_seq;
    out->state = e->job.state;
    return out->json ? 0 : DS_E_NOMEM;
}

static struct mem_idem *find_idem(struct mem_state *s, const char *key)
{
    for (size_t i = 0; i < s->n_idem; i++)
        if (!strcmp(s->idem[i].key, key))
            return &s->idem[i];
    return NULL;
}

static int add_idem(struct mem_state *s, const struct store_idem *idem, const char *id)
{
    if (s->n_idem == s->cap_idem) {
        size_t cap = s->cap_idem ? s->cap_idem * 2 : 16;
        struct mem_idem *v = realloc(s->idem, cap * sizeof *v);
        if (!v)
            return DS_E_NOMEM;
        s->idem = v;
        s->cap_idem = cap;
    }
    struct mem_idem *m = &s->idem[s->n_idem++];
    snprintf(m->key, sizeof m->key, "%s", idem->key);
    snprintf(m->hash, sizeof m->hash, "%s", idem->body_hash);
    snprintf(m->job_id, sizeof m->job_id, "%s", id);
    m->expires_ms = idem->expires_ms;
    return 0;
}

static int append_job(struct mem_state *s, const struct job *job, const struct job_events *ev)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct mem_entry *v = realloc(s->jobs, cap * sizeof *v);
        if (!v)
            return DS_E_NOMEM;
        s->jobs = v;
        s->cap = cap;
    }
    struct mem_entry *e = &s->jobs[s->n];
    memset(e, 0, sizeof *e);
    if (job_copy(&e->job, job) || !(e->doc = job_render(job)) || keep_events(e, ev)) {
        entry_free(e);
        return DS_E_NOMEM;
    }
    s->n++;
    log_change(s, job->id, ev);
    return 0;
}

static int mem_create(store *st, const struct job *job, const struct job_events *ev,
                      const struct store_idem *idem, struct store_doc *out)
{
    struct mem_state *s = S(st);
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    struct mem_idem *prior = idem && idem->key ? find_idem(s, idem->key) : NULL;
    struct mem_entry *existing = prior ? find(s, prior->job_id) : NULL;
    if (existing) {
        rc = strcmp(prior->hash, idem->body_hash) ? DS_E_IDEM_MISMATCH : DS_E_EXISTS;
        if (rc == DS_E_EXISTS && doc_of(existing, out))
            rc = DS_E_NOMEM;
        goto out;
    }
    if (prior) /* the job it named is gone: the key is free again */
        *prior = s->idem[--s->n_idem];
    rc = append_job(s, job, ev);
    if (!rc && idem && idem->key)
        rc = add_idem(s, idem, job->id);
    if (!rc)
        rc = doc_of(&s->jobs[s->n - 1], out);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int mem_get(store *st, const char *id, struct store_doc *out)
{
    struct mem_state *s = S(st);
    pthread_mutex_lock(&s->mu);
    struct mem_entry *e = find(s, id);
    int rc = e ? doc_of(e, out) : DS_E_NOTFOUND;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int mem_peek(store *st, const char *id, int64_t *version, enum job_state *state)
{
    struct mem_state *s = S(st);
    pthread_mutex_lock(&s->mu);
    struct mem_entry *e = find(s, id);
    if (e) {
        *version = e->job.version;
        *state = e->job.state;
    }
    pthread_mutex_unlock(&s->mu);
    return e ? 0 : DS_E_NOTFOUND;
}

static int mem_load(store *st, const char *id, struct job *out)
{
    struct mem_state *s = S(st);
    pthread_mutex_lock(&s->mu);
    struct mem_entry *e = find(s, id);
    int rc = e ? job_copy(out, &e->job) : DS_E_NOTFOUND;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Applies op to an entry under the lock and keeps the result. */
static int apply_locked(struct mem_state *s, struct mem_entry *e, const struct job_op *op,
                        int64_t now_ms)
{
    struct job next;
    struct job_events ev = {0};
    int rc = job_copy(&next, &e->job);
    if (rc)
        return rc;
    rc = job_apply(&next, op, now_ms, &ev);
    char *doc = rc ? NULL : job_render(&next);
    if (!rc && (!doc || keep_events(e, &ev)))
        rc = DS_E_NOMEM;
    if (rc) {
        free(doc);
        job_clear(&next);
    } else {
        job_clear(&e->job);
        e->job = next;
        free(e->doc);
        e->doc = doc;
        log_change(s, e->job.id, &ev);
    }
    job_events_clear(&ev);
    return rc;
}

static int mem_apply(store *st, const char *id, const struct job_op *op, int64_t now_ms,
                     struct store_doc *out)
{
    struct mem_state *s = S(st);
    pthread_mutex_lock(&s->mu);
    struct mem_entry *e = find(s, id);
    int rc = e ? apply_locked(s, e, op, now_ms) : DS_E_NOTFOUND;
    if (!rc)
        rc = doc_of(e, out);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int mem_claim(store *st, const struct job_op *op, int64_t now_ms, struct job *out)
{
    struct mem_state *s = S(st);
    int rc = DS_E_EMPTY;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n && rc == DS_E_EMPTY; i++) {
        if (s->jobs[i].job.state != JOB_QUEUED)
            continue;
        rc = apply_locked(s, &s->jobs[i], op, now_ms);
        if (!rc)
            rc = job_copy(out, &s->jobs[i].job);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int mem_requeue_expired(store *st, int64_t now_ms, int64_t lease_ms, int *requeued,
                               int *failed)
{
    (void)lease_ms; /* the lease expiry is in each job */
    struct mem_state *s = S(st);
    const struct job_op op = {.kind = JOB_OP_REQUEUE};
    *requeued = *failed = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++) {
        struct mem_entry *e = &s->jobs[i];
        if (e->job.state == JOB_RUNNING && e->job.lease_expires_ms <= now_ms &&
            apply_locked(s, e, &op, now_ms) == 0)
            ++*(e->job.state == JOB_QUEUED ? requeued : failed);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void remove_at(struct mem_state *s, size_t i)
{
    entry_free(&s->jobs[i]);
    memmove(&s->jobs[i], &s->jobs[i + 1], (s->n - i - 1) * sizeof *s->jobs);
    s->n--;
}

static int mem_expire(store *st, int64_t now_ms, int *removed)
{
    struct mem_state *s = S(st);
    *removed = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = s->n; i-- > 0;)
        if (s->jobs[i].job.expires_ms && s->jobs[i].job.expires_ms <= now_ms) {
            remove_at(s, i);
            ++*removed;
        }
    for (size_t i = s->n_idem; i-- > 0;)
        if (s->idem[i].expires_ms <= now_ms)
            s->idem[i] = s->idem[--s->n_idem];
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int mem_remove(store *st, const char *id)
{
    struct mem_state *s = S(st);
    int rc = DS_E_NOTFOUND;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->jobs[i].job.id, id))
            continue;
        rc = job_state_terminal(s->jobs[i].job.state) ? 0 : DS_E_CONFLICT;
        if (!rc)
            remove_at(s, i);
        break;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static bool matches(const struct job *job, const struct store_filter *f)
{
    if (f->has_state && job->state != f->state)
        return false;
    if (f->type && strcmp(job->type, f->type))
        return false;
    return !f->cursor || strcmp(job->id, f->cursor) < 0;
}

static int mem_list(store *st, const struct store_filter *f, struct store_list *out)
{
    struct mem_state *s = S(st);
    int rc = 0;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    out->docs = calloc((size_t)f->limit, sizeof *out->docs);
    rc = out->docs ? 0 : DS_E_NOMEM;
    /* Ids sort by creation time; walk newest first. */
    const char *last = NULL;
    for (size_t i = s->n; !rc && i-- > 0;) {
        if (!matches(&s->jobs[i].job, f))
            continue;
        if (out->n == (size_t)f->limit) {
            snprintf(out->next_cursor, sizeof out->next_cursor, "%s", last);
            break;
        }
        last = s->jobs[i].job.id;
        if (!(out->docs[out->n++] = strdup(s->jobs[i].doc)))
            rc = DS_E_NOMEM;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc)
        store_list_clear(out);
    return rc;
}

static int mem_events(store *st, const char *id, int64_t after_seq, struct job_events *out,
                      int64_t *first_kept)
{
    struct mem_state *s = S(st);
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    struct mem_entry *e = find(s, id);
    if (!e)
        rc = DS_E_NOTFOUND;
    *first_kept = e && e->ev.n ? e->ev.v[0].seq : 0;
    for (size_t i = 0; e && !rc && i < e->ev.n; i++)
        if (e->ev.v[i].seq > after_seq)
            rc = job_events_push(out, e->ev.v[i].seq, e->ev.v[i].name, strdup(e->ev.v[i].data));
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int mem_changes(store *st, int64_t *cursor, store_change_fn fn, void *arg)
{
    struct mem_state *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t end = s->change_seq;
    if (*cursor < 0) {
        *cursor = end;
    } else if (end - *cursor > RING) {
        fn("*", "status", arg);
    } else {
        for (int64_t i = *cursor; i < end; i++)
            fn(s->ring[i % RING].job_id, s->ring[i % RING].name, arg);
    }
    *cursor = end;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int mem_counts(store *st, int64_t counts[JOB_N_STATES])
{
    struct mem_state *s = S(st);
    memset(counts, 0, sizeof(int64_t) * JOB_N_STATES);
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++)
        counts[s->jobs[i].job.state]++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

const struct store_ops store_memory_ops = {
    .scheme = "memory:",
    .open = mem_open,
    .close = mem_close,
    .ping = mem_ping,
    .id_key = mem_id_key,
    .create = mem_create,
    .get = mem_get,
    .peek = mem_peek,
    .load = mem_load,
    .apply = mem_apply,
    .claim = mem_claim,
    .requeue_expired = mem_requeue_expired,
    .expire = mem_expire,
    .remove = mem_remove,
    .list = mem_list,
    .events = mem_events,
    .changes = mem_changes,
    .counts = mem_counts,
};
