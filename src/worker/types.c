/* The table of job types the workers know. A type is added here and in a
 * file of its own (sleep.c, ...). */
#include <string.h>

#include "worker/worker.h"

extern const struct job_type job_type_sleep;

static const struct job_type *const types[] = {&job_type_sleep};

const struct job_type *job_type_find(const char *name)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i]->name, name))
            return types[i];
    return NULL;
}

const char *job_type_names(void)
{
    return "sleep";
}
