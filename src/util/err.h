/* One error convention for the whole server: functions return int, 0 on
 * success, a negative DS_E_* code from the table below on failure. */
#ifndef DS_UTIL_ERR_H
#define DS_UTIL_ERR_H

#define DS_ERRNO_MAP(X)                                                                            \
    X(NOMEM, "out of memory")                                                                      \
    X(NOTFOUND, "no such job")                                                                     \
    X(CONFLICT, "the job's state does not allow this")                                             \
    X(LEASE_LOST, "this worker no longer holds the job's lease")                                   \
    X(CANCELLED, "cancellation was requested")                                                     \
    X(EXISTS, "the idempotency key names an existing job")                                         \
    X(IDEM_MISMATCH, "the idempotency key was used with a different request body")                 \
    X(EMPTY, "nothing to claim")                                                                   \
    X(INVALID, "invalid argument")                                                                 \
    X(UNAVAILABLE, "the job store is unavailable")                                                 \
    X(IO, "the job store failed")                                                                  \
    X(DRAINING, "the process is shutting down")

enum {
    DS_OK = 0,
#define DS_ERR_ENUM(name, msg) DS_E_##name,
    DS_E_FIRST_ = -100,
    DS_ERRNO_MAP(DS_ERR_ENUM)
#undef DS_ERR_ENUM
};

/* A static, human-readable text for a DS_E_* code (or "ok" for 0). */
const char *ds_strerror(int err);

#endif
