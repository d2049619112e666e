/* Unit tests of command-line and environment parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "config.h"

static int parse(struct config *cfg, int argc, char **argv)
{
    FILE *saved = stderr;
    stderr = fopen("/dev/null", "w"); /* the one-line errors are checked by the integration tests */
    int rc = config_parse(cfg, ROLE_SERVE, argc, argv);
    fclose(stderr);
    stderr = saved;
    return rc;
}

static void defaults(void **state)
{
    (void)state;
    struct config cfg;
    unsetenv("DATASPHERE_STORE");
    unsetenv("PORT");
    assert_int_equal(parse(&cfg, 0, NULL), 0);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 8080);
    assert_string_equal(cfg.store, "sqlite:./datasphere.db");
    assert_int_equal(cfg.lease_seconds, 30);
    assert_int_equal(cfg.job_ttl, 86400);
    assert_false(cfg.async_job_mode);
}

static void flags_beat_env(void **state)
{
    (void)state;
    struct config cfg;
    setenv("DATASPHERE_WORKERS", "3", 1);
    setenv("DATASPHERE_STORE", "memory:", 1);
    setenv("PORT", "9000", 1);
    char *argv[] = {"--workers", "5", "--async-job-mode", "--lease-seconds=7"};
    assert_int_equal(parse(&cfg, 4, argv), 0);
    assert_int_equal(cfg.workers, 5);
    assert_string_equal(cfg.store, "memory:");
    assert_int_equal(cfg.listen_port, 9000);
    assert_true(cfg.async_job_mode);
    assert_int_equal(cfg.lease_seconds, 7);
    unsetenv("DATASPHERE_WORKERS");
    unsetenv("DATASPHERE_STORE");
    unsetenv("PORT");
}

static void bad_values_exit_2(void **state)
{
    (void)state;
    struct config cfg;
    char *bad[][2] = {{"--workers", "many"},    {"--workers", "-1"}, {"--listen", "host:99999"},
                      {"--lease-seconds", "0"}, {"--nonsense", "1"}, {"--job-ttl", ""}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(&cfg, 2, bad[i]), 2);
    char *missing[] = {"--store"};
    assert_int_equal(parse(&cfg, 1, missing), 2);
    setenv("ASYNC_JOB_MODE", "maybe", 1);
    assert_int_equal(parse(&cfg, 0, NULL), 2);
    unsetenv("ASYNC_JOB_MODE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(flags_beat_env),
        cmocka_unit_test(bad_values_exit_2),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
