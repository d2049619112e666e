/* Prometheus metrics: request counters by route and status, SSE clients,
 * lease takeovers (counted here, updated from any thread with atomics), and
 * job counts by status read from the store at scrape time. */
#include <event2/buffer.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

static const int statuses[] = {200, 202, 204, 304, 400, 404, 405, 408, 409,
                               410, 413, 414, 415, 422, 431, 500, 503};
#define N_STATUSES (sizeof statuses / sizeof statuses[0])

/* Row 0: unmatched requests; row i + 1: route i of api.c's table. Last
 * column: statuses not in the list. */
static atomic_ullong requests[API_MAX_ROUTES + 1][N_STATUSES + 1];
static atomic_llong sse_clients;
static atomic_ullong lease_takeovers;

static size_t status_index(int status)
{
    for (size_t i = 0; i < N_STATUSES; i++)
        if (statuses[i] == status)
            return i;
    return N_STATUSES;
}

void metrics_request(const struct http_request *req)
{
    atomic_fetch_add_explicit(
        &requests[http_req_route(req) + 1][status_index(http_req_status(req))], 1,
        memory_order_relaxed);
}

void metrics_sse_clients(int delta)
{
    atomic_fetch_add_explicit(&sse_clients, delta, memory_order_relaxed);
}

void metrics_lease_takeovers(int n)
{
    atomic_fetch_add_explicit(&lease_takeovers, (unsigned long long)n, memory_order_relaxed);
}

/* Requests with row r's status s, summed over the rows that share r's label
 * (two paths may serve one route); 0 if an earlier row has the label. */
static unsigned long long label_total(int r, size_t s)
{
    const char *label = api_route_label(r - 1);
    for (int e = 0; e < r; e++)
        if (!strcmp(api_route_label(e - 1), label))
            return 0;
    unsigned long long n = 0;
    for (int o = r; o <= api_route_count(); o++)
        if (!strcmp(api_route_label(o - 1), label))
            n += atomic_load_explicit(&requests[o][s], memory_order_relaxed);
    return n;
}

static void render_requests(struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP datasphere_http_requests_total HTTP requests answered.\n"
                             "# TYPE datasphere_http_requests_total counter\n");
    for (int r = 0; r <= api_route_count(); r++)
        for (size_t s = 0; s <= N_STATUSES; s++) {
            unsigned long long n = label_total(r, s);
            if (!n)
                continue;
            char code[8];
            snprintf(code, sizeof code, "%d", s < N_STATUSES ? statuses[s] : 0);
            evbuffer_add_printf(out,
                                "datasphere_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
                                api_route_label(r - 1), s < N_STATUSES ? code : "other", n);
        }
}

char *metrics_render(store *st, size_t *len)
{
    struct evbuffer *out = evbuffer_new();
    if (!out)
        return NULL;
    render_requests(out);
    int64_t counts[JOB_N_STATES];
    if (store_counts(st, counts) == 0) {
        evbuffer_add_printf(out, "# HELP datasphere_jobs Jobs in the store by status.\n"
                                 "# TYPE datasphere_jobs gauge\n");
        for (int s = 0; s < JOB_N_STATES; s++)
            evbuffer_add_printf(out, "datasphere_jobs{status=\"%s\"} %lld\n",
                                job_state_name((enum job_state)s), (long long)counts[s]);
        evbuffer_add_printf(out,
                            "# HELP datasphere_queue_depth Jobs waiting for a worker.\n"
                            "# TYPE datasphere_queue_depth gauge\n"
                            "datasphere_queue_depth %lld\n",
                            (long long)counts[JOB_QUEUED]);
    }
    evbuffer_add_printf(
        out,
        "# HELP datasphere_lease_takeovers_total Jobs taken from a worker whose lease expired.\n"
        "# TYPE datasphere_lease_takeovers_total counter\n"
        "datasphere_lease_takeovers_total %llu\n"
        "# HELP datasphere_sse_clients Open event streams on this instance.\n"
        "# TYPE datasphere_sse_clients gauge\n"
        "datasphere_sse_clients %lld\n",
        atomic_load(&lease_takeovers), (long long)atomic_load(&sse_clients));
    *len = evbuffer_get_length(out);
    char *text = malloc(*len + 1);
    if (text) {
        evbuffer_remove(out, text, *len);
        text[*len] = '\0';
    }
    evbuffer_free(out);
    return text;
}
