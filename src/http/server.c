/* The server's threads and listeners.
 *
 * DESIGN
 * http_server_start() builds every loop on the calling thread (event base,
 * SO_REUSEPORT listener on the shared port, the application's per-loop data),
 * so a bind error is reported before anything runs; then one thread per loop
 * runs event_base_dispatch(). The kernel spreads new connections over the
 * listeners. Drain and stop are events activated from the main thread and run
 * on each loop's own thread, so connection state is only ever touched by the
 * thread that owns it. */
#include <arpa/inet.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"
#include "util/log.h"

static void *loop_thread(void *arg)
{
    struct http_loop *loop = arg;
    event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct http_loop *loop = arg;
    (void)fd, (void)what;
    loop->draining = 1;
    if (loop->listener) {
        evconnlistener_free(loop->listener);
        loop->listener = NULL;
    }
    for (struct http_conn *c = loop->conns, *next; c; c = next) {
        next = c->next;
        conn_drain(c);
    }
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct http_loop *loop = arg;
    (void)fd, (void)what;
    while (loop->conns)
        conn_free(loop->conns);
    if (loop->listener) {
        evconnlistener_free(loop->listener);
        loop->listener = NULL;
    }
    event_base_loopbreak(loop->base);
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss, int *len)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    const char *h = !strcmp(host, "localhost") ? "127.0.0.1" : host;
    if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
        return 0;
    }
    char h6[64];
    snprintf(h6, sizeof h6, "%s", h[0] == '[' ? h + 1 : h);
    char *close = strchr(h6, ']');
    if (close)
        *close = '\0';
    if (inet_pton(AF_INET6, h6, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 0;
    }
    return -1;
}

static int bound_port(struct evconnlistener *l)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &len);
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

static int loop_setup(struct http_server *srv, struct http_loop *loop, int index)
{
    struct sockaddr_storage ss;
    int len;
    loop->srv = srv;
    loop->index = index;
    loop->base = event_base_new();
    if (!loop->base)
        return -1;
    if (resolve(srv->cfg.host, srv->port, &ss, &len)) {
        log_error("cannot listen on '%s': not an IP address", srv->cfg.host);
        return -1;
    }
    unsigned flags = LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE;
    loop->listener = evconnlistener_new_bind(loop->base, conn_accept, loop, flags, 1024,
                                             (struct sockaddr *)&ss, len);
    if (!loop->listener) {
        log_error("cannot listen on %s:%d: %s", srv->cfg.host, srv->port,
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    srv->port = bound_port(loop->listener);
    loop->drain_ev = event_new(loop->base, -1, 0, on_drain, loop);
    loop->stop_ev = event_new(loop->base, -1, 0, on_stop, loop);
    if (!loop->drain_ev || !loop->stop_ev)
        return -1;
    return srv->cfg.loop_init ? srv->cfg.loop_init(loop, srv->cfg.app) : 0;
}

static void loop_teardown(struct http_loop *loop)
{
    if (loop->data && loop->srv->cfg.loop_fini)
        loop->srv->cfg.loop_fini(loop);
    if (loop->listener)
        evconnlistener_free(loop->listener);
    if (loop->drain_ev)
        event_free(loop->drain_ev);
    if (loop->stop_ev)
        event_free(loop->stop_ev);
    if (loop->base)
        event_base_free(loop->base);
}

struct http_server *http_server_start(const struct http_server_config *cfg)
{
    struct http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->cfg = *cfg;
    snprintf(srv->name, sizeof srv->name, "%s", cfg->name);
    srv->cfg.name = srv->name;
    snprintf(srv->id_prefix, sizeof srv->id_prefix, "%08x", randombytes_random());
    srv->port = cfg->port;
    srv->loops = calloc((size_t)cfg->threads, sizeof *srv->loops);
    int rc = srv->loops ? 0 : -1;
    for (int i = 0; !rc && i < cfg->threads; i++, srv->n++)
        rc = loop_setup(srv, &srv->loops[i], i);
    for (int i = 0; !rc && i < srv->n; i++)
        rc = pthread_create(&srv->loops[i].thread, NULL, loop_thread, &srv->loops[i]);
    if (rc) {
        for (int i = 0; i < srv->n; i++)
            loop_teardown(&srv->loops[i]);
        free(srv->loops);
        free(srv);
        return NULL;
    }
    return srv;
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

void http_server_drain(struct http_server *srv)
{
    for (int i = 0; i < srv->n; i++)
        event_active(srv->loops[i].drain_ev, 0, 0);
}

void http_server_stop(struct http_server *srv)
{
    if (!srv)
        return;
    for (int i = 0; i < srv->n; i++)
        event_active(srv->loops[i].stop_ev, 0, 0);
    for (int i = 0; i < srv->n; i++) {
        pthread_join(srv->loops[i].thread, NULL);
        loop_teardown(&srv->loops[i]);
    }
    free(srv->loops);
    free(srv);
}

void *http_loop_data(struct http_loop *loop)
{
    return loop->data;
}

void http_loop_set_data(struct http_loop *loop, void *data)
{
    loop->data = data;
}

struct event_base *http_loop_base(struct http_loop *loop)
{
    return loop->base;
}
