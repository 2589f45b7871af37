#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#ifdef TESSERA_HAVE_CUDA
#define BACKENDS_AVAILABLE "cpu, cuda"
#else
#define BACKENDS_AVAILABLE "cpu; cuda needs a build with nvcc, TESSERA_CUDA=AUTO or ON"
#endif

backend_t *backend_create(const char *name, int threads, char *err, size_t errlen) {
    if (!strcmp(name, "cpu")) return backend_cpu_create(threads);
#ifdef TESSERA_HAVE_CUDA
    if (!strcmp(name, "cuda")) return backend_cuda_create(threads, err, errlen);
#endif
    snprintf(err, errlen, "backend '%s' is not available in this build (available: %s)", name,
             BACKENDS_AVAILABLE);
    return NULL;
}

void backend_free(backend_t *be) {
    if (!be) return;
    if (be->ops->destroy) be->ops->destroy(be);
    free(be->ctx);
    free(be);
}

void *backend_host_alloc(backend_t *be, size_t bytes) {
    void *p = be->ops->alloc_host ? be->ops->alloc_host(be, bytes) : NULL;
    return p ? p : XMALLOC(bytes ? bytes : 1);
}

void backend_host_free(backend_t *be, void *p) {
    if (!p) return;
    if (be->ops->free_host)
        be->ops->free_host(be, p);
    else
        free(p);
}
