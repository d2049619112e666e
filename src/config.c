/* Flags and environment variables -> struct config.
 *
 * Every option lives in one table (options[] below) with its flag, its
 * variable, its default and its parser; --help is printed from the same
 * table, so the documentation cannot drift from the behaviour. Bad values are
 * reported as one line that names the flag, and the caller exits with 2. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum opt_kind { OPT_STR, OPT_INT, OPT_BOOL, OPT_LISTEN };

struct option_def {
    const char *flag; /* without the leading "--" */
    const char *env;
    const char *def; /* NULL: computed (see defaults()) */
    enum opt_kind kind;
    size_t offset; /* into struct config */
    size_t size;   /* for OPT_STR: buffer size */
    int min, max;  /* for OPT_INT */
    bool serve_only;
    const char *help;
};

#define STR(field)                                                                                 \
    OPT_STR, offsetof(struct config, field), sizeof(((struct config *)0)->field), 0, 0
#define INT(field, lo, hi) OPT_INT, offsetof(struct config, field), 0, lo, hi

static const struct option_def options[] = {
    {"listen", "DATASPHERE_LISTEN", "127.0.0.1:8080", OPT_LISTEN, 0, 0, 0, 0, true,
     "HOST:PORT to serve HTTP on (PORT alone also read from $PORT); port 0 picks a free one"},
    {"store", "DATASPHERE_STORE", "sqlite:./datasphere.db", STR(store), false,
     "job store: memory:, sqlite:PATH or redis://HOST:PORT[/DB]"},
    {"name", "DATASPHERE_NAME", NULL, STR(name), false,
     "instance name sent as X-Served-By (default hostname:pid)"},
    {"workers", "DATASPHERE_WORKERS", NULL, INT(workers, 0, 256), false,
     "worker threads running jobs, 0 = API only (default: number of cores)"},
    {"http-threads", "DATASPHERE_HTTP_THREADS", NULL, INT(http_threads, 1, 64), true,
     "event loops serving HTTP (default: number of cores)"},
    {"corpus", "DATASPHERE_CORPUS", "", STR(corpus), false,
     "documents research and chat jobs will read (those job types are not built yet)"},
    {"async-job-mode", "ASYNC_JOB_MODE", "false", OPT_BOOL, offsetof(struct config, async_job_mode),
     0, 0, 0, true, "/chat/stream answers with a job instead of a stream (endpoint not built yet)"},
    {"lease-seconds", "DATASPHERE_LEASE_SECONDS", "30", INT(lease_seconds, 1, 3600), false,
     "a worker that stops heartbeating loses its job after this"},
    {"job-ttl", "DATASPHERE_JOB_TTL", "86400", INT(job_ttl, 1, 30 * 86400), false,
     "seconds a finished job is kept"},
    {"max-attempts", "DATASPHERE_MAX_ATTEMPTS", "3", INT(max_attempts, 1, 100), false,
     "default attempts before a job whose workers die fails with worker_lost"},
    {"drain-seconds", "DATASPHERE_DRAIN_SECONDS", "10", INT(drain_seconds, 0, 3600), false,
     "on SIGTERM, how long running jobs may finish before their lease is given back"},
    {"max-body", "DATASPHERE_MAX_BODY", "1048576", INT(max_body, 1024, 64 << 20), true,
     "largest request body in bytes; larger is answered 413"},
    {"request-timeout", "DATASPHERE_REQUEST_TIMEOUT", "10", INT(request_timeout, 1, 600), true,
     "seconds a client may take to send one request, and idle keep-alive time"},
    {"sse-heartbeat", "DATASPHERE_SSE_HEARTBEAT", "15", INT(sse_heartbeat, 1, 60), true,
     "seconds of silence after which an SSE stream gets a keep-alive comment"},
    {"llm-url", "LLM_BASE_URL", "", STR(llm_url), false,
     "OpenAI-compatible endpoint for research and chat (not used yet)"},
    {"llm-api-key", "LLM_API_KEY", "", STR(llm_api_key), false, "API key for --llm-url"},
    {"llm-model", "LLM_MODEL", "", STR(llm_model), false, "model name for --llm-url"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

static const char *role_name(enum config_role role)
{
    return role == ROLE_SERVE ? "serve" : "worker";
}

static int bad(const struct option_def *o, const char *why, const char *value)
{
    fprintf(stderr, "datasphere: --%s: %s, got '%s'\n", o->flag, why, value);
    return 2;
}

static int set_listen(struct config *cfg, const struct option_def *o, const char *v)
{
    const char *colon = strrchr(v, ':');
    const char *port = colon ? colon + 1 : v;
    size_t hostlen = colon ? (size_t)(colon - v) : 0;
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || errno || p < 0 || p > 65535)
        return bad(o, "expected HOST:PORT with a port from 0 to 65535", v);
    if (hostlen >= sizeof cfg->listen_host)
        return bad(o, "host name too long", v);
    if (colon) {
        memcpy(cfg->listen_host, v, hostlen);
        cfg->listen_host[hostlen] = '\0';
    }
    if (cfg->listen_host[0] == '\0')
        strcpy(cfg->listen_host, "0.0.0.0");
    cfg->listen_port = (int)p;
    return 0;
}

static int set_value(struct config *cfg, const struct option_def *o, const char *v)
{
    char *field = (char *)cfg + o->offset;
    if (o->kind == OPT_LISTEN)
        return set_listen(cfg, o, v);
    if (o->kind == OPT_STR) {
        if (strlen(v) >= o->size)
            return bad(o, "value too long", v);
        strcpy(field, v);
        return 0;
    }
    if (o->kind == OPT_BOOL) {
        bool t = !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes");
        bool f = !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !*v;
        if (!t && !f)
            return bad(o, "expected true or false", v);
        *(bool *)field = t;
        return 0;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno || n < o->min || n > o->max) {
        char why[96];
        snprintf(why, sizeof why, "expected an integer from %d to %d", o->min, o->max);
        return bad(o, why, v);
    }
    *(int *)field = (int)n;
    return 0;
}

static void defaults(struct config *cfg)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cores > 0 ? (int)cores : 1;
    cfg->http_threads = cfg->workers;
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(cfg->name, sizeof cfg->name, "%s:%d", host, (int)getpid());
}

static const struct option_def *find_flag(const char *arg, const char **inline_value)
{
    *inline_value = NULL;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        size_t n = strlen(options[i].flag);
        if (strncmp(arg, options[i].flag, n) != 0)
            continue;
        if (arg[n] == '\0')
            return &options[i];
        if (arg[n] == '=') {
            *inline_value = arg + n + 1;
            return &options[i];
        }
    }
    return NULL;
}

static int apply_defaults_and_env(struct config *cfg, enum config_role role)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        if (o->serve_only && role != ROLE_SERVE)
            continue;
        int rc = o->def ? set_value(cfg, o, o->def) : 0;
        const char *env = getenv(o->env);
        if (!rc && o->kind == OPT_LISTEN && !env && getenv("PORT")) {
            char buf[300];
            snprintf(buf, sizeof buf, "%s:%s", cfg->listen_host, getenv("PORT"));
            rc = set_value(cfg, o, buf);
        }
        if (!rc && env)
            rc = set_value(cfg, o, env);
        if (rc)
            return rc;
    }
    return 0;
}

static int apply_flags(struct config *cfg, enum config_role role, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i], *value;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            config_usage(role, stdout);
            return 1;
        }
        const struct option_def *o = strncmp(arg, "--", 2) ? NULL : find_flag(arg + 2, &value);
        if (!o || (o->serve_only && role != ROLE_SERVE)) {
            fprintf(stderr, "datasphere %s: unknown option '%s' (see --help)\n", role_name(role),
                    arg);
            return 2;
        }
        if (!value && o->kind == OPT_BOOL)
            value = "true";
        if (!value && ++i >= argc) {
            fprintf(stderr, "datasphere: --%s: missing value\n", o->flag);
            return 2;
        }
        int rc = set_value(cfg, o, value ? value : argv[i]);
        if (rc)
            return rc;
    }
    return 0;
}

int config_parse(struct config *cfg, enum config_role role, int argc, char **argv)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->role = role;
    defaults(cfg);
    int rc = apply_defaults_and_env(cfg, role);
    return rc ? rc : apply_flags(cfg, role, argc, argv);
}

void config_usage(enum config_role role, FILE *out)
{
    fprintf(out,
            "usage: datasphere %s [options]\n\noptions (flag, environment variable, default):\n",
            role_name(role));
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        if (o->serve_only && role != ROLE_SERVE)
            continue;
        char flag[64];
        snprintf(flag, sizeof flag, "--%s%s", o->flag, o->kind == OPT_BOOL ? "" : " VALUE");
        fprintf(out, "  %-24s %-26s %s\n  %24s %s\n", flag, o->env,
                o->def ? (*o->def ? o->def : "(unset)") : "(see below)", "", o->help);
    }
}
