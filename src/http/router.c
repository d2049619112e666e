/* Matching a request path against the route table, segment by segment. */
#include "http/router.h"

#include <stdio.h>
#include <string.h>

/* Does path match pattern? Captures "{...}" segments into params. */
static int match_path(const char *pattern, const char *path, char params[][ROUTE_PARAM_MAX])
{
    int n = 0;
    while (*pattern && *path) {
        if (*pattern != '/' || *path != '/')
            return 0;
        pattern++, path++;
        size_t plen = strcspn(pattern, "/"), slen = strcspn(path, "/");
        if (pattern[0] == '{') {
            if (slen == 0 || slen >= ROUTE_PARAM_MAX || n == ROUTE_MAX_PARAMS)
                return 0;
            memcpy(params[n], path, slen);
            params[n++][slen] = '\0';
        } else if (plen != slen || strncmp(pattern, path, plen)) {
            return 0;
        }
        pattern += plen, path += slen;
    }
    return *pattern == '\0' && *path == '\0';
}

int router_match(const struct route *routes, size_t n, const char *method, const char *path,
                 struct route_match *match)
{
    char params[ROUTE_MAX_PARAMS][ROUTE_PARAM_MAX];
    int status = 404;
    memset(match, 0, sizeof *match);
    for (size_t i = 0; i < n; i++) {
        if (!match_path(routes[i].pattern, path, params))
            continue;
        if (!strcmp(routes[i].method, method)) {
            match->route = &routes[i];
            memcpy(match->params, params, sizeof params);
            return 200;
        }
        size_t len = strlen(match->allow);
        snprintf(match->allow + len, sizeof match->allow - len, "%s%s", len ? ", " : "",
                 routes[i].method);
        status = 405;
    }
    return status;
}
