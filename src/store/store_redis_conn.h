/* Private to the redis:// backend: the handle, its connection layer
 * (store_redis_conn.c), and what store_redis.c shares with the HTTP loop's
 * pipelined reads and batched creates (store_redis_async.c). */
#ifndef DS_STORE_REDIS_CONN_H
#define DS_STORE_REDIS_CONN_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "store/store.h"

enum script { S_CREATE, S_APPLY, S_CLAIM, S_SETTLE, S_REQUEUE, S_REMOVE, S_EXPIRE, S_COUNT };

struct redis_store {
    struct store base;
    char host[256];
    int port, db;
    redisContext *c;  /* NULL while disconnected */
    int64_t retry_at; /* monotonic ms of the next reconnect attempt */
    char consumer[48];
    char sha[S_COUNT][41];         /* of the scripts, as SCRIPT LOAD answered */
    atomic_int stop;               /* listen(): unlisten() was called */
    atomic_int listen_fd;          /* listen(): the subscribed socket, -1 if none */
    bool recheck_pending;          /* a claim failed midway: our own entries may wait */
    struct event_base *loop;       /* attach(): the loop of the async connection */
    redisAsyncContext *ac;         /* NULL while not connected */
    struct event *flush;           /* sends the creates gathered in one loop pass */
    struct async_create **creates; /* owned: gathered, not sent yet */
    size_t n_creates, cap_creates;
    int64_t async_retry_at; /* monotonic ms of the next async connect */
    bool closing;
};

#define R(st) ((struct redis_store *)(st))

/* Builds the scripts' texts once per process (call before connecting). */
void redis_scripts_init(void);

/* host, port and db from "HOST:PORT[/DB]". 0 or DS_E_INVALID. */
int redis_parse_location(struct redis_store *s, const char *loc);

/* Connects if needed. 0, or DS_E_UNAVAILABLE (at once while Redis is down). */
int redis_ensure(struct redis_store *s);

/* Drops the connection, logging the outage once per process. */
void redis_drop(struct redis_store *s, const char *why);

/* A command from a format; the reply (caller frees), or NULL when Redis is
 * unavailable. A failure on a stale connection is retried once on a new one. */
redisReply *redis_fmt(struct redis_store *s, const char *format, ...);

/* EVALSHA of a script on the job id's keys (plus extra_key), with nargs
 * C-string arguments. The reply, or NULL when unavailable. */
redisReply *redis_run(struct redis_store *s, enum script which, const char *id,
                      const char *extra_key, int nargs, const char **args);

/* The same command, formatted for sending later (or on another
 * connection); the caller frees it with redisFreeCommand(). NULL: no memory. */
char *redis_format_script(const struct redis_store *s, enum script which, const char *id,
                          const char *extra_key, int nargs, const char **args, size_t *len);

/* Runs a command from redis_format_script() on the synchronous connection,
 * reconnecting and reloading the scripts as needed. NULL when unavailable. */
redisReply *redis_run_formatted(struct redis_store *s, const char *cmd, size_t len);

/* Whether r says Redis is loading its data (it restarted); the synchronous
 * calls answer NULL (unavailable) for such a reply. */
bool redis_loading(const redisReply *r);

/* Whether r says Redis lost the scripts (it restarted). */
bool redis_noscript(const redisReply *r);

/* The first element of a script's array reply, or "". */
const char *redis_code(const redisReply *r);

/* A script's reply code as a DS code ("ok" 0, "notfound", ...). */
int redis_code_rc(const char *code);

/* A script's reply as a DS code ("ok" 0, "notfound", ...); logs errors. */
int redis_reply_rc(const redisReply *r);

/* --- shared by store_redis.c and store_redis_async.c --- */

/* Renders the job whose fields r holds from element `from` on into *out
 * (may be NULL: nothing to do). */
int redis_render_fields(const redisReply *r, size_t from, const char *id, struct store_doc *out);
/* An HGETALL of a job hash -> 0, or why not. */
int redis_hash_reply(const redisReply *r);
/* An HMGET v st -> version and state. */
int redis_peek_reply(const redisReply *r, int64_t *version, enum job_state *state);
/* store_get() and store_peek() on the synchronous connection. */
int redis_get(store *st, const char *id, struct store_doc *out);
int redis_peek(store *st, const char *id, int64_t *version, enum job_state *state);

/* One job's arguments to the create script, all owned (so the job itself
 * may go before they are sent). */
struct redis_create_args {
    char id[JOB_ID_SIZE], type[JOB_TYPE_MAX], ttl[24], ma[24], now[24], idem_ms[24];
    char idem_key[80], hash[65]; /* "" without an Idempotency-Key */
    char *input;                 /* owned JSON text */
};
int redis_create_args(struct redis_create_args *a, const struct job *job,
                      const struct store_idem *idem);
void redis_create_args_clear(struct redis_create_args *a);
/* The create script's command for n jobs (redisFreeCommand() it), or NULL.
 * resend: the jobs may exist already (a reply was lost), so look first. */
char *redis_create_command(const struct redis_store *s, struct redis_create_args *const *jobs,
                           size_t n, bool resend, size_t *len);
/* The create script's reply r for n jobs: 0 when it has an answer for each,
 * or why none has one (logged once). */
int redis_create_batch_rc(const redisReply *r, size_t n);
/* One job's answer in that reply: 0 (the caller has the new job),
 * DS_E_EXISTS with *out the existing one, or why not. */
int redis_create_outcome(const redisReply *job, const char *id, struct store_doc *out);

/* The HTTP loop's side (store_redis_async.c). */
int redis_attach(store *st, struct event_base *base);
int redis_get_async(store *st, const char *id, bool peek, store_read_fn fn, void *arg);
int redis_create_async(store *st, const struct job *job, const struct job_events *ev,
                       const struct store_idem *idem, store_read_fn fn, void *arg);
/* Tells what is pending on the loop that the store is unavailable, and
 * frees the asynchronous side. */
void redis_async_close(struct redis_store *s);

#endif
