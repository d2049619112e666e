/* The HTTP/1.1 server: event loops, requests and responses.
 *
 * One struct http_loop per thread, each with its own listening socket on the
 * same port (SO_REUSEPORT) and its own application data (a store handle).
 * Handlers run on the loop thread and must not block. A handler answers at
 * once with http_send()/http_problem(), or parks the request (long-poll) and
 * answers later from the same loop, or turns it into a stream (SSE).
 *
 * Every response carries X-Request-Id and X-Served-By; every error is an RFC
 * 9457 problem document, including the ones this layer produces itself
 * (400 unparsable, 408 too slow, 413 too large, 414, 431). */
#ifndef DS_HTTP_HTTP_H
#define DS_HTTP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct http_request;
struct http_loop;
struct http_server;

typedef void (*http_handler)(struct http_request *req);

/* Why a parked or streaming request is told to stop. */
enum http_hook_event {
    HTTP_HOOK_ABORT, /* the client went away: free your state, do not answer */
    HTTP_HOOK_DRAIN, /* the server is shutting down: answer or end the stream now */
};
typedef void (*http_hook)(struct http_request *req, enum http_hook_event ev, void *ctx);

struct http_server_config {
    const char *host;
    int port; /* 0 = any free port; http_server_port() tells which */
    int threads;
    size_t max_body;
    int request_timeout_s;
    const char *name; /* X-Served-By */
    /* Routes a complete request; runs on the loop thread. */
    http_handler dispatch;
    /* Per-loop set-up and tear-down, on the loop's thread (open/close a store). */
    int (*loop_init)(struct http_loop *loop, void *app);
    void (*loop_fini)(struct http_loop *loop);
    /* Called once per finished request (metrics). May be NULL. */
    void (*on_complete)(const struct http_request *req);
    void *app;
};

/* Binds and starts the loops. Returns NULL after logging why. */
struct http_server *http_server_start(const struct http_server_config *cfg);
/* The bound port (useful when the configured port was 0). */
int http_server_port(const struct http_server *srv);
/* Stops accepting, answers parked requests, ends streams (hooks get DRAIN).
 * Connections stay open for requests already in flight. Any thread. */
void http_server_drain(struct http_server *srv);
/* Closes every connection, stops the loops, joins the threads, frees srv. */
void http_server_stop(struct http_server *srv);

/* Per-loop accessors. */
void *http_loop_data(struct http_loop *loop);
void http_loop_set_data(struct http_loop *loop, void *data);
struct event_base *http_loop_base(struct http_loop *loop);

/* --- the request (valid until it is answered or aborted) --- */
struct http_loop *http_req_loop(struct http_request *req);
const char *http_req_method(const struct http_request *req);
const char *http_req_path(const struct http_request *req);
/* A request header (case-insensitive name), or NULL. */
const char *http_req_header(const struct http_request *req, const char *name);
const char *http_req_body(const struct http_request *req, size_t *len /* OUT */);
/* Set by the router: the index of the matched route in its table (metrics);
 * -1 for a request no route matched. */
void http_req_set_route(struct http_request *req, int index);
int http_req_route(const struct http_request *req);
int http_req_status(const struct http_request *req);
/* Decoded query parameter into out; 1 found, 0 absent, -1 too long. */
int http_req_param(const struct http_request *req, const char *name, char *out, size_t cap);

/* --- answering --- */
/* Adds a header to the coming response (before http_send / stream start). */
void http_add_header(struct http_request *req, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends a whole response and finishes the request. body may be NULL. */
void http_send(struct http_request *req, int status, const char *content_type, const char *body,
               size_t len);
/* Sends an RFC 9457 problem document and finishes the request. */
void http_problem(struct http_request *req, int status, const char *detail_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Keeps the request open without answering; hook is told if it must stop. */
void http_park(struct http_request *req, http_hook hook, void *ctx);
/* Starts a streamed response (no Content-Length; the connection closes at the end). */
void http_stream_start(struct http_request *req, int status, const char *content_type,
                       http_hook hook, void *ctx);
/* Appends to a stream. Returns -1 if the client is too far behind (the
 * stream is then aborted: the hook gets ABORT before this returns). */
int http_stream_write(struct http_request *req, const char *data, size_t len);
/* Ends a stream and finishes the request. */
void http_stream_end(struct http_request *req);

/* The reason phrase of a status code. */
const char *http_reason(int status);

#endif
