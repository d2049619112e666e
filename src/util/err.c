/* The text of each DS_E_* code, generated from the one table in err.h. */
#include "util/err.h"

const char *ds_strerror(int err)
{
    switch (err) {
    case DS_OK:
        return "ok";
#define DS_ERR_CASE(name, msg)                                                                     \
    case DS_E_##name:                                                                              \
        return msg;
        DS_ERRNO_MAP(DS_ERR_CASE)
#undef DS_ERR_CASE
    }
    return "unknown error";
}
