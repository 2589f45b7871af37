#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#ifdef TESSERA_HAVE_CUDA
#define BACKENDS_AVAILABLE "cpu, cuda, cpu-staged"
#else
#define BACKENDS_AVAILABLE "cpu, cpu-staged; cuda needs a build with nvcc, TESSERA_CUDA=AUTO or ON"
#endif

backend_t *backend_create(const char *name, int threads, char *err, size_t errlen) {
    if (!strcmp(name, "cpu")) return backend_cpu_create(threads);
    if (!strcmp(name, "cpu-staged")) return backend_staged_create(threads);
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

void bag_rows_build(const int32_t *off, const int32_t *idx, const float *wts, int batch, int mean, int n_rows,
                    int32_t *r_off, int32_t *r_bag, float *r_w) {
    memset(r_off, 0, ((size_t)n_rows + 1) * sizeof *r_off);
    for (int j = 0; j < off[batch]; j++)
        r_off[idx[j] + 1]++;
    for (int r = 0; r < n_rows; r++)
        r_off[r + 1] += r_off[r];
    /* r_off[r] now counts row r's entries placed so far (from its start); restored after. */
    for (int b = 0; b < batch; b++) {
        int n = off[b + 1] - off[b];
        float scale = mean && n > 1 ? 1.0f / (float)n : 1.0f; /* as the CPU backend's backward pass */
        for (int j = off[b]; j < off[b + 1]; j++) {
            int e = r_off[idx[j]]++;
            r_bag[e] = b;
            r_w[e] = (wts ? wts[j] : 1.0f) * scale;
        }
    }
    for (int r = n_rows; r > 0; r--)
        r_off[r] = r_off[r - 1];
    r_off[0] = 0;
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
