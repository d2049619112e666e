/* Private to the redis:// backend: the handle and its connection layer
 * (store_redis_conn.c), shared by store_redis.c. */
#ifndef DS_STORE_REDIS_CONN_H
#define DS_STORE_REDIS_CONN_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "store/store.h"

enum script { S_CREATE, S_APPLY, S_CLAIM, S_CLAIM_NEXT, S_REQUEUE, S_REMOVE, S_EXPIRE, S_COUNT };

struct redis_store {
    struct store base;
    char host[256];
    int port, db;
    redisContext *c;  /* NULL while disconnected */
    int64_t retry_at; /* monotonic ms of the next reconnect attempt */
    char consumer[48];
    char sha[S_COUNT][41];   /* of the scripts, as SCRIPT LOAD answered */
    atomic_int stop;         /* listen(): unlisten() was called */
    atomic_int listen_fd;    /* listen(): the subscribed socket, -1 if none */
    bool recheck_pending;    /* a claim failed midway: our own entries may wait */
    struct event_base *loop; /* attach(): the loop of the async connection */
    redisAsyncContext *ac;   /* NULL while not connected */
    int64_t async_retry_at;  /* monotonic ms of the next async connect */
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

/* A command as argv, or from a format; the reply (caller frees), or NULL
 * when Redis is unavailable. */
redisReply *redis_cmd(struct redis_store *s, int argc, const char **argv, const size_t *lens);
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

/* A script's reply as a DS code ("ok" 0, "notfound", ...); logs errors. */
int redis_reply_rc(const redisReply *r);

#endif
