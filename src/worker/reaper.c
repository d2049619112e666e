/* The reaper (see reaper.h): a timer on the main thread's loop. */
#include "worker/reaper.h"

#include <event2/event.h>
#include <stdlib.h>

#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "watch/hub.h"

struct reaper {
    store *st; /* borrowed from the caller */
    struct event *timer;
    struct watch_hub *hub;
    int64_t lease_ms;
    void (*on_takeover)(int n);
};

static void reap(evutil_socket_t fd, short what, void *arg)
{
    struct reaper *r = arg;
    (void)fd, (void)what;
    int requeued = 0, failed = 0, removed = 0;
    int64_t now = clock_now_ms();
    int rc = store_requeue_expired(r->st, now, r->lease_ms, &requeued, &failed);
    if (rc == 0 && requeued + failed > 0) {
        log_info("reaper: %d expired leases requeued, %d jobs failed with worker_lost", requeued,
                 failed);
        if (r->on_takeover)
            r->on_takeover(requeued + failed);
        watch_hub_kick(r->hub);
    }
    if (rc == 0)
        rc = store_expire(r->st, now, &removed);
    if (rc && rc != DS_E_UNAVAILABLE)
        log_warn("reaper: %s", ds_strerror(rc));
}

struct reaper *reaper_start(struct event_base *base, store *st, int64_t lease_ms,
                            struct watch_hub *hub, void (*on_takeover)(int n))
{
    int period_ms = lease_ms < 4000 ? (int)lease_ms / 4 : 1000;
    struct reaper *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->st = st;
    r->lease_ms = lease_ms;
    r->hub = hub;
    r->on_takeover = on_takeover;
    struct timeval tv = {period_ms / 1000, (period_ms % 1000) * 1000};
    if (!(r->timer = event_new(base, -1, EV_PERSIST, reap, r)) || event_add(r->timer, &tv)) {
        log_error("reaper: cannot start");
        reaper_stop(r);
        return NULL;
    }
    return r;
}

void reaper_stop(struct reaper *r)
{
    if (!r)
        return;
    if (r->timer)
        event_free(r->timer);
    free(r);
}
