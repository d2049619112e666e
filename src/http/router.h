/* Routes are data: a table of {method, pattern, handler}, matched in order.
 * A pattern segment "{name}" captures one path segment. */
#ifndef DS_HTTP_ROUTER_H
#define DS_HTTP_ROUTER_H

#include "http/http.h"

#define ROUTE_MAX_PARAMS 2
#define ROUTE_PARAM_MAX  128

struct route {
    const char *method;
    const char *pattern;
    http_handler handler;
    const char *name; /* for metrics: a stable label */
};

struct route_match {
    const struct route *route;
    char params[ROUTE_MAX_PARAMS][ROUTE_PARAM_MAX];
    char allow[64]; /* when the path matched but the method did not */
};

/* Finds the route for method + path. Returns 200 (match->route set), 404 (no
 * pattern matches the path) or 405 (match->allow lists the methods that do). */
int router_match(const struct route *routes, size_t n, const char *method, const char *path,
                 struct route_match *match /* OUT */);

#endif
