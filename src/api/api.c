/* The route table, dispatch, and the per-loop context of the API. */
#include "api/api.h"

#include <stdlib.h>

#include "util/err.h"
#include "util/log.h"

static const struct route routes[] = {
    {"POST", "/v1/jobs", jobs_create, "jobs_create"},
    {"GET", "/v1/jobs", jobs_list, "jobs_list"},
    {"GET", "/v1/jobs/{id}", jobs_get, "jobs_get"},
    {"DELETE", "/v1/jobs/{id}", jobs_delete, "jobs_delete"},
    {"GET", "/v1/jobs/{id}/events", jobs_events, "jobs_events"},
    {"POST", "/v1/jobs/{id}/cancel", jobs_cancel, "jobs_cancel"},
    {"GET", "/jobs/{id}", jobs_get, "jobs_get"},
    {"GET", "/healthz", health_live, "healthz"},
    {"GET", "/readyz", health_ready, "readyz"},
    {"GET", "/metrics", health_metrics, "metrics"},
    {"GET", "/", client_page, "client"},
};

_Static_assert(sizeof routes / sizeof routes[0] <= API_MAX_ROUTES, "raise API_MAX_ROUTES");

const char *api_route_label(int index)
{
    return index >= 0 && index < api_route_count() ? routes[index].name : "unmatched";
}

int api_route_count(void)
{
    return (int)(sizeof routes / sizeof routes[0]);
}

void api_dispatch(struct http_request *req)
{
    struct api_loop *L = api_loop_of(req);
    int status = router_match(routes, sizeof routes / sizeof routes[0], http_req_method(req),
                              http_req_path(req), &L->match);
    if (status == 404) {
        http_problem(req, 404, "no resource at %s", http_req_path(req));
        return;
    }
    if (status == 405) {
        http_add_header(req, "Allow", "%s", L->match.allow);
        http_problem(req, 405, "%s is not allowed on %s (allowed: %s)", http_req_method(req),
                     http_req_path(req), L->match.allow);
        return;
    }
    http_req_set_route(req, (int)(L->match.route - routes));
    L->match.route->handler(req);
}

int api_loop_init(struct http_loop *loop, void *app)
{
    struct api_loop *L = calloc(1, sizeof *L);
    const char *why = NULL;
    if (!L)
        return -1;
    L->app = app;
    if (store_open(L->app->cfg->store, &L->st, &why)) {
        log_error("cannot open the store %s: %s", L->app->cfg->store, why);
        free(L);
        return -1;
    }
    store_attach(L->st, http_loop_base(loop)); /* pipelined polls where the store can */
    http_loop_set_data(loop, L);
    return 0;
}

void api_loop_fini(struct http_loop *loop)
{
    struct api_loop *L = http_loop_data(loop);
    store_close(L->st);
    free(L);
    http_loop_set_data(loop, NULL);
}

void api_store_error(struct http_request *req, int rc, const char *job_id)
{
    if (rc == DS_E_NOTFOUND) {
        http_problem(req, 410, "job %s existed but has expired or was deleted", job_id);
    } else if (rc == DS_E_UNAVAILABLE) {
        http_add_header(req, "Retry-After", "1");
        http_problem(req, 503, "the job store is unavailable; retry shortly");
    } else {
        http_problem(req, 500, "the job store failed: %s", ds_strerror(rc));
    }
}

int api_job_id(struct http_request *req, const char **id)
{
    struct api_loop *L = api_loop_of(req);
    *id = L->match.params[0];
    if (job_id_check(L->app->id_key, *id, NULL) == JOB_ID_VALID)
        return 0;
    http_problem(req, 404, "no job with id '%s' was ever issued here", *id);
    return -1;
}
