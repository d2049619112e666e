/* Job id generation and verification (format in id.h).
 *
 * Randomness and the MAC come from libsodium: randombytes_buf() for the 160
 * random bits, crypto_shorthash() (SipHash-2-4, a keyed MAC for short inputs)
 * for the tag. The time prefix makes ids sort by creation. */
#include "job/id.h"

#include <sodium.h>
#include <string.h>

#define TIME_LEN 7
#define RAND_LEN 20
#define BODY_LEN (TIME_LEN + RAND_LEN) /* the part the MAC covers */
#define RAW_LEN  (BODY_LEN + 8)

/* Crockford's base32 alphabet, lower case: in ASCII order, so ids sort as their bytes do. */
static const char b32[] = "0123456789abcdefghjkmnpqrstvwxyz";

int job_id_setup(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

void job_id_random_key(uint8_t key[JOB_ID_KEY_LEN])
{
    randombytes_buf(key, JOB_ID_KEY_LEN);
}

uint64_t job_lease_token_new(void)
{
    uint64_t t = 0;
    while (t == 0 || t > INT64_MAX) /* stored as a signed 64-bit integer */
        randombytes_buf(&t, sizeof t);
    return t;
}

static void encode(const uint8_t raw[RAW_LEN], char *out)
{
    for (int i = 0; i < RAW_LEN; i += 5) { /* 5 bytes -> 8 characters */
        uint64_t v = 0;
        for (int j = 0; j < 5; j++)
            v = v << 8 | raw[i + j];
        for (int j = 7; j >= 0; j--, v >>= 5)
            out[i / 5 * 8 + j] = b32[v & 31];
    }
}

static int decode(const char *in, uint8_t raw[RAW_LEN])
{
    for (int i = 0; i < RAW_LEN; i += 5) {
        uint64_t v = 0;
        for (int j = 0; j < 8; j++) {
            const char *p = strchr(b32, in[i / 5 * 8 + j]);
            if (!p || !*p)
                return -1;
            v = v << 5 | (uint64_t)(p - b32);
        }
        for (int j = 4; j >= 0; j--, v >>= 8)
            raw[i + j] = (uint8_t)v;
    }
    return 0;
}

static void mac(const uint8_t key[JOB_ID_KEY_LEN], const uint8_t body[BODY_LEN], uint8_t out[8])
{
    crypto_shorthash(out, body, BODY_LEN, key);
}

void job_id_new(const uint8_t key[JOB_ID_KEY_LEN], int64_t now_us, char out[JOB_ID_SIZE])
{
    uint8_t raw[RAW_LEN];
    for (int i = 0; i < TIME_LEN; i++)
        raw[i] = (uint8_t)((uint64_t)now_us >> (8 * (TIME_LEN - 1 - i)));
    randombytes_buf(raw + TIME_LEN, RAND_LEN);
    mac(key, raw, raw + BODY_LEN);
    memcpy(out, "job_", 4);
    encode(raw, out + 4);
    out[JOB_ID_LEN] = '\0';
}

enum job_id_verdict job_id_check(const uint8_t key[JOB_ID_KEY_LEN], const char *id,
                                 int64_t *created_us)
{
    uint8_t raw[RAW_LEN], tag[8];
    if (strlen(id) != JOB_ID_LEN || strncmp(id, "job_", 4) || decode(id + 4, raw))
        return JOB_ID_MALFORMED;
    mac(key, raw, tag);
    if (sodium_memcmp(tag, raw + BODY_LEN, 8) != 0)
        return JOB_ID_FORGED;
    if (created_us) {
        uint64_t t = 0;
        for (int i = 0; i < TIME_LEN; i++)
            t = t << 8 | raw[i];
        *created_us = (int64_t)t;
    }
    return JOB_ID_VALID;
}
