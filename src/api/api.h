/* The HTTP API of API.md: the route table, the per-loop context handlers
 * share, and the handlers themselves (one file per resource). */
#ifndef DS_API_API_H
#define DS_API_API_H

#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "http/http.h"
#include "http/router.h"
#include "job/id.h"
#include "store/store.h"

struct watch_hub;

/* Process-wide, read-only after start-up except `draining`. */
struct app {
    const struct config *cfg;
    uint8_t id_key[JOB_ID_KEY_LEN];
    struct watch_hub *hub;
    atomic_int draining;
};

/* One per HTTP loop (thread). */
struct api_loop {
    struct app *app;
    store *st;
    struct route_match match; /* of the request being dispatched */
};

/* The api_loop of the request's thread. */
static inline struct api_loop *api_loop_of(struct http_request *req)
{
    return http_loop_data(http_req_loop(req));
}

/* The route table's size bound, its length, and a route's metrics label
 * ("unmatched" for -1). Several routes may share a label. */
#define API_MAX_ROUTES 32
const char *api_route_label(int index);
int api_route_count(void);

/* http_server_config hooks. */
void api_dispatch(struct http_request *req);
int api_loop_init(struct http_loop *loop, void *app);
void api_loop_fini(struct http_loop *loop);

/* Answers a store failure: 410 for a gone job, 503 when the store is busy or
 * down, 500 otherwise. */
void api_store_error(struct http_request *req, int rc, const char *job_id);

/* Checks the {id} path parameter: 0, or answers 404 and returns -1. */
int api_job_id(struct http_request *req, const char **id /* OUT */);

/* Handlers. */
void jobs_create(struct http_request *req);
void jobs_get(struct http_request *req);
void jobs_cancel(struct http_request *req);
void jobs_delete(struct http_request *req);
void jobs_list(struct http_request *req);
void jobs_events(struct http_request *req);
void health_live(struct http_request *req);
void health_ready(struct http_request *req);
void health_metrics(struct http_request *req);
void client_page(struct http_request *req);

/* Metrics (metrics.c): counters updated from any thread. */
void metrics_request(const struct http_request *req);
void metrics_sse_clients(int delta);
void metrics_lease_takeovers(int n);
/* Renders the Prometheus text; caller frees. */
char *metrics_render(store *st, size_t *len /* OUT */);

#endif
