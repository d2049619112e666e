/* The sqlite:PATH backend: jobs in one SQLite file that every process on the
 * host may open at once.
 *
 * DESIGN
 * WAL mode lets readers (polls) run beside one writer; writes take the write
 * lock up front (BEGIN IMMEDIATE) and wait for it up to busy_timeout, so two
 * processes never interleave a read-modify-write of one job. A write loads
 * the job row, runs job_apply() on it, and saves the row (with its freshly
 * rendered JSON in `doc`) and the new events in the same transaction. A poll
 * is one indexed read of `doc`. Statements are prepared once per handle.
 *
 * job_events.pos is AUTOINCREMENT, so it only grows: the watch hub of every
 * process reads "pos > cursor" after PRAGMA data_version says another
 * connection committed, and learns of every change exactly once. It knows
 * when to look from inotify on the -wal file, which every commit writes. */
#include <sqlite3.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "util/err.h"
#include "util/log.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS jobs("
    " id TEXT PRIMARY KEY, type TEXT NOT NULL, state INTEGER NOT NULL,"
    " version INTEGER NOT NULL, event_seq INTEGER NOT NULL, attempts INTEGER NOT NULL,"
    " max_attempts INTEGER NOT NULL, lease_token INTEGER NOT NULL, lease_expires INTEGER NOT NULL,"
    " cancel_requested INTEGER NOT NULL, created INTEGER NOT NULL, started INTEGER NOT NULL,"
    " finished INTEGER NOT NULL, expires INTEGER NOT NULL, ttl INTEGER NOT NULL,"
    " input TEXT, progress TEXT, result TEXT, error TEXT, doc TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, created);"
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires) WHERE expires > 0;"
    "CREATE TABLE IF NOT EXISTS job_events(pos INTEGER PRIMARY KEY AUTOINCREMENT,"
    " job_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS job_events_by_job ON job_events(job_id, seq);"
    "CREATE TABLE IF NOT EXISTS idempotency(key TEXT PRIMARY KEY, body_hash TEXT NOT NULL,"
    " job_id TEXT NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID;";

#define JOB_COLUMNS                                                                                \
    "id, type, state, version, event_seq, attempts, max_attempts, lease_token, lease_expires,"     \
    " cancel_requested, created, started, finished, expires, ttl, input, progress, result, error"

enum stmt_id {
    Q_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_GET,
    Q_PEEK,
    Q_LOAD,
    Q_SAVE,
    Q_EVENT_ADD,
    Q_EVENT_PRUNE,
    Q_EVENTS,
    Q_FIRST_KEPT,
    Q_CLAIM_PICK,
    Q_LEASES_EXPIRED,
    Q_EXPIRE_EVENTS,
    Q_EXPIRE_JOBS,
    Q_EXPIRE_IDEM,
    Q_REMOVE_JOB,
    Q_REMOVE_EVENTS,
    Q_IDEM_GET,
    Q_IDEM_PUT,
    Q_LIST,
    Q_CHANGES,
    Q_MAX_POS,
    Q_COUNTS,
    Q_KEY_INIT,
    Q_KEY_GET,
    Q_DATA_VERSION,
    Q_COUNT
};

static const char *const sql[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_GET] = "SELECT doc, version, event_seq, state FROM jobs WHERE id = ?1",
    [Q_PEEK] = "SELECT version, state FROM jobs WHERE id = ?1",
    [Q_LOAD] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
    [Q_SAVE] = "REPLACE INTO jobs(" JOB_COLUMNS ", doc) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
               " ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    [Q_EVENT_ADD] = "INSERT INTO job_events(job_id, seq, name, data) VALUES(?1, ?2, ?3, ?4)",
    [Q_EVENT_PRUNE] = "DELETE FROM job_events WHERE job_id = ?1 AND seq <= ?2",
    [Q_EVENTS] =
        "SELECT seq, name, data FROM job_events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq",
    [Q_FIRST_KEPT] = "SELECT coalesce(min(seq), 0) FROM job_events WHERE job_id = ?1",
    [Q_CLAIM_PICK] = "SELECT id FROM jobs WHERE state = 0 ORDER BY created, id LIMIT 1",
    [Q_LEASES_EXPIRED] = "SELECT id FROM jobs WHERE state = 1 AND lease_expires <= ?1",
    [Q_EXPIRE_EVENTS] = "DELETE FROM job_events WHERE job_id IN"
                        " (SELECT id FROM jobs WHERE expires > 0 AND expires <= ?1)",
    [Q_EXPIRE_JOBS] = "DELETE FROM jobs WHERE expires > 0 AND expires <= ?1",
    [Q_EXPIRE_IDEM] = "DELETE FROM idempotency WHERE expires <= ?1",
    [Q_REMOVE_JOB] = "DELETE FROM jobs WHERE id = ?1",
    [Q_REMOVE_EVENTS] = "DELETE FROM job_events WHERE job_id = ?1",
    [Q_IDEM_GET] = "SELECT body_hash, job_id FROM idempotency WHERE key = ?1",
    [Q_IDEM_PUT] =
        "REPLACE INTO idempotency(key, body_hash, job_id, expires) VALUES(?1, ?2, ?3, ?4)",
    [Q_LIST] =
        "SELECT id, doc FROM jobs WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR type = ?2)"
        " AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4",
    [Q_CHANGES] =
        "SELECT pos, job_id, name FROM job_events WHERE pos > ?1 ORDER BY pos LIMIT 10000",
    [Q_MAX_POS] = "SELECT coalesce(max(pos), 0) FROM job_events",
    [Q_COUNTS] = "SELECT state, count(*) FROM jobs GROUP BY state",
    [Q_KEY_INIT] = "INSERT OR IGNORE INTO meta(key, value) VALUES('id_key', ?1)",
    [Q_KEY_GET] = "SELECT value FROM meta WHERE key = 'id_key'",
    [Q_DATA_VERSION] = "PRAGMA data_version",
};

struct sql_store {
    struct store base;
    sqlite3 *db;
    sqlite3_stmt *q[Q_COUNT];
    int64_t data_version; /* last PRAGMA data_version seen by changes() */
    int notify_fd;        /* change_fd(): inotify on the WAL file, or -1 */
};

#define DB(st) ((struct sql_store *)(st))

/* Maps a SQLite result to a DS code, logging real failures. */
static int fail(struct sql_store *s, int rc)
{
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return DS_E_UNAVAILABLE;
    log_error("sqlite: %s", sqlite3_errmsg(s->db));
    return rc == SQLITE_NOMEM ? DS_E_NOMEM : DS_E_IO;
}

/* Resets and returns a prepared statement, ready for binding. */
static sqlite3_stmt *q(struct sql_store *s, enum stmt_id id)
{
    sqlite3_reset(s->q[id]);
    sqlite3_clear_bindings(s->q[id]);
    return s->q[id];
}

/* Runs a statement that returns no rows. */
static int run(struct sql_store *s, sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : fail(s, rc);
}

static int begin(struct sql_store *s)
{
    return run(s, q(s, Q_BEGIN));
}

/* Commits when rc is 0, rolls back otherwise; returns the first error. */
static int end(struct sql_store *s, int rc)
{
    if (rc == 0)
        rc = run(s, q(s, Q_COMMIT));
    if (rc)
        run(s, q(s, Q_ROLLBACK));
    return rc;
}

static int sql_open(const char *path, store **out)
{
    struct sql_store *s = calloc(1, sizeof *s);
    if (!s)
        return DS_E_NOMEM;
    s->base.ops = &store_sqlite_ops;
    s->data_version = -1;
    s->notify_fd = -1;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(*path ? path : "datasphere.db", &s->db, flags, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(s->db, 5000);
        rc = sqlite3_exec(s->db,
                          "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                          "BEGIN IMMEDIATE;",
                          NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, schema, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    for (int i = 0; rc == SQLITE_OK && i < Q_COUNT; i++)
        rc = sqlite3_prepare_v3(s->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->q[i], NULL);
    if (rc != SQLITE_OK) {
        log_error("sqlite: cannot open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "no memory");
        store_sqlite_ops.close(&s->base);
        return DS_E_IO;
    }
    *out = &s->base;
    return 0;
}

static void sql_close(store *st)
{
    struct sql_store *s = DB(st);
    if (s->notify_fd >= 0)
        close(s->notify_fd);
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(s->q[i]);
    sqlite3_close(s->db);
    free(s);
}

static int sql_ping(store *st)
{
    struct sql_store *s = DB(st);
    sqlite3_stmt *stmt = q(s, Q_DATA_VERSION);
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc == SQLITE_ROW ? 0 : DS_E_UNAVAILABLE;
}

static int sql_id_key(store *st, uint8_t key[JOB_ID_KEY_LEN])
{
    struct sql_store *s = DB(st);
    uint8_t fresh[JOB_ID_KEY_LEN];
    job_id_random_key(fresh);
    sqlite3_stmt *init = q(s, Q_KEY_INIT);
    sqlite3_bind_blob(init, 1, fresh, sizeof fresh, SQLITE_STATIC);
    int rc = run(s, init);
    sqlite3_stmt *get = q(s, Q_KEY_GET);
    if (!rc && sqlite3_step(get) == SQLITE_ROW && sqlite3_column_bytes(get, 0) == JOB_ID_KEY_LEN)
        memcpy(key, sqlite3_column_blob(get, 0), JOB_ID_KEY_LEN);
    else if (!rc)
        rc = DS_E_IO;
    sqlite3_reset(get);
    return rc;
}

static char *text_copy(sqlite3_stmt *stmt, int col)
{
    const unsigned char *t = sqlite3_column_text(stmt, col);
    return t ? strdup((const char *)t) : NULL;
}

static int read_doc(sqlite3_stmt *stmt, struct store_doc *out)
{
    out->json = text_copy(stmt, 0);
    out->version = sqlite3_column_int64(stmt, 1);
    out->event_seq = sqlite3_column_int64(stmt, 2);
    out->state = (enum job_state)sqlite3_column_int(stmt, 3);
    return out->json ? 0 : DS_E_NOMEM;
}

static int sql_get(store *st, const char *id, struct store_doc *out)
{
    struct sql_store *s = DB(st);
    sqlite3_stmt *stmt = q(s, Q_GET);
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    rc = rc == SQLITE_ROW ? read_doc(stmt, out) : rc == SQLITE_DONE ? DS_E_NOTFOUND : fail(s, rc);
    sqlite3_reset(stmt);
    return rc;
}

static int sql_peek(store *st, const char *id, int64_t *version, enum job_state *state)
{
    struct sql_store *s = DB(st);
    sqlite3_stmt *stmt = q(s, Q_PEEK);
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(stmt, 0);
        *state = (enum job_state)sqlite3_column_int(stmt, 1);
    }
    rc = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? DS_E_NOTFOUND : fail(s, rc);
    sqlite3_reset(stmt);
    return rc;
}

static json_t *json_column(sqlite3_stmt *stmt, int col)
{
    const char *t = (const char *)sqlite3_column_text(stmt, col);
    return t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
}

static void row_to_job(sqlite3_stmt *stmt, struct job *job)
{
    memset(job, 0, sizeof *job);
    snprintf(job->id, sizeof job->id, "%s", sqlite3_column_text(stmt, 0));
    snprintf(job->type, sizeof job->type, "%s", sqlite3_column_text(stmt, 1));
    job->state = (enum job_state)sqlite3_column_int(stmt, 2);
    job->version = sqlite3_column_int64(stmt, 3);
    job->event_seq = sqlite3_column_int64(stmt, 4);
    job->attempts = sqlite3_column_int(stmt, 5);
    job->max_attempts = sqlite3_column_int(stmt, 6);
    job->lease_token = (uint64_t)sqlite3_column_int64(stmt, 7);
    job->lease_expires_ms = sqlite3_column_int64(stmt, 8);
    job->cancel_requested = sqlite3_column_int(stmt, 9);
    job->created_ms = sqlite3_column_int64(stmt, 10);
    job->started_ms = sqlite3_column_int64(stmt, 11);
    job->finished_ms = sqlite3_column_int64(stmt, 12);
    job->expires_ms = sqlite3_column_int64(stmt, 13);
    job->ttl_s = sqlite3_column_int64(stmt, 14);
    job->input = json_column(stmt, 15);
    job->progress = json_column(stmt, 16);
    job->result = json_column(stmt, 17);
    job->error = json_column(stmt, 18);
}

static int sql_load(store *st, const char *id, struct job *out)
{
    struct sql_store *s = DB(st);
    sqlite3_stmt *stmt = q(s, Q_LOAD);
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        row_to_job(stmt, out);
    rc = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? DS_E_NOTFOUND : fail(s, rc);
    sqlite3_reset(stmt);
    return rc;
}

/* Binds a JSON value as text (NULL stays NULL); the text is freed by SQLite. */
static void bind_json(sqlite3_stmt *stmt, int col, const json_t *v)
{
    char *t = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (t)
        sqlite3_bind_text(stmt, col, t, -1, free);
    else
        sqlite3_bind_null(stmt, col);
}

/* Writes the job row with its rendered doc. */
static int save_job(struct sql_store *s, const struct job *job, const char *doc)
{
    sqlite3_stmt *stmt = q(s, Q_SAVE);
    const int64_t ints[] = {job->state,
                            job->version,
                            job->event_seq,
                            job->attempts,
                            job->max_attempts,
                            (int64_t)job->lease_token,
                            job->lease_expires_ms,
                            job->cancel_requested,
                            job->created_ms,
                            job->started_ms,
                            job->finished_ms,
                            job->expires_ms,
                            job->ttl_s};
    sqlite3_bind_text(stmt, 1, job->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, job->type, -1, SQLITE_STATIC);
    for (int i = 0; i < (int)(sizeof ints / sizeof ints[0]); i++)
        sqlite3_bind_int64(stmt, 3 + i, ints[i]);
    bind_json(stmt, 16, job->input);
    bind_json(stmt, 17, job->progress);
    bind_json(stmt, 18, job->result);
    bind_json(stmt, 19, job->error);
    sqlite3_bind_text(stmt, 20, doc, -1, SQLITE_STATIC);
    return run(s, stmt);
}

static int save_events(struct sql_store *s, const char *id, const struct job_events *ev)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < ev->n; i++) {
        sqlite3_stmt *stmt = q(s, Q_EVENT_ADD);
        sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 2, ev->v[i].seq);
        sqlite3_bind_text(stmt, 3, ev->v[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 4, ev->v[i].data, -1, SQLITE_STATIC);
        rc = run(s, stmt);
        /* Keep the newest JOB_EVENTS_KEPT; prune in batches of 100. */
        if (!rc && ev->v[i].seq > JOB_EVENTS_KEPT && ev->v[i].seq % 100 == 0) {
            sqlite3_stmt *prune = q(s, Q_EVENT_PRUNE);
            sqlite3_bind_text(prune, 1, id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(prune, 2, ev->v[i].seq - JOB_EVENTS_KEPT);
            rc = run(s, prune);
        }
    }
    return rc;
}

/* Saves job + events and fills out (may be NULL) with the new doc. */
static int persist(struct sql_store *s, const struct job *job, const struct job_events *ev,
                   struct store_doc *out)
{
    struct store_doc doc = {0};
    int rc = store_doc_from_job(&doc, job);
    if (!rc)
        rc = save_job(s, job, doc.json);
    if (!rc)
        rc = save_events(s, job->id, ev);
    if (!rc && out)
        *out = doc;
    else
        store_doc_clear(&doc);
    return rc;
}

/* Looks up an idempotency key inside the open transaction. 0 = unused. */
static int idem_check(struct sql_store *s, const struct store_idem *idem, struct store_doc *out)
{
    sqlite3_stmt *stmt = q(s, Q_IDEM_GET);
    sqlite3_bind_text(stmt, 1, idem->key, -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) != SQLITE_ROW)
        return 0;
    bool same = !strcmp((const char *)sqlite3_column_text(stmt, 0), idem->body_hash);
    char job_id[JOB_ID_SIZE];
    snprintf(job_id, sizeof job_id, "%s", sqlite3_column_text(stmt, 1));
    sqlite3_reset(stmt);
    if (!same)
        return DS_E_IDEM_MISMATCH;
    int rc = sql_get(&s->base, job_id, out);
    return rc == DS_E_NOTFOUND ? 0 : rc ? rc : DS_E_EXISTS;
}

static int idem_put(struct sql_store *s, const struct store_idem *idem, const char *id)
{
    sqlite3_stmt *stmt = q(s, Q_IDEM_PUT);
    sqlite3_bind_text(stmt, 1, idem->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, idem->body_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 4, idem->expires_ms);
    return run(s, stmt);
}

static int sql_create(store *st, const struct job *job, const struct job_events *ev,
                      const struct store_idem *idem, struct store_doc *out)
{
    struct sql_store *s = DB(st);
    int rc = begin(s);
    if (rc)
        return rc;
    bool keyed = idem && idem->key;
    if (keyed)
        rc = idem_check(s, idem, out);
    if (!rc)
        rc = persist(s, job, ev, out);
    if (!rc && keyed)
        rc = idem_put(s, idem, job->id);
    if (rc == DS_E_EXISTS) { /* a read-only outcome: nothing to commit */
        end(s, 0);
        return rc;
    }
    return end(s, rc);
}

/* Loads, applies and persists inside an open transaction. */
static int apply_in_tx(struct sql_store *s, const char *id, const struct job_op *op, int64_t now,
                       struct store_doc *out, struct job *job_out)
{
    struct job job;
    struct job_events ev = {0};
    int rc = sql_load(&s->base, id, &job);
    if (rc)
        return rc;
    rc = job_apply(&job, op, now, &ev);
    if (!rc)
        rc = persist(s, &job, &ev, out);
    job_events_clear(&ev);
    if (!rc && job_out)
        *job_out = job;
    else
        job_clear(&job);
    return rc;
}

static int sql_apply(store *st, const char *id, const struct job_op *op, int64_t now_ms,
                     struct store_doc *out)
{
    struct sql_store *s = DB(st);
    int rc = begin(s);
    return rc ? rc : end(s, apply_in_tx(s, id, op, now_ms, out, NULL));
}

static int sql_claim(store *st, const struct job_op *op, int64_t now_ms, struct job *out)
{
    struct sql_store *s = DB(st);
    int rc = begin(s);
    if (rc)
        return rc;
    sqlite3_stmt *pick = q(s, Q_CLAIM_PICK);
    char id[JOB_ID_SIZE] = "";
    if (sqlite3_step(pick) == SQLITE_ROW)
        snprintf(id, sizeof id, "%s", sqlite3_column_text(pick, 0));
    sqlite3_reset(pick);
    rc = *id ? apply_in_tx(s, id, op, now_ms, NULL, out) : DS_E_EMPTY;
    if (rc == DS_E_EMPTY) {
        end(s, 0);
        return rc;
    }
    rc = end(s, rc);
    if (rc && *id && out->input) /* commit failed after the job was filled */
        job_clear(out);
    return rc;
}

/* Collects the ids a one-column query returns (at most cap). */
static size_t collect_ids(sqlite3_stmt *stmt, char (*ids)[JOB_ID_SIZE], size_t cap)
{
    size_t n = 0;
    while (n < cap && sqlite3_step(stmt) == SQLITE_ROW)
        snprintf(ids[n++], JOB_ID_SIZE, "%s", sqlite3_column_text(stmt, 0));
    sqlite3_reset(stmt);
    return n;
}

static int sql_requeue_expired(store *st, int64_t now_ms, int64_t lease_ms, int *requeued,
                               int *failed)
{
    (void)lease_ms; /* the lease expiry is in each job */
    struct sql_store *s = DB(st);
    char ids[256][JOB_ID_SIZE];
    *requeued = *failed = 0;
    int rc = begin(s);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = q(s, Q_LEASES_EXPIRED);
    sqlite3_bind_int64(stmt, 1, now_ms);
    size_t n = collect_ids(stmt, ids, 256);
    const struct job_op op = {.kind = JOB_OP_REQUEUE};
    for (size_t i = 0; !rc && i < n; i++) {
        struct store_doc doc = {0};
        rc = apply_in_tx(s, ids[i], &op, now_ms, &doc, NULL);
        if (!rc)
            ++*(doc.state == JOB_QUEUED ? requeued : failed);
        store_doc_clear(&doc);
    }
    return end(s, rc);
}

static int sql_expire(store *st, int64_t now_ms, int *removed)
{
    struct sql_store *s = DB(st);
    int rc = begin(s);
    const enum stmt_id steps[] = {Q_EXPIRE_EVENTS, Q_EXPIRE_JOBS, Q_EXPIRE_IDEM};
    *removed = 0;
    for (size_t i = 0; !rc && i < 3; i++) {
        sqlite3_stmt *stmt = q(s, steps[i]);
        sqlite3_bind_int64(stmt, 1, now_ms);
        rc = run(s, stmt);
        if (steps[i] == Q_EXPIRE_JOBS)
            *removed = sqlite3_changes(s->db);
    }
    return rc ? (end(s, rc), rc) : end(s, 0);
}

static int sql_remove(store *st, const char *id)
{
    struct sql_store *s = DB(st);
    int rc = begin(s);
    if (rc)
        return rc;
    struct store_doc doc = {0};
    rc = sql_get(st, id, &doc);
    if (!rc && !job_state_terminal(doc.state))
        rc = DS_E_CONFLICT;
    store_doc_clear(&doc);
    const enum stmt_id steps[] = {Q_REMOVE_EVENTS, Q_REMOVE_JOB};
    for (size_t i = 0; !rc && i < 2; i++) {
        sqlite3_stmt *stmt = q(s, steps[i]);
        sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
        rc = run(s, stmt);
    }
    return end(s, rc);
}

static int sql_list(store *st, const struct store_filter *f, struct store_list *out)
{
    struct sql_store *s = DB(st);
    sqlite3_stmt *stmt = q(s, Q_LIST);
    memset(out, 0, sizeof *out);
    if (f->has_state)
        sqlite3_bind_int(stmt, 1, f->state);
    if (f->type)
        sqlite3_bind_text(stmt, 2, f->type, -1, SQLITE_STATIC);
    if (f->cursor)
        sqlite3_bind_text(stmt, 3, f->cursor, -1, SQLITE_STATIC);
    sqlite3_bind_int(stmt, 4, f->limit + 1); /* one more tells whether a next page exists */
    out->docs = calloc((size_t)f->limit, sizeof *out->docs);
    int rc = out->docs ? 0 : DS_E_NOMEM;
    char last[JOB_ID_SIZE] = "";
    while (!rc && sqlite3_step(stmt) == SQLITE_ROW) {
        if (out->n == (size_t)f->limit) { /* a further page exists */
            memcpy(out->next_cursor, last, sizeof last);
            break;
        }
        snprintf(last, sizeof last, "%s", sqlite3_column_text(stmt, 0));
        if (!(out->docs[out->n++] = text_copy(stmt, 1)))
            rc = DS_E_NOMEM;
    }
    sqlite3_reset(stmt);
    if (rc)
        store_list_clear(out);
    return rc;
}

static int sql_events(store *st, const char *id, int64_t after_seq, struct job_events *out,
                      int64_t *first_kept)
{
    struct sql_store *s = DB(st);
    sqlite3_stmt *first = q(s, Q_FIRST_KEPT);
    sqlite3_bind_text(first, 1, id, -1, SQLITE_STATIC);
    *first_kept = sqlite3_step(first) == SQLITE_ROW ? sqlite3_column_int64(first, 0) : 0;
    sqlite3_reset(first);
    sqlite3_stmt *stmt = q(s, Q_EVENTS);
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, after_seq);
    int rc = 0, step;
    while (!rc && (step = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *name = job_event_name((const char *)sqlite3_column_text(stmt, 1));
        rc = job_events_push(out, sqlite3_column_int64(stmt, 0), name ? name : "status",
                             text_copy(stmt, 2));
    }
    sqlite3_reset(stmt);
    return rc;
}

static int64_t scalar(struct sql_store *s, enum stmt_id id)
{
    sqlite3_stmt *stmt = q(s, id);
    int64_t v = sqlite3_step(stmt) == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : -1;
    sqlite3_reset(stmt);
    return v;
}

static int sql_changes(store *st, int64_t *cursor, store_change_fn fn, void *arg)
{
    struct sql_store *s = DB(st);
    int64_t dv = scalar(s, Q_DATA_VERSION);
    if (*cursor >= 0 && dv == s->data_version)
        return 0; /* nobody committed since the last look */
    s->data_version = dv;
    if (*cursor < 0) {
        *cursor = scalar(s, Q_MAX_POS);
        return *cursor < 0 ? DS_E_IO : 0;
    }
    sqlite3_stmt *stmt = q(s, Q_CHANGES);
    sqlite3_bind_int64(stmt, 1, *cursor);
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        *cursor = sqlite3_column_int64(stmt, 0);
        const char *name = job_event_name((const char *)sqlite3_column_text(stmt, 2));
        fn((const char *)sqlite3_column_text(stmt, 1), name ? name : "status", arg);
    }
    sqlite3_reset(stmt);
    return 0;
}

/* Every commit, by any process, writes the -wal file: IN_MODIFY on it is the
 * notification that another connection may have committed. */
static int sql_change_fd(store *st)
{
    struct sql_store *s = DB(st);
    if (s->notify_fd >= 0)
        return s->notify_fd;
    const char *db = sqlite3_db_filename(s->db, "main");
    char wal[4096];
    if (!db || !*db || snprintf(wal, sizeof wal, "%s-wal", db) >= (int)sizeof wal)
        return -1;
    s->notify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->notify_fd >= 0 && inotify_add_watch(s->notify_fd, wal, IN_MODIFY) < 0) {
        log_warn("sqlite: cannot watch %s (%m); looking for changes every few ms instead", wal);
        close(s->notify_fd);
        s->notify_fd = -1;
    }
    return s->notify_fd;
}

static int sql_counts(store *st, int64_t counts[JOB_N_STATES])
{
    struct sql_store *s = DB(st);
    memset(counts, 0, sizeof(int64_t) * JOB_N_STATES);
    sqlite3_stmt *stmt = q(s, Q_COUNTS);
    int step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        int state = sqlite3_column_int(stmt, 0);
        if (state >= 0 && state < JOB_N_STATES)
            counts[state] = sqlite3_column_int64(stmt, 1);
    }
    sqlite3_reset(stmt);
    return step == SQLITE_DONE ? 0 : fail(s, step);
}

const struct store_ops store_sqlite_ops = {
    .scheme = "sqlite:",
    .change_poll_ms = 5,
    .open = sql_open,
    .close = sql_close,
    .ping = sql_ping,
    .id_key = sql_id_key,
    .create = sql_create,
    .get = sql_get,
    .peek = sql_peek,
    .load = sql_load,
    .apply = sql_apply,
    .claim = sql_claim,
    .requeue_expired = sql_requeue_expired,
    .expire = sql_expire,
    .remove = sql_remove,
    .list = sql_list,
    .events = sql_events,
    .changes = sql_changes,
    .counts = sql_counts,
    .change_fd = sql_change_fd,
};
