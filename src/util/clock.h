/* Wall-clock and monotonic time in milliseconds, and RFC 3339 rendering. */
#ifndef DS_UTIL_CLOCK_H
#define DS_UTIL_CLOCK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CLOCK_RFC3339_LEN 25 /* "2026-12-04T15:07:53.123Z" plus NUL */

/* Milliseconds since the Unix epoch (CLOCK_REALTIME): what the store keeps. */
int64_t clock_now_ms(void);

/* Microseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_now_us(void);

/* Milliseconds of CLOCK_MONOTONIC: for deadlines inside one process. */
int64_t clock_mono_ms(void);

/* Sleeps ms milliseconds (a signal may cut it short). */
void clock_sleep_ms(int64_t ms);

/* CLOCK_MONOTONIC now plus us microseconds: a deadline for
 * pthread_cond_timedwait() on a condition from clock_mono_cond_init(). */
struct timespec clock_mono_after(int64_t us);

/* Initialises a condition variable whose timed waits use CLOCK_MONOTONIC
 * (a wall-clock change does not stretch or cut them). 0 or an errno. */
int clock_mono_cond_init(pthread_cond_t *cv);

/* Writes ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into out (CLOCK_RFC3339_LEN bytes). */
void clock_rfc3339(int64_t ms, char out[CLOCK_RFC3339_LEN]);

#endif
