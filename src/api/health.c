/* /healthz (the process answers), /readyz (the store answers and we are not
 * draining) and /metrics (Prometheus text). */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

void health_live(struct http_request *req)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    http_send(req, 200, "application/json", ok, sizeof ok - 1);
}

void health_ready(struct http_request *req)
{
    struct api_loop *L = api_loop_of(req);
    static const char ok[] = "{\"status\":\"ready\"}";
    if (atomic_load(&L->app->draining))
        http_problem(req, 503, "this instance is shutting down");
    else if (store_ping(L->st))
        http_problem(req, 503, "the job store (%s) does not answer", L->app->cfg->store);
    else
        http_send(req, 200, "application/json", ok, sizeof ok - 1);
}

void health_metrics(struct http_request *req)
{
    size_t len;
    char *text = metrics_render(api_loop_of(req)->st, &len);
    if (!text) {
        http_problem(req, 500, "cannot render metrics");
        return;
    }
    http_send(req, 200, "text/plain; version=0.0.4", text, len);
    free(text);
}
