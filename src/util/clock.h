/* Wall-clock and monotonic time in milliseconds, and RFC 3339 rendering. */
#ifndef DS_UTIL_CLOCK_H
#define DS_UTIL_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#define CLOCK_RFC3339_LEN 25 /* "2026-12-04T15:07:53.123Z" plus NUL */

/* Milliseconds since the Unix epoch (CLOCK_REALTIME): what the store keeps. */
int64_t clock_now_ms(void);

/* Microseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_now_us(void);

/* Milliseconds of CLOCK_MONOTONIC: for deadlines inside one process. */
int64_t clock_mono_ms(void);

/* Writes ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into out (CLOCK_RFC3339_LEN bytes). */
void clock_rfc3339(int64_t ms, char out[CLOCK_RFC3339_LEN]);

#endif
