/* The `sleep` job type: a deterministic job for tests and benchmarks.
 * Input {"steps": n, "step_ms": m, "fail_at"?: k}: n progress steps of m ms
 * each; with fail_at, the job fails at step k (1-based). The result says
 * which attempt produced it, so tests can tell a retried job's writer. */
#include <stdio.h>
#include <string.h>

#include "worker/worker.h"

static int int_field(const json_t *input, const char *key, int lo, int hi, int *out, char *why,
                     size_t cap)
{
    json_t *v = json_object_get(input, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(why, cap, "input.%s must be an integer from %d to %d", key, lo, hi);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int validate(const json_t *input, char *why, size_t cap)
{
    int n;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)input, key, v)
    {
        if (strcmp(key, "steps") && strcmp(key, "step_ms") && strcmp(key, "fail_at")) {
            snprintf(why, cap, "input.%s is not a field of a sleep job (steps, step_ms, fail_at)",
                     key);
            return -1;
        }
    }
    if (int_field(input, "steps", 0, 100000, &n, why, cap) ||
        int_field(input, "step_ms", 0, 3600000, &n, why, cap))
        return -1;
    if (json_object_get(input, "fail_at") && int_field(input, "fail_at", 1, 100000, &n, why, cap))
        return -1;
    return 0;
}

static int run(struct job_ctx *ctx, const json_t *input, json_t **result, struct job_failure *fail)
{
    int steps = (int)json_integer_value(json_object_get(input, "steps"));
    int step_ms = (int)json_integer_value(json_object_get(input, "step_ms"));
    int fail_at = (int)json_integer_value(json_object_get(input, "fail_at"));
    for (int i = 1; i <= steps; i++) {
        int rc = job_ctx_sleep(ctx, step_ms);
        if (rc)
            return rc;
        if (i == fail_at) {
            snprintf(fail->code, sizeof fail->code, "step_failed");
            snprintf(fail->message, sizeof fail->message, "failed at step %d as asked", i);
            return -1;
        }
        char msg[64];
        snprintf(msg, sizeof msg, "step %d of %d", i, steps);
        rc = job_ctx_progress(ctx, "sleeping", i * 100 / steps, msg);
        if (rc)
            return rc;
    }
    *result = json_pack("{s:i, s:I, s:i}", "steps", steps, "slept_ms", (json_int_t)steps * step_ms,
                        "attempt", job_ctx_attempt(ctx));
    return 0;
}

const struct job_type job_type_sleep = {
    .name = "sleep",
    .validate = validate,
    .run = run,
};
