/* Requests' accessors and every way of answering one: whole responses,
 * problem documents, parked requests and streams. */
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/internal.h"

const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    }
    return "Unknown";
}

void req_free(struct http_request *req)
{
    if (!req)
        return;
    free(req->url);
    free(req->path);
    free(req->query);
    free(req->hbuf);
    free(req->body);
    if (req->extra)
        evbuffer_free(req->extra);
    free(req);
}

/* The Date header value, rendered once per second per loop. */
const char *loop_date(struct http_loop *loop)
{
    time_t now = time(NULL);
    if (now != loop->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(loop->date, sizeof loop->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        loop->date_sec = now;
    }
    return loop->date;
}

struct http_loop *http_req_loop(struct http_request *req)
{
    return req->loop;
}

const char *http_req_method(const struct http_request *req)
{
    return req->method;
}

const char *http_req_path(const struct http_request *req)
{
    return req->path;
}

const char *http_req_header(const struct http_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_hdr; i++)
        if (!strcasecmp(req->hbuf + req->hdr[i].name, name))
            return req->hbuf + req->hdr[i].value;
    return NULL;
}

const char *http_req_body(const struct http_request *req, size_t *len)
{
    *len = req->body_len;
    return req->body ? req->body : "";
}

void http_req_set_route(struct http_request *req, int index)
{
    req->route = index + 1;
}

int http_req_route(const struct http_request *req)
{
    return req->route - 1;
}

int http_req_status(const struct http_request *req)
{
    return req->status;
}

int http_req_param(const struct http_request *req, const char *name, char *out, size_t cap)
{
    if (!req->query)
        return 0;
    struct evkeyvalq params;
    if (evhttp_parse_query_str(req->query, &params) != 0)
        return -1;
    const char *v = evhttp_find_header(&params, name);
    int rc = 0;
    if (v) {
        rc = strlen(v) < cap ? 1 : -1;
        if (rc == 1)
            strcpy(out, v);
    }
    evhttp_clear_headers(&params);
    return rc;
}

void http_add_header(struct http_request *req, const char *name, const char *fmt, ...)
{
    if (!req->extra && !(req->extra = evbuffer_new()))
        return;
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_printf(req->extra, "%s: ", name);
    evbuffer_add_vprintf(req->extra, fmt, ap);
    evbuffer_add(req->extra, "\r\n", 2);
    va_end(ap);
}

/* Writes the status line and headers; content_length < 0 means "streamed". */
static void write_head(struct http_request *req, int status, const char *ctype, long content_length)
{
    struct evbuffer *out = bufferevent_get_output(req->conn->bev);
    int keep = content_length >= 0 && req->keep_alive && !req->loop->draining;
    req->keep_alive = keep;
    req->status = status;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nDate: %s\r\nX-Served-By: %s\r\nX-Request-Id: %s\r\n"
                        "Connection: %s\r\n",
                        status, http_reason(status), loop_date(req->loop), req->loop->srv->name,
                        req->id, keep ? "keep-alive" : "close");
    if (ctype)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
    if (content_length >= 0 && status != 204 && status != 304)
        evbuffer_add_printf(out, "Content-Length: %ld\r\n", content_length);
    if (req->extra)
        evbuffer_add_buffer(out, req->extra);
    evbuffer_add(out, "\r\n", 2);
}

void http_send(struct http_request *req, int status, const char *content_type, const char *body,
               size_t len)
{
    if (status == 204 || status == 304)
        body = NULL, len = 0, content_type = NULL;
    write_head(req, status, content_type, (long)len);
    if (body && len)
        evbuffer_add(bufferevent_get_output(req->conn->bev), body, len);
    req->state = REQ_DONE;
    conn_request_done(req->conn);
}

void http_problem(struct http_request *req, int status, const char *detail_fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, detail_fmt);
    vsnprintf(detail, sizeof detail, detail_fmt, ap);
    va_end(ap);
    json_t *doc =
        json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank", "title", http_reason(status),
                  "status", status, "detail", detail, "instance", req->path ? req->path : "/");
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    http_send(req, status, "application/problem+json", text ? text : "{}", text ? strlen(text) : 2);
    free(text);
}

void http_park(struct http_request *req, http_hook hook, void *ctx)
{
    req->state = REQ_PARKED;
    req->hook = hook;
    req->hook_ctx = ctx;
}

void http_stream_start(struct http_request *req, int status, const char *content_type,
                       http_hook hook, void *ctx)
{
    req->keep_alive = 0;
    write_head(req, status, content_type, -1);
    req->state = REQ_STREAMING;
    req->hook = hook;
    req->hook_ctx = ctx;
}

int http_stream_write(struct http_request *req, const char *data, size_t len)
{
    struct http_conn *c = req->conn;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) + len > HTTP_MAX_STREAM_LAG) {
        /* The reader is too slow: drop what it has not taken, and the stream. */
        req->hook(req, HTTP_HOOK_ABORT, req->hook_ctx);
        req->hook = NULL;
        evbuffer_drain(out, evbuffer_get_length(out));
        req->state = REQ_DONE;
        conn_request_done(c);
        return -1;
    }
    evbuffer_add(out, data, len);
    return 0;
}

void http_stream_end(struct http_request *req)
{
    req->hook = NULL;
    req->state = REQ_DONE;
    conn_request_done(req->conn);
}
