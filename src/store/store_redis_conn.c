/* The connection layer of the redis:// backend: connecting and reconnecting,
 * running commands and the Lua scripts, and the one-line-per-outage log.
 *
 * DESIGN
 * Each handle owns one synchronous hiredis connection (hiredis contexts are
 * not thread-safe: one handle per thread). A failed command drops it; the
 * next call reconnects at most every 500 ms and otherwise answers
 * DS_E_UNAVAILABLE at once, so a Redis outage is a fast 503, not a hang. A
 * command that fails on a connection made earlier is tried once more on a
 * new one: after a Redis restart every idle connection is stale. Scripts are
 * loaded on every new connection and run with EVALSHA; after a restart lost
 * them (NOSCRIPT) they are loaded again. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_redis_conn.h"
#include "store/store_redis_lua.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

static const char *const bodies[S_COUNT] = {redis_lua_create, redis_lua_apply,   redis_lua_claim,
                                            redis_lua_settle, redis_lua_requeue, redis_lua_remove,
                                            redis_lua_expire};

/* Full script texts (T + prelude + body), built once per process. */
static char *scripts[S_COUNT];
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static atomic_int outage_logged; /* one line per outage per process */

static char *transition_table(void)
{
    static char t[512];
    size_t n = (size_t)snprintf(t, sizeof t, "local T = {");
    for (int from = 0; from < JOB_N_STATES; from++) {
        n += (size_t)snprintf(t + n, sizeof t - n, "[%d]={", from);
        for (int to = 0; to < JOB_N_STATES; to++)
            if (job_transition_allowed((enum job_state)from, (enum job_state)to))
                n += (size_t)snprintf(t + n, sizeof t - n, "[%d]=true,", to);
        n += (size_t)snprintf(t + n, sizeof t - n, "},");
    }
    snprintf(t + n, sizeof t - n, "}\n");
    return t;
}

static void build_scripts(void)
{
    const char *table = transition_table();
    for (int i = 0; i < S_COUNT; i++) {
        size_t len = strlen(table) + strlen(redis_lua_prelude) + strlen(bodies[i]) + 1;
        scripts[i] = malloc(len);
        if (!scripts[i])
            abort();
        snprintf(scripts[i], len, "%s%s%s", table, redis_lua_prelude, bodies[i]);
    }
}

/* Says once per outage (per process) that Redis is gone. */
static void outage(struct redis_store *s, const char *why)
{
    if (!atomic_exchange(&outage_logged, 1))
        log_warn("redis %s:%d: connection lost (%s); answering 503 until it is back", s->host,
                 s->port, why);
}

void redis_drop(struct redis_store *s, const char *why)
{
    if (s->c) {
        outage(s, why);
        redisFree(s->c);
    }
    s->c = NULL;
}

/* Loads the scripts on this connection, learning their SHA1s. */
static int load_scripts(struct redis_store *s)
{
    for (int i = 0; i < S_COUNT; i++) {
        redisReply *r = redisCommand(s->c, "SCRIPT LOAD %s", scripts[i]);
        int ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
        if (ok)
            memcpy(s->sha[i], r->str, 41);
        else if (r && r->type == REDIS_REPLY_ERROR)
            log_error("redis: cannot load script %d: %s", i, r->str);
        freeReplyObject(r);
        if (!ok)
            return -1;
    }
    return 0;
}

static int setup_connection(struct redis_store *s)
{
    redisReply *r = NULL;
    if (s->db && (!(r = redisCommand(s->c, "SELECT %d", s->db)) || r->type == REDIS_REPLY_ERROR)) {
        freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    r = redisCommand(s->c, "XGROUP CREATE ds:queue workers 0 MKSTREAM");
    int ok = r && (r->type != REDIS_REPLY_ERROR || strstr(r->str, "BUSYGROUP"));
    freeReplyObject(r);
    return ok ? load_scripts(s) : -1;
}

/* Makes sure there is a connection; DS_E_UNAVAILABLE at once when Redis is
 * down and the next reconnect attempt is not due. */
int redis_ensure(struct redis_store *s)
{
    if (s->c)
        return 0;
    int64_t now = clock_mono_ms();
    if (now < s->retry_at)
        return DS_E_UNAVAILABLE;
    s->retry_at = now + 500;
    struct timeval connect_tv = {1, 0}, cmd_tv = {2, 0};
    s->c = redisConnectWithTimeout(s->host, s->port, connect_tv);
    if (!s->c || s->c->err || redisSetTimeout(s->c, cmd_tv) || setup_connection(s)) {
        if (s->c)
            redisFree(s->c);
        s->c = NULL;
        return DS_E_UNAVAILABLE;
    }
    if (atomic_exchange(&outage_logged, 0))
        log_info("redis %s:%d: connected again", s->host, s->port);
    return 0;
}

bool redis_loading(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "LOADING", 7);
}

/* A reply, or NULL (unavailable) for one that says Redis is still loading
 * its data after a restart: not an answer, only a reason to wait. */
static redisReply *answer(redisReply *r)
{
    if (!redis_loading(r))
        return r;
    freeReplyObject(r);
    return NULL;
}

/* Sends a command formatted by hiredis and reads its reply; NULL when Redis
 * is unavailable. A command that fails on a connection made earlier is tried
 * once more on a new one: after a Redis restart every idle connection is
 * stale, and that is neither a reason to fail a request nor an outage to
 * log. Caller frees the reply. */
static redisReply *send_formatted(struct redis_store *s, const char *cmd, size_t len)
{
    char why[128] = "";
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh = !s->c;
        if (redis_ensure(s)) {
            if (*why) /* the stale connection's retry cannot connect either */
                outage(s, why);
            return NULL;
        }
        void *r = NULL;
        if (redisAppendFormattedCommand(s->c, cmd, len) == REDIS_OK &&
            redisGetReply(s->c, &r) == REDIS_OK)
            return answer(r);
        snprintf(why, sizeof why, "%s", s->c->errstr);
        if (fresh) {
            redis_drop(s, why);
            return NULL;
        }
        redisFree(s->c); /* stale: quietly, a new one is tried next */
        s->c = NULL;
        s->retry_at = 0;
    }
    return NULL;
}

redisReply *redis_run_formatted(struct redis_store *s, const char *cmd, size_t len)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        redisReply *r = send_formatted(s, cmd, len);
        if (!redis_noscript(r))
            return r;
        freeReplyObject(r);
        if (load_scripts(s))
            return NULL;
    }
    return NULL;
}

bool redis_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8);
}

char *redis_format_script(const struct redis_store *s, enum script which, const char *id,
                          const char *extra_key, int nargs, const char **args, size_t *len)
{
    char job[80], events[80];
    snprintf(job, sizeof job, "ds:{%s}:job", id);
    snprintf(events, sizeof events, "ds:{%s}:events", id);
    const char **argv = malloc((size_t)(9 + nargs) * sizeof *argv);
    if (!argv)
        return NULL;
    const char *head[] = {"EVALSHA", s->sha[which], extra_key ? "6" : "5", job, events, "ds:queue",
                          "ds:jobs", "ds:expiry"};
    int argc = 8;
    memcpy(argv, head, sizeof head);
    if (extra_key)
        argv[argc++] = extra_key;
    memcpy(argv + argc, args, (size_t)nargs * sizeof *args);
    argc += nargs;
    char *cmd = NULL;
    long long n = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    free(argv);
    *len = n > 0 ? (size_t)n : 0;
    return n > 0 ? cmd : NULL;
}

redisReply *redis_run(struct redis_store *s, enum script which, const char *id,
                      const char *extra_key, int nargs, const char **args)
{
    size_t len;
    char *cmd = redis_format_script(s, which, id, extra_key, nargs, args, &len);
    redisReply *r = cmd ? redis_run_formatted(s, cmd, len) : NULL;
    redisFreeCommand(cmd);
    return r;
}

/* The first element of a script's array reply, or "" */
const char *redis_code(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return "";
    return r->element[0]->str;
}

int redis_code_rc(const char *code)
{
    static const struct {
        const char *code;
        int rc;
    } map[] = {{"ok", 0},
               {"notfound", DS_E_NOTFOUND},
               {"conflict", DS_E_CONFLICT},
               {"lease_lost", DS_E_LEASE_LOST},
               {"cancelled", DS_E_CANCELLED},
               {"exists", DS_E_EXISTS},
               {"mismatch", DS_E_IDEM_MISMATCH}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(code, map[i].code))
            return map[i].rc;
    log_error("redis: unexpected script reply '%s'", code);
    return DS_E_IO;
}

/* Maps a script reply to a DS code; logs script errors. */
int redis_reply_rc(const redisReply *r)
{
    if (!r)
        return DS_E_UNAVAILABLE;
    if (r->type == REDIS_REPLY_ERROR) {
        log_error("redis: script failed: %s", r->str);
        return DS_E_IO;
    }
    return redis_code_rc(redis_code(r));
}

int redis_parse_location(struct redis_store *s, const char *loc)
{
    char host[256] = "127.0.0.1";
    int port = 6379, db = 0, n = 0;
    if (*loc && sscanf(loc, "%255[^:/]%n", host, &n) < 1)
        return DS_E_INVALID;
    loc += n;
    if (*loc == ':' && sscanf(loc, ":%d%n", &port, &n) == 1)
        loc += n;
    if (*loc == '/' && sscanf(loc, "/%d%n", &db, &n) == 1)
        loc += n;
    if (*loc || port < 1 || port > 65535 || db < 0)
        return DS_E_INVALID;
    snprintf(s->host, sizeof s->host, "%s", host);
    s->port = port;
    s->db = db;
    return 0;
}

/* A command from a format; NULL when unavailable (retried like send_formatted()). */
redisReply *redis_fmt(struct redis_store *s, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, format, ap);
    va_end(ap);
    redisReply *r = len > 0 ? send_formatted(s, cmd, (size_t)len) : NULL;
    redisFreeCommand(cmd);
    return r;
}

void redis_scripts_init(void)
{
    pthread_once(&scripts_once, build_scripts);
}
