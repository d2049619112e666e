/* Unit tests of the job model: the transition table, job_apply's fencing
 * and events, rendering, and job ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "job/job.h"
#include "util/err.h"

static void new_job(struct job *job, struct job_events *ev)
{
    json_t *input = json_pack("{s:i}", "steps", 1);
    assert_int_equal(job_init(job, "job_x", "sleep", input, 60, 2, 1000, ev), 0);
    json_decref(input);
}

static void transition_table(void **state)
{
    (void)state;
    assert_true(job_transition_allowed(JOB_QUEUED, JOB_RUNNING));
    assert_true(job_transition_allowed(JOB_QUEUED, JOB_CANCELLED));
    assert_true(job_transition_allowed(JOB_RUNNING, JOB_SUCCEEDED));
    assert_true(job_transition_allowed(JOB_RUNNING, JOB_QUEUED));
    assert_false(job_transition_allowed(JOB_QUEUED, JOB_SUCCEEDED));
    for (int s = JOB_SUCCEEDED; s <= JOB_CANCELLED; s++)
        for (int t = 0; t < JOB_N_STATES; t++)
            assert_false(job_transition_allowed((enum job_state)s, (enum job_state)t));
    enum job_state st;
    assert_int_equal(job_state_parse("running", &st), 0);
    assert_int_equal(st, JOB_RUNNING);
    assert_int_equal(job_state_parse("done", &st), DS_E_INVALID);
}

static void init_emits_queued(void **state)
{
    (void)state;
    struct job job;
    struct job_events ev = {0};
    new_job(&job, &ev);
    assert_int_equal(job.version, 1);
    assert_int_equal(job.state, JOB_QUEUED);
    assert_int_equal(ev.n, 1);
    assert_string_equal(ev.v[0].name, "status");
    assert_non_null(strstr(ev.v[0].data, "\"status\":\"queued\""));
    assert_non_null(strstr(ev.v[0].data, "\"job_id\":\"job_x\""));
    job_events_clear(&ev);
    job_clear(&job);
}

static void lease_fences_writes(void **state)
{
    (void)state;
    struct job job;
    struct job_events ev = {0};
    new_job(&job, &ev);
    struct job_op claim = {.kind = JOB_OP_CLAIM, .token = 7, .lease_ms = 100};
    assert_int_equal(job_apply(&job, &claim, 2000, &ev), 0);
    assert_int_equal(job.state, JOB_RUNNING);
    json_t *p = json_pack("{s:s, s:i, s:s}", "stage", "a", "percent", 50, "message", "m");
    struct job_op stale = {.kind = JOB_OP_PROGRESS, .token = 8, .lease_ms = 100, .payload = p};
    int64_t v = job.version;
    assert_int_equal(job_apply(&job, &stale, 2001, &ev), DS_E_LEASE_LOST);
    assert_int_equal(job.version, v);
    stale.token = 7;
    assert_int_equal(job_apply(&job, &stale, 2001, &ev), 0);
    assert_int_equal(job.version, v + 1);
    struct job_op done = {.kind = JOB_OP_SUCCEED, .token = 8, .payload = p};
    assert_int_equal(job_apply(&job, &done, 2002, &ev), DS_E_LEASE_LOST);
    done.token = 7;
    assert_int_equal(job_apply(&job, &done, 2002, &ev), 0);
    assert_int_equal(job.state, JOB_SUCCEEDED);
    assert_int_equal(job.expires_ms, 2002 + 60 * 1000);
    assert_string_equal(ev.v[ev.n - 1].name, "result");
    /* A finished job accepts no further write, even with the old token. */
    assert_int_equal(job_apply(&job, &done, 2003, &ev), DS_E_LEASE_LOST);
    json_decref(p);
    job_events_clear(&ev);
    job_clear(&job);
}

static void cancel_queued_and_running(void **state)
{
    (void)state;
    struct job job;
    struct job_events ev = {0};
    struct job_op cancel = {.kind = JOB_OP_CANCEL};
    new_job(&job, &ev);
    assert_int_equal(job_apply(&job, &cancel, 1500, &ev), 0);
    assert_int_equal(job.state, JOB_CANCELLED);
    assert_int_equal(job_apply(&job, &cancel, 1500, &ev), DS_E_CONFLICT);
    job_clear(&job);
    new_job(&job, &ev);
    struct job_op claim = {.kind = JOB_OP_CLAIM, .token = 3, .lease_ms = 100};
    assert_int_equal(job_apply(&job, &claim, 2000, &ev), 0);
    assert_int_equal(job_apply(&job, &cancel, 2001, &ev), 0);
    assert_int_equal(job.state, JOB_RUNNING);
    assert_true(job.cancel_requested);
    struct job_op beat = {.kind = JOB_OP_HEARTBEAT, .token = 3, .lease_ms = 100};
    assert_int_equal(job_apply(&job, &beat, 2002, &ev), DS_E_CANCELLED);
    job_events_clear(&ev);
    job_clear(&job);
}

static void requeue_until_max_attempts(void **state)
{
    (void)state;
    struct job job;
    struct job_events ev = {0};
    new_job(&job, &ev); /* max_attempts 2 */
    struct job_op claim = {.kind = JOB_OP_CLAIM, .token = 1, .lease_ms = 100};
    struct job_op requeue = {.kind = JOB_OP_REQUEUE};
    assert_int_equal(job_apply(&job, &claim, 2000, &ev), 0);
    assert_int_equal(job_apply(&job, &requeue, 2050, &ev), DS_E_INVALID); /* lease still held */
    assert_int_equal(job_apply(&job, &requeue, 2100, &ev), 0);
    assert_int_equal(job.state, JOB_QUEUED);
    assert_int_equal(job.attempts, 2);
    claim.token = 2;
    assert_int_equal(job_apply(&job, &claim, 3000, &ev), 0);
    assert_int_equal(job_apply(&job, &requeue, 3100, &ev), 0);
    assert_int_equal(job.state, JOB_FAILED);
    assert_string_equal(json_string_value(json_object_get(job.error, "code")), "worker_lost");
    job_events_clear(&ev);
    job_clear(&job);
}

static void render_has_contract_fields(void **state)
{
    (void)state;
    struct job job;
    struct job_events ev = {0};
    new_job(&job, &ev);
    char *text = job_render(&job);
    json_t *o = json_loads(text, 0, NULL);
    assert_non_null(o);
    const char *keys[] = {"id",          "type",       "status",   "progress",   "input",
                          "result",      "error",      "attempts", "created_at", "started_at",
                          "finished_at", "expires_at", "version",  "links"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_non_null(json_object_get(o, keys[i]));
    assert_string_equal(json_string_value(json_object_get(o, "created_at")),
                        "1970-01-01T00:00:01.000Z");
    assert_true(json_is_null(json_object_get(o, "result")));
    json_decref(o);
    free(text);
    job_events_clear(&ev);
    job_clear(&job);
}

static void ids_verify(void **state)
{
    (void)state;
    uint8_t key[JOB_ID_KEY_LEN], other[JOB_ID_KEY_LEN];
    char id[JOB_ID_SIZE], id2[JOB_ID_SIZE];
    job_id_random_key(key);
    job_id_random_key(other);
    job_id_new(key, 1764860000123456, id);
    job_id_new(key, 1764860000123456, id2);
    assert_int_equal(strlen(id), JOB_ID_LEN);
    assert_string_not_equal(id, id2);
    int64_t created = 0;
    assert_int_equal(job_id_check(key, id, &created), JOB_ID_VALID);
    assert_int_equal(created, 1764860000123456);
    assert_int_equal(job_id_check(other, id, NULL), JOB_ID_FORGED);
    id[20] = id[20] == 'a' ? 'b' : 'a';
    assert_int_equal(job_id_check(key, id, NULL), JOB_ID_FORGED);
    assert_int_equal(job_id_check(key, "job_123", NULL), JOB_ID_MALFORMED);
    id[20] = '!';
    assert_int_equal(job_id_check(key, id, NULL), JOB_ID_MALFORMED);
    /* Ids sort by creation time. */
    job_id_new(key, 1764860000123457, id2);
    job_id_new(key, 1764860000123456, id);
    assert_true(strcmp(id, id2) < 0);
}

int main(void)
{
    if (job_id_setup())
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(transition_table),
        cmocka_unit_test(init_emits_queued),
        cmocka_unit_test(lease_fences_writes),
        cmocka_unit_test(cancel_queued_and_running),
        cmocka_unit_test(requeue_until_max_attempts),
        cmocka_unit_test(render_has_contract_fields),
        cmocka_unit_test(ids_verify),
    };
    return cmocka_run_group_tests_name("job", tests, NULL, NULL);
}
