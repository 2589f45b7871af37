#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

backend_t *backend_create(const char *name, int threads, char *err, size_t errlen) {
    if (!strcmp(name, "cpu")) return backend_cpu_create(threads);
    snprintf(err, errlen, "backend '%s' is not available in this build (available: cpu)", name);
    return NULL;
}

void backend_free(backend_t *be) {
    if (!be) return;
    free(be->ctx);
    free(be);
}
