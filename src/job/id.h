/* Job ids: "job_" + 56 base32 characters encoding 7 bytes of creation time
 * (microseconds, so ids sort by creation), 20 random bytes and an 8-byte
 * keyed MAC over both. The MAC key is shared by
 * every instance through the store, so any instance can tell an id this
 * deployment issued (410 once it is gone) from one it never issued (404),
 * without a store lookup. */
#ifndef DS_JOB_ID_H
#define DS_JOB_ID_H

#include <stdint.h>

#define JOB_ID_KEY_LEN 16
#define JOB_ID_LEN     60 /* characters, without the NUL */
#define JOB_ID_SIZE    (JOB_ID_LEN + 1)

enum job_id_verdict {
    JOB_ID_MALFORMED, /* not an id of this shape at all */
    JOB_ID_FORGED,    /* right shape, wrong MAC: never issued by this deployment */
    JOB_ID_VALID,
};

/* Call once before job_id_new (initialises the random generator). 0 or -1. */
int job_id_setup(void);

/* Writes a new id created at now_us (microseconds since the epoch) into out. */
void job_id_new(const uint8_t key[JOB_ID_KEY_LEN], int64_t now_us, char out[JOB_ID_SIZE]);

/* Checks an id; on JOB_ID_VALID sets *created_us (if not NULL). */
enum job_id_verdict job_id_check(const uint8_t key[JOB_ID_KEY_LEN], const char *id,
                                 int64_t *created_us /* OUT */);

/* Fills key with fresh random bytes (for a new deployment's store). */
void job_id_random_key(uint8_t key[JOB_ID_KEY_LEN]);

/* A fresh random lease token, from 1 to INT64_MAX (it is stored signed). */
uint64_t job_lease_token_new(void);

#endif
