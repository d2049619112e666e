/* The watch hub (see hub.h).
 *
 * DESIGN
 * One thread per process runs its own event loop with its own store handle.
 * It asks store_changes() for what was committed since its cursor whenever a
 * local writer kicks it (event_active from any thread) and, for SQLite, when
 * the store's change descriptor fires (inotify on the WAL file: another
 * process committed); then one PRAGMA data_version, and a read of the new
 * event rows only if it moved. Without such a descriptor it looks every
 * change_poll_ms; with one, once a second as a safety net. A backend that pushes changes (Redis
 * pub/sub) instead gets a listener thread blocked in store_listen() on a
 * handle of its own; every change, local or not, then arrives that way. For
 * each changed job it activates the event of every watch on that job; the
 * event runs the waiter's callback on the waiter's own loop thread, which then
 * re-reads the store. Any "status" change also wakes idle workers.
 *
 * Locks: hub->mu guards the watch table; hub->work_mu guards the work
 * generation. Neither is held while calling into the store; store_changes()
 * may call on_change() with the store's own lock held (memory backend), so the
 * order is store lock -> hub->mu, never the reverse. */
#include "watch/hub.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "util/clock.h"
#include "util/log.h"

#define BUCKETS 4096

struct watch {
    char job_id[JOB_ID_SIZE];
    struct event *ev; /* on the waiter's base */
    watch_fn fn;
    void *arg;
    struct watch *next;
};

struct watch_hub {
    store *st;
    store *listener; /* NULL unless the backend pushes changes */
    pthread_t listen_thread;
    struct event_base *base;
    struct event *kick, *tick, *notify, *recheck;
    bool pushed;    /* the backend pushes every change: kicks have nothing to find */
    int recheck_us; /* the next recheck's delay; 0: no more for this notification */
    pthread_t thread;
    int64_t cursor;
    pthread_mutex_t mu;
    struct watch *buckets[BUCKETS];
    pthread_mutex_t work_mu;
    pthread_cond_t work_cv;
    uint64_t work_gen;
};

static unsigned bucket_of(const char *id)
{
    unsigned h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h % BUCKETS;
}

void watch_hub_wake_workers(struct watch_hub *hub)
{
    pthread_mutex_lock(&hub->work_mu);
    hub->work_gen++;
    pthread_cond_broadcast(&hub->work_cv);
    pthread_mutex_unlock(&hub->work_mu);
}

static void wake_all_locked(struct watch_hub *hub)
{
    for (int b = 0; b < BUCKETS; b++)
        for (struct watch *w = hub->buckets[b]; w; w = w->next)
            event_active(w->ev, 0, 0);
}

static void on_change(const char *job_id, const char *event_name, void *arg)
{
    struct watch_hub *hub = arg;
    pthread_mutex_lock(&hub->mu);
    if (!strcmp(job_id, "*"))
        wake_all_locked(hub);
    for (struct watch *w = hub->buckets[bucket_of(job_id)]; w; w = w->next)
        if (!strcmp(w->job_id, job_id))
            event_active(w->ev, 0, 0);
    pthread_mutex_unlock(&hub->mu);
    if (!strcmp(event_name, "status"))
        watch_hub_wake_workers(hub);
}

static void look(evutil_socket_t fd, short what, void *arg)
{
    struct watch_hub *hub = arg;
    (void)fd, (void)what;
    if (store_changes(hub->st, &hub->cursor, on_change, hub) != 0)
        log_warn("watch hub: cannot read changes from the store");
}

/* Looks again after 2, 10 and 50 ms. A commit writes its last WAL frame
 * (the notification) a moment before it publishes the commit in the
 * shared-memory index, which inotify cannot see; a writer descheduled in
 * between makes that moment longer. */
static void arm_recheck(struct watch_hub *hub)
{
    if (!hub->recheck_us)
        return;
    struct timeval tv = {0, hub->recheck_us};
    evtimer_add(hub->recheck, &tv);
    hub->recheck_us = hub->recheck_us < 50000 ? hub->recheck_us * 5 : 0;
}

static void recheck(evutil_socket_t fd, short what, void *arg)
{
    look(fd, what, arg);
    arm_recheck(arg);
}

/* The change descriptor fired: drain it, look now and a few times more. */
static void notified(evutil_socket_t fd, short what, void *arg)
{
    struct watch_hub *hub = arg;
    char buf[4096];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    look(fd, what, hub);
    hub->recheck_us = 2000;
    arm_recheck(hub);
}

static void *hub_thread(void *arg)
{
    struct watch_hub *hub = arg;
    event_base_loop(hub->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void *listen_thread(void *arg)
{
    struct watch_hub *hub = arg;
    store_listen(hub->listener, on_change, hub);
    return NULL;
}

/* Starts the listener thread where the backend pushes changes. */
static int start_listener(struct watch_hub *hub, const char *store_uri)
{
    if (!hub->st->ops->listen)
        return 0;
    if (store_open(store_uri, &hub->listener, NULL))
        return -1;
    if (pthread_create(&hub->listen_thread, NULL, listen_thread, hub)) {
        store_close(hub->listener);
        hub->listener = NULL;
        return -1;
    }
    return 0;
}

static void hub_free(struct watch_hub *hub)
{
    if (hub->kick)
        event_free(hub->kick);
    if (hub->tick)
        event_free(hub->tick);
    if (hub->notify)
        event_free(hub->notify);
    if (hub->recheck)
        event_free(hub->recheck);
    if (hub->base)
        event_base_free(hub->base);
    store_close(hub->st);
    pthread_mutex_destroy(&hub->mu);
    pthread_mutex_destroy(&hub->work_mu);
    pthread_cond_destroy(&hub->work_cv);
    free(hub);
}

struct watch_hub *watch_hub_start(const char *store_uri, bool watchers)
{
    struct watch_hub *hub = calloc(1, sizeof *hub);
    if (!hub)
        return NULL;
    pthread_mutex_init(&hub->mu, NULL);
    pthread_mutex_init(&hub->work_mu, NULL);
    clock_mono_cond_init(&hub->work_cv);
    hub->cursor = -1;
    const char *why = NULL;
    int rc = store_open(store_uri, &hub->st, &why);
    if (!rc)
        rc = store_changes(hub->st, &hub->cursor, on_change, hub);
    hub->base = rc ? NULL : event_base_new();
    hub->kick = hub->base ? event_new(hub->base, -1, 0, look, hub) : NULL;
    hub->tick = hub->base ? event_new(hub->base, -1, EV_PERSIST, look, hub) : NULL;
    int poll_ms = hub->st ? hub->st->ops->change_poll_ms : 0;
    int fd = hub->base && poll_ms ? store_change_fd(hub->st) : -1;
    if (fd >= 0) {
        hub->notify = event_new(hub->base, fd, EV_READ | EV_PERSIST, notified, hub);
        hub->recheck = evtimer_new(hub->base, recheck, hub);
        if (hub->notify && hub->recheck && event_add(hub->notify, NULL) == 0)
            poll_ms = 1000; /* the safety net */
    }
    struct timeval tv = {poll_ms / 1000, (poll_ms % 1000) * 1000};
    if (!hub->kick || !hub->tick || (poll_ms && event_add(hub->tick, &tv)) ||
        pthread_create(&hub->thread, NULL, hub_thread, hub)) {
        log_error("watch hub: cannot start (%s)", why ? why : "no memory");
        hub_free(hub);
        return NULL;
    }
    hub->pushed = hub->st->ops->listen != NULL;
    bool listen = watchers || !hub->st->ops->claim_waits;
    if (listen && start_listener(hub, store_uri)) {
        log_error("watch hub: cannot subscribe to the store's changes");
        event_base_loopbreak(hub->base);
        pthread_join(hub->thread, NULL);
        hub_free(hub);
        return NULL;
    }
    return hub;
}

void watch_hub_stop(struct watch_hub *hub)
{
    if (!hub)
        return;
    if (hub->listener) {
        store_unlisten(hub->listener);
        pthread_join(hub->listen_thread, NULL);
        store_close(hub->listener);
    }
    event_base_loopbreak(hub->base);
    pthread_join(hub->thread, NULL);
    hub_free(hub);
}

void watch_hub_kick(struct watch_hub *hub)
{
    if (!hub->pushed)
        event_active(hub->kick, 0, 0);
}

static void fire(evutil_socket_t fd, short what, void *arg)
{
    struct watch *w = arg;
    (void)fd, (void)what;
    w->fn(w->arg);
}

struct watch *watch_add(struct watch_hub *hub, const char *job_id, struct event_base *base,
                        watch_fn fn, void *arg)
{
    struct watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    snprintf(w->job_id, sizeof w->job_id, "%s", job_id);
    w->fn = fn;
    w->arg = arg;
    w->ev = event_new(base, -1, 0, fire, w);
    if (!w->ev) {
        free(w);
        return NULL;
    }
    pthread_mutex_lock(&hub->mu);
    struct watch **head = &hub->buckets[bucket_of(job_id)];
    w->next = *head;
    *head = w;
    pthread_mutex_unlock(&hub->mu);
    return w;
}

void watch_remove(struct watch_hub *hub, struct watch *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&hub->mu);
    for (struct watch **p = &hub->buckets[bucket_of(w->job_id)]; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    pthread_mutex_unlock(&hub->mu);
    event_free(w->ev);
    free(w);
}

void watch_hub_wait_work(struct watch_hub *hub, int timeout_ms)
{
    struct timespec until = clock_mono_after((int64_t)timeout_ms * 1000);
    pthread_mutex_lock(&hub->work_mu);
    uint64_t gen = hub->work_gen;
    while (gen == hub->work_gen)
        if (pthread_cond_timedwait(&hub->work_cv, &hub->work_mu, &until))
            break;
    pthread_mutex_unlock(&hub->work_mu);
}
