/* One client connection: reading requests with http-parser, and its life.
 *
 * DESIGN
 * A connection alternates between reading a request and serving it. While
 * reading, bytes go through http_parser_execute(); the parser callbacks copy
 * the target, headers and body into the request, each with a cap (414, 431,
 * 413 before any body byte is read when Content-Length is too big). When a
 * message completes the parser is paused and the request dispatched; bytes
 * that arrive meanwhile wait in the input buffer (pipelining) and are parsed
 * after the answer. One deadline timer covers the whole of each request, so
 * a client that trickles bytes is cut off (408) as surely as one that stalls;
 * between requests the same timer closes idle keep-alive connections. */
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"

static int reject(http_parser *p, int status, const char *detail)
{
    struct http_conn *c = p->data;
    c->req->error_status = status;
    snprintf(c->req->error_detail, sizeof c->req->error_detail, "%s", detail);
    return -1;
}

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 256;
    while (ncap < need)
        ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (!nb)
        return -1;
    *buf = nb;
    *cap = ncap;
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = p->data;
    if (!c->req) {
        c->req = calloc(1, sizeof *c->req);
        if (!c->req)
            return -1;
        c->req->conn = c;
        c->req->loop = c->loop;
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_request *r = ((struct http_conn *)p->data)->req;
    size_t cap = r->url ? r->url_len + 1 : 0;
    if (r->url_len + len > HTTP_MAX_URL)
        return reject(p, 414, "the request target is longer than 8192 bytes");
    if (grow(&r->url, &cap, r->url_len + len + 1))
        return reject(p, 500, "out of memory");
    memcpy(r->url + r->url_len, at, len);
    r->url_len += len;
    r->url[r->url_len] = '\0';
    return 0;
}

static int hbuf_add(http_parser *p, const char *at, size_t len)
{
    struct http_request *r = ((struct http_conn *)p->data)->req;
    if (r->hlen + len + 1 > HTTP_MAX_HEADER_SZ)
        return reject(p, 431, "the request headers are larger than 16384 bytes");
    if (grow(&r->hbuf, &r->hcap, r->hlen + len + 1))
        return reject(p, 500, "out of memory");
    memcpy(r->hbuf + r->hlen, at, len);
    r->hlen += len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_request *r = ((struct http_conn *)p->data)->req;
    if (!r->in_field) { /* a new header starts: close the previous value */
        if (r->n_hdr && hbuf_add(p, "", 1))
            return -1;
        if (r->n_hdr == HTTP_MAX_HEADERS)
            return reject(p, 431, "the request has more than 100 headers");
        r->hdr[r->n_hdr++].name = r->hlen;
        r->in_field = 1;
    }
    return hbuf_add(p, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_request *r = ((struct http_conn *)p->data)->req;
    if (r->in_field) {
        if (hbuf_add(p, "", 1))
            return -1;
        r->hdr[r->n_hdr - 1].value = r->hlen;
        r->in_field = 0;
    }
    return hbuf_add(p, at, len);
}

static int split_url(struct http_request *r)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (!r->url || http_parser_parse_url(r->url, r->url_len, 0, &u) ||
        !(u.field_set & (1 << UF_PATH)))
        return -1;
    r->path = strndup(r->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    if (u.field_set & (1 << UF_QUERY))
        r->query = strndup(r->url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    return r->path ? 0 : -1;
}

static void send_continue_if_expected(struct http_conn *c)
{
    const char *expect = http_req_header(c->req, "Expect");
    if (expect && !strcasecmp(expect, "100-continue"))
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    struct http_request *r = c->req;
    if (r->in_field && hbuf_add(p, "", 1)) /* a last header with no value */
        return -1;
    if (r->in_field)
        r->hdr[r->n_hdr - 1].value = r->hlen;
    if (r->n_hdr && hbuf_add(p, "", 1))
        return -1;
    r->in_field = 0;
    snprintf(r->method, sizeof r->method, "%s", http_method_str((enum http_method)p->method));
    if (split_url(r))
        return reject(p, 400, "the request target is not a valid path");
    size_t max = c->loop->srv->cfg.max_body;
    if (p->content_length != ULLONG_MAX && p->content_length > max) {
        char why[160];
        snprintf(why, sizeof why, "the request body is %llu bytes; the limit is %zu bytes",
                 (unsigned long long)p->content_length, max);
        return reject(p, 413, why);
    }
    if (p->content_length != ULLONG_MAX && p->content_length > 0)
        send_continue_if_expected(c);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    struct http_request *r = c->req;
    size_t max = c->loop->srv->cfg.max_body;
    if (r->body_len + len > max) {
        char why[160];
        snprintf(why, sizeof why, "the request body is over the limit of %zu bytes", max);
        return reject(p, 413, why);
    }
    if (grow(&r->body, &r->body_cap, r->body_len + len + 1))
        return reject(p, 500, "out of memory");
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    c->req->keep_alive = http_should_keep_alive(p);
    c->req->state = REQ_HANDLING;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void make_request_id(struct http_conn *c)
{
    struct http_request *r = c->req;
    const char *given = http_req_header(r, "X-Request-Id");
    size_t n = given ? strlen(given) : 0;
    bool ok = n > 0 && n < 80;
    for (size_t i = 0; ok && i < n; i++)
        ok = given[i] > 32 && given[i] < 127;
    if (ok)
        memcpy(r->id, given, n + 1);
    else
        snprintf(r->id, sizeof r->id, "%s-%d-%llu", c->loop->srv->id_prefix, c->loop->index,
                 (unsigned long long)++c->loop->counter);
}

static void arm_deadline(struct http_conn *c)
{
    struct timeval tv = {c->loop->srv->cfg.request_timeout_s, 0};
    event_add(c->deadline, &tv);
}

static void dispatch(struct http_conn *c)
{
    event_del(c->deadline);
    make_request_id(c);
    c->loop->srv->cfg.dispatch(c->req);
}

/* Answers a request the parser refused, then closes the connection. */
static void refuse(struct http_conn *c, int status, const char *detail)
{
    if (!c->req && on_message_begin(&c->parser)) {
        conn_free(c);
        return;
    }
    c->req->keep_alive = 0;
    c->req->state = REQ_HANDLING;
    if (!c->req->path)
        c->req->path = strdup("/");
    make_request_id(c);
    http_problem(c->req, status, "%s", detail);
}

static void parse_error(struct http_conn *c)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    char detail[200];
    if (c->req && c->req->error_status) {
        refuse(c, c->req->error_status, c->req->error_detail);
        return;
    }
    snprintf(detail, sizeof detail, "malformed HTTP request: %s", http_errno_description(e));
    refuse(c, 400, detail);
}

/* Feeds buffered input to the parser while a request is being read. */
static void conn_parse(struct http_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->in_parse = 1;
    while (!c->closing && (!c->req || c->req->state == REQ_READING) && evbuffer_get_length(in)) {
        size_t n = evbuffer_get_contiguous_space(in);
        const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        size_t used = http_parser_execute(&c->parser, &settings, data, n);
        evbuffer_drain(in, used);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            dispatch(c);
        } else if (e != HPE_OK) {
            parse_error(c);
            break;
        }
    }
    c->in_parse = 0;
    if (c->closing && !evbuffer_get_length(bufferevent_get_output(c->bev)))
        conn_free(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct http_conn *c = arg;
    if (c->req && c->req->state != REQ_READING) {
        if (evbuffer_get_length(bufferevent_get_input(bev)) > HTTP_MAX_PIPELINED)
            bufferevent_disable(bev, EV_READ); /* wait until the current answer is out */
        return;
    }
    conn_parse(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct http_conn *c = arg;
    (void)bev;
    if (c->closing && !c->in_parse)
        conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev, (void)what; /* EOF, error or write timeout: the client is gone */
    conn_free(arg);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *c = arg;
    (void)fd, (void)what;
    if (c->req && c->req->state == REQ_READING) {
        char detail[120];
        snprintf(detail, sizeof detail, "the request did not arrive completely within %d s",
                 c->loop->srv->cfg.request_timeout_s);
        refuse(c, 408, detail);
    } else {
        conn_free(c); /* an idle keep-alive connection */
    }
}

void conn_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                 void *arg)
{
    struct http_loop *loop = arg;
    (void)l, (void)sa, (void)len;
    struct http_conn *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->loop = loop;
    c->bev = bufferevent_socket_new(loop->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->deadline = evtimer_new(loop->base, on_deadline, c);
    c->next = loop->conns;
    if (loop->conns)
        loop->conns->prev = c;
    loop->conns = c;
    if (!c->bev || !c->deadline) {
        if (!c->bev)
            evutil_closesocket(fd);
        conn_free(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    struct timeval wt = {HTTP_WRITE_TIMEOUT, 0};
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    arm_deadline(c);
}

void conn_free(struct http_conn *c)
{
    if (c->req) {
        struct http_request *r = c->req;
        c->req = NULL;
        if (r->hook && (r->state == REQ_PARKED || r->state == REQ_STREAMING))
            r->hook(r, HTTP_HOOK_ABORT, r->hook_ctx);
        req_free(r);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        c->loop->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->deadline)
        event_free(c->deadline);
    if (c->bev)
        bufferevent_free(c->bev);
    free(c);
}

/* Called by response.c once the answer to c->req is queued for writing. */
void conn_request_done(struct http_conn *c)
{
    struct http_request *r = c->req;
    int keep = r->keep_alive && !c->loop->draining;
    if (c->loop->srv->cfg.on_complete)
        c->loop->srv->cfg.on_complete(r);
    c->req = NULL;
    req_free(r);
    if (!keep) {
        c->closing = 1;
        bufferevent_disable(c->bev, EV_READ);
        if (!c->in_parse && !evbuffer_get_length(bufferevent_get_output(c->bev)))
            conn_free(c);
        return;
    }
    arm_deadline(c);
    bufferevent_enable(c->bev, EV_READ);
    if (!c->in_parse)
        conn_parse(c);
}

/* The server is draining: parked requests and streams are told to finish. */
void conn_drain(struct http_conn *c)
{
    struct http_request *r = c->req;
    if (r && r->hook && (r->state == REQ_PARKED || r->state == REQ_STREAMING))
        r->hook(r, HTTP_HOOK_DRAIN, r->hook_ctx);
}
