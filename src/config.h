/* The process configuration: flags and environment variables, parsed once at
 * start-up into a struct config that is read-only afterwards. */
#ifndef DS_CONFIG_H
#define DS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum config_role { ROLE_SERVE, ROLE_WORKER };

struct config {
    enum config_role role;
    char listen_host[256];
    int listen_port;
    char store[1024];
    char name[128];
    int workers;
    int http_threads;
    char corpus[1024];
    bool async_job_mode;
    int lease_seconds;
    int job_ttl;
    int max_attempts;
    int drain_seconds;
    int max_body;
    int request_timeout;
    int sse_heartbeat;
    char llm_url[1024];
    char llm_api_key[512];
    char llm_model[128];
};

/* Fills cfg from argv (after the role word) and the environment; a flag wins
 * over its variable, which wins over the default.
 * Returns 0 on success; 1 when --help was printed (exit 0); 2 after printing
 * a one-line error naming the flag to stderr (exit 2). */
int config_parse(struct config *cfg, enum config_role role, int argc, char **argv);

/* Prints the flag table with variables and defaults. */
void config_usage(enum config_role role, FILE *out);

#endif
