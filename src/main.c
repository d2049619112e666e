/* datasphere: wiring only. config -> store -> watch hub -> workers -> HTTP ->
 * run until SIGTERM/SIGINT -> drain in order -> exit. */
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "config.h"
#include "http/http.h"
#include "store/store.h"
#include "util/log.h"
#include "watch/hub.h"
#include "worker/reaper.h"
#include "worker/worker.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: datasphere COMMAND [options]\n\n"
                 "commands:\n"
                 "  serve    the HTTP API with an in-process worker pool\n"
                 "  worker   the worker pool alone, no HTTP\n\n"
                 "'datasphere COMMAND --help' lists the options of a command.\n");
}

static void on_signal(evutil_socket_t sig, short what, void *base)
{
    (void)what;
    log_info("%s: draining", strsignal((int)sig));
    event_base_loopbreak(base);
}

/* Opens the main thread's store handle (creating the schema) and reads the
 * deployment's shared id key. Returns the handle, or NULL after saying why. */
static store *prepare_store(struct app *app)
{
    store *st = NULL;
    const char *why = NULL;
    int rc = store_open(app->cfg->store, &st, &why);
    if (!rc && (rc = store_id_key(st, app->id_key)) != 0)
        why = "cannot read or create the id key";
    if (!rc)
        return st;
    store_close(st);
    fprintf(stderr, "datasphere: --store %s: %s\n", app->cfg->store, why ? why : "unusable");
    return NULL;
}

static struct http_server *start_http(struct app *app)
{
    const struct config *cfg = app->cfg;
    struct http_server_config hc = {
        .host = cfg->listen_host,
        .port = cfg->listen_port,
        .threads = cfg->http_threads,
        .max_body = (size_t)cfg->max_body,
        .request_timeout_s = cfg->request_timeout,
        .name = cfg->name,
        .dispatch = api_dispatch,
        .loop_init = api_loop_init,
        .loop_fini = api_loop_fini,
        .on_complete = metrics_request,
        .app = app,
    };
    struct http_server *srv = http_server_start(&hc);
    if (srv)
        log_info("listening on http://%s:%d (store %s, %d workers)", cfg->listen_host,
                 http_server_port(srv), cfg->store, cfg->workers);
    return srv;
}

/* Runs until a signal, then shuts down in order: stop taking work, let
 * running jobs finish (or hand them back), close connections. */
static int run(struct app *app, store *st, struct event_base *base)
{
    const struct config *cfg = app->cfg;
    int lease_ms = cfg->lease_seconds * 1000;
    struct watch_hub *hub = watch_hub_start(cfg->store, cfg->role == ROLE_SERVE);
    app->hub = hub;
    struct worker_pool *pool = hub ? worker_pool_start(cfg, hub, cfg->workers) : NULL;
    struct reaper *reaper =
        pool ? reaper_start(base, st, lease_ms, hub, metrics_lease_takeovers) : NULL;
    struct http_server *srv = reaper && cfg->role == ROLE_SERVE ? start_http(app) : NULL;
    int ok = reaper && (srv || cfg->role == ROLE_WORKER);
    if (ok) {
        if (cfg->role == ROLE_WORKER)
            log_info("worker running (store %s, %d workers)", cfg->store, cfg->workers);
        event_base_dispatch(base);
        atomic_store(&app->draining, 1);
    }
    if (srv)
        http_server_drain(srv);
    worker_pool_stop(pool, cfg->drain_seconds * 1000);
    http_server_stop(srv);
    reaper_stop(reaper);
    watch_hub_stop(hub);
    if (ok)
        log_info("stopped");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    enum config_role role;
    if (!strcmp(argv[1], "serve"))
        role = ROLE_SERVE;
    else if (!strcmp(argv[1], "worker"))
        role = ROLE_WORKER;
    else {
        fprintf(stderr, "datasphere: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }
    struct config cfg;
    int rc = config_parse(&cfg, role, argc - 2, argv + 2);
    if (rc)
        return rc == 1 ? 0 : 2;
    log_setup(cfg.name, LOG_INFO);
    if (evthread_use_pthreads() || job_id_setup()) {
        fprintf(stderr, "datasphere: cannot initialise threads or the random generator\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (!strncmp(cfg.store, "memory:", 7))
        log_warn("store memory: keeps jobs in this process only; another instance cannot see "
                 "them and a restart loses them. Use sqlite:PATH or redis:// beyond tests.");
    struct app app = {.cfg = &cfg};
    store *st = prepare_store(&app);
    if (!st)
        return 1;
    struct event_base *base = event_base_new();
    struct event *term = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *intr = evsignal_new(base, SIGINT, on_signal, base);
    evsignal_add(term, NULL);
    evsignal_add(intr, NULL);
    rc = run(&app, st, base);
    event_free(term);
    event_free(intr);
    event_base_free(base);
    store_close(st);
    libevent_global_shutdown();
    return rc;
}
