/* Backend selection by URI scheme, and helpers every backend shares. */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"

static const struct store_ops *const backends[] = {&store_memory_ops, &store_sqlite_ops,
                                                   &store_redis_ops};

int store_open(const char *uri, store **out, const char **why)
{
    *out = NULL;
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        size_t n = strlen(backends[i]->scheme);
        if (strncmp(uri, backends[i]->scheme, n) == 0) {
            int rc = backends[i]->open(uri + n, out);
            if (rc && why)
                *why = ds_strerror(rc);
            return rc;
        }
    }
    if (why)
        *why = "unknown store scheme (expected memory:, sqlite:PATH or redis://HOST:PORT)";
    return DS_E_INVALID;
}

void store_doc_clear(struct store_doc *doc)
{
    if (!doc)
        return;
    free(doc->json);
    doc->json = NULL;
}

void store_list_clear(struct store_list *list)
{
    for (size_t i = 0; i < list->n; i++)
        free(list->docs[i]);
    free(list->docs);
    list->docs = NULL;
    list->n = 0;
}

int store_doc_from_job(struct store_doc *doc, const struct job *job)
{
    doc->json = job_render(job);
    doc->version = job->version;
    doc->event_seq = job->event_seq;
    doc->state = job->state;
    return doc->json ? 0 : DS_E_NOMEM;
}
