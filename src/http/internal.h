/* Structures shared by the files of src/http/ and nobody else. */
#ifndef DS_HTTP_INTERNAL_H
#define DS_HTTP_INTERNAL_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "http/http.h"

#define HTTP_MAX_URL        8192
#define HTTP_MAX_HEADERS    100
#define HTTP_MAX_HEADER_SZ  16384
#define HTTP_MAX_PIPELINED  65536   /* bytes buffered while a request is being served */
#define HTTP_MAX_STREAM_LAG 1048576 /* unsent stream bytes before a slow reader is dropped */
#define HTTP_WRITE_TIMEOUT  30

enum req_state { REQ_READING, REQ_HANDLING, REQ_PARKED, REQ_STREAMING, REQ_DONE };

struct http_request {
    struct http_conn *conn;
    struct http_loop *loop;
    enum req_state state;
    char method[16];
    char *url; /* owned; the raw request target */
    size_t url_len;
    char *path, *query; /* owned, split from url */
    char *hbuf;         /* owned; "name\0value\0" pairs */
    size_t hlen, hcap;
    struct {
        size_t name, value; /* offsets into hbuf */
    } hdr[HTTP_MAX_HEADERS];
    size_t n_hdr;
    int in_field; /* 1 while reading a header name */
    char *body;   /* owned */
    size_t body_len, body_cap;
    char id[96];
    int route; /* the route's index + 1; 0 = unmatched (the calloc'd default) */
    int status;
    int error_status; /* set by parser callbacks: the response to give */
    char error_detail[160];
    int keep_alive;
    struct evbuffer *extra; /* owned; extra response header lines */
    http_hook hook;
    void *hook_ctx;
};

struct http_conn {
    struct http_loop *loop;
    struct bufferevent *bev;
    http_parser parser;
    struct http_request *req; /* being read or served; NULL between requests */
    struct event *deadline;   /* the whole next request must arrive before this */
    int closing;              /* free once the output is flushed */
    int in_parse;             /* inside conn_parse(): do not recurse */
    struct http_conn *prev, *next;
};

struct http_loop {
    struct http_server *srv;
    int index;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *drain_ev, *stop_ev;
    pthread_t thread;
    void *data;
    struct http_conn *conns;
    int draining;
    time_t date_sec;
    char date[40];
    uint64_t counter;
};

struct http_server {
    struct http_server_config cfg;
    char name[128];
    char id_prefix[12];
    int port;
    int n;
    struct http_loop *loops;
};

/* conn.c */
void conn_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                 void *arg);
void conn_free(struct http_conn *c);
void conn_request_done(struct http_conn *c);
void conn_drain(struct http_conn *c);

/* response.c */
void req_free(struct http_request *req);
const char *loop_date(struct http_loop *loop);

#endif
