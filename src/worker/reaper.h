/* The reaper: periodically hands jobs whose lease expired back to the queue
 * (or fails them with worker_lost past max_attempts) and deletes finished
 * jobs past their TTL. Every process runs one; the store makes each step
 * atomic, so several reapers never double a takeover. */
#ifndef DS_WORKER_REAPER_H
#define DS_WORKER_REAPER_H

#include "store/store.h"

struct event_base;
struct watch_hub;
struct reaper;

/* Runs on base's thread (every second, or every quarter lease if shorter), using st (borrowed;
 * base's thread is the only user while the reaper runs). on_takeover(n) is told how many leases
 * were taken over (may be NULL). Returns NULL after logging why. */
struct reaper *reaper_start(struct event_base *base, store *st, int64_t lease_ms,
                            struct watch_hub *hub, void (*on_takeover)(int n));
void reaper_stop(struct reaper *r);

#endif
