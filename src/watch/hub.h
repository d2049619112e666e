/* The watch hub: learns of every job change, by this process or any other,
 * and wakes whatever waits for it (parked long-polls and SSE streams on the
 * HTTP loops, idle workers waiting for a queued job). */
#ifndef DS_WATCH_HUB_H
#define DS_WATCH_HUB_H

#include <stdbool.h>

struct event_base;
struct watch_hub;
struct watch;

/* Runs on the waiter's own event loop thread after a change to its job. */
typedef void (*watch_fn)(void *arg);

/* Starts the hub thread with its own handle on the store at uri. It learns
 * of other processes' changes as the backend allows: a listener thread where
 * the store pushes them (Redis), else from the store's change descriptor or
 * a look every change_poll_ms (SQLite). With watchers false (no HTTP in this
 * process) a pushing store is not subscribed to: only idle workers would
 * care, and such a store's claim waits for work by itself.
 * Returns NULL after logging why. */
struct watch_hub *watch_hub_start(const char *store_uri, bool watchers);
/* Stops the thread and frees the hub. Every watch must be removed first. */
void watch_hub_stop(struct watch_hub *hub);

/* Registers interest in job_id; fn(arg) runs on base's thread after each
 * change (several changes may fold into one call). Call on base's thread.
 * Returns NULL on no memory. */
struct watch *watch_add(struct watch_hub *hub, const char *job_id, struct event_base *base,
                        watch_fn fn, void *arg);
/* Unregisters and frees w; fn will not run after this returns. Call on the
 * thread of the watch's base. NULL is allowed. */
void watch_remove(struct watch_hub *hub, struct watch *w);

/* Tells the hub this process committed a change: look now. Any thread. */
void watch_hub_kick(struct watch_hub *hub);

/* Blocks until a job may have become claimable, or timeout_ms passed, or
 * watch_hub_wake_workers() was called. Any thread. */
void watch_hub_wait_work(struct watch_hub *hub, int timeout_ms);
void watch_hub_wake_workers(struct watch_hub *hub);

#endif
