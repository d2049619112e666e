/* Logging: one formatted line per call, written with a single write(2) so
 * lines from different threads never interleave. */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/clock.h"

static char log_instance[64] = "datasphere";
static enum log_level log_min = LOG_INFO;

void log_setup(const char *instance, enum log_level min)
{
    snprintf(log_instance, sizeof log_instance, "%s", instance);
    log_min = min;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < log_min)
        return;
    char line[1024], when[CLOCK_RFC3339_LEN];
    clock_rfc3339(clock_now_ms(), when);
    int n = snprintf(line, sizeof line, "%s %s %s: ", when, names[level], log_instance);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t unused = write(STDERR_FILENO, line, (size_t)n);
    (void)unused;
}
