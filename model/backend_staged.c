/* The "cpu-staged" backend: the CPU backend's arithmetic behind device-style memory, so the device
 * paths of training (staging buffers, the asynchronous copies of net.push_bucket_mb, table rows staged
 * per batch) run and are tested on machines without a GPU. Its memory is separate from the host's; its
 * asynchronous copies land as late as the backend contract allows, in queue order: a device-to-host
 * copy at the copy_wait (or the positive copy_done) that covers it, reading the device memory then; a
 * host-to-device copy just before the next op, synchronous copy or sync, reading the host buffer then.
 * copy_done says "not yet" to a ticket until a newer one is queued. A caller that reads a copy's
 * destination before waiting, or changes its source too early, gets other numbers than the CPU
 * backend: tests compare the two bit for bit. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"

typedef struct {
    void *dst;
    const void *src;
    size_t bytes;
    int to_device;
} pending_copy_t;

typedef struct {
    backend_t *cpu;
    pending_copy_t *q; /* copies queued and not landed, oldest first, the oldest with ticket `first` */
    size_t n, cap;
    uint64_t first, next; /* tickets: first queued one not landed, next to give */
} staged_t;

static staged_t *st(backend_t *be) {
    return be->ctx;
}

/* Lands the queued copies up to ticket `upto` (inclusive), in order. */
static void land(staged_t *s, uint64_t upto) {
    size_t k = 0;
    while (k < s->n && s->first + k <= upto) {
        memcpy(s->q[k].dst, s->q[k].src, s->q[k].bytes);
        k++;
    }
    memmove(s->q, s->q + k, (s->n - k) * sizeof *s->q);
    s->n -= k;
    s->first += k;
}

/* Work queued now waits for every host-to-device copy queued before it (and so for all before those). */
static void before_work(backend_t *be) {
    staged_t *s = st(be);
    for (size_t k = s->n; k > 0; k--)
        if (s->q[k - 1].to_device) {
            land(s, s->first + k - 1);
            return;
        }
}

static uint64_t queue_copy(backend_t *be, void *dst, const void *src, size_t bytes, int to_device) {
    staged_t *s = st(be);
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->q = XREALLOC(s->q, s->cap * sizeof *s->q); /* the op API has no error path */
    }
    s->q[s->n++] = (pending_copy_t){dst, src, bytes, to_device};
    return s->next++;
}

static uint64_t staged_to_host_async(backend_t *be, void *dst, const void *src, size_t bytes) {
    return queue_copy(be, dst, src, bytes, 0);
}

static uint64_t staged_to_device_async(backend_t *be, void *dst, const void *src, size_t bytes) {
    return queue_copy(be, dst, src, bytes, 1);
}

static void staged_copy_wait(backend_t *be, uint64_t ticket) {
    land(st(be), ticket);
}

static int staged_copy_done(backend_t *be, uint64_t ticket) {
    staged_t *s = st(be);
    if (ticket < s->first) return 1;
    if (ticket + 1 >= s->next) return 0; /* the newest copy is always still running */
    land(s, ticket);
    return 1;
}

static void *staged_alloc(backend_t *be, size_t bytes) {
    return st(be)->cpu->ops->alloc(st(be)->cpu, bytes);
}

static void staged_free(backend_t *be, void *p) {
    before_work(be);
    st(be)->cpu->ops->free(st(be)->cpu, p);
}

static void staged_to_device(backend_t *be, void *dst, const void *src, size_t bytes) {
    before_work(be);
    memcpy(dst, src, bytes);
}

static void staged_to_host(backend_t *be, void *dst, const void *src, size_t bytes) {
    before_work(be);
    memcpy(dst, src, bytes);
}

static void staged_sync(backend_t *be) {
    before_work(be);
}

/* Each op: the queued host-to-device copies first, then the CPU backend's. */
#define INNER(be) (before_work(be), st(be)->cpu)

static void staged_gemm(backend_t *be, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                        const float *b, float beta, float *c) {
    backend_t *cpu = INNER(be);
    cpu->ops->gemm(cpu, ta, tb, m, n, k, alpha, a, b, beta, c);
}

static void staged_add_bias(backend_t *be, float *y, const float *bias, int rows, int cols) {
    backend_t *cpu = INNER(be);
    cpu->ops->add_bias(cpu, y, bias, rows, cols);
}

static void staged_sum_rows(backend_t *be, float *out, const float *x, int rows, int cols) {
    backend_t *cpu = INNER(be);
    cpu->ops->sum_rows(cpu, out, x, rows, cols);
}

static void staged_relu_fwd(backend_t *be, const float *x, float *y, size_t n) {
    backend_t *cpu = INNER(be);
    cpu->ops->relu_fwd(cpu, x, y, n);
}

static void staged_relu_bwd(backend_t *be, const float *y, const float *dy, float *dx, size_t n) {
    backend_t *cpu = INNER(be);
    cpu->ops->relu_bwd(cpu, y, dy, dx, n);
}

static void staged_softmax_xent(backend_t *be, const float *logits, const int32_t *labels, int rows,
                                int classes, float scale, float *loss, int32_t *pred, float *dlogits) {
    backend_t *cpu = INNER(be);
    cpu->ops->softmax_xent(cpu, logits, labels, rows, classes, scale, loss, pred, dlogits);
}

static void staged_sigmoid_bce(backend_t *be, const float *logits, const int32_t *labels, int rows,
                               float scale, float *loss, int32_t *pred, float *dlogits) {
    backend_t *cpu = INNER(be);
    cpu->ops->sigmoid_bce(cpu, logits, labels, rows, scale, loss, pred, dlogits);
}

static void staged_axpy(backend_t *be, float *y, const float *x, float a, size_t n) {
    backend_t *cpu = INNER(be);
    cpu->ops->axpy(cpu, y, x, a, n);
}

static void staged_copy_cols(backend_t *be, float *dst, int ld_dst, const float *src, int ld_src, int rows,
                             int cols) {
    backend_t *cpu = INNER(be);
    cpu->ops->copy_cols(cpu, dst, ld_dst, src, ld_src, rows, cols);
}

static void staged_embedding_bag_fwd(backend_t *be, const float *rows, int dim, const int32_t *off,
                                     const int32_t *idx, const float *wts, int batch, int mean, float *y,
                                     int ldy) {
    backend_t *cpu = INNER(be);
    cpu->ops->embedding_bag_fwd(cpu, rows, dim, off, idx, wts, batch, mean, y, ldy);
}

/* With the bags by row, sums each row from them, as the CUDA backend does: the staged arrays are used. */
static void staged_embedding_bag_bwd(backend_t *be, const float *dy, int ldy, int dim, const int32_t *off,
                                     const int32_t *idx, const float *wts, int batch, int mean, float *grad,
                                     int n_rows, const bag_rows_t *by_row) {
    backend_t *cpu = INNER(be);
    if (!by_row) {
        cpu->ops->embedding_bag_bwd(cpu, dy, ldy, dim, off, idx, wts, batch, mean, grad, n_rows, NULL);
        return;
    }
    for (int r = 0; r < n_rows; r++)
        for (int c = 0; c < dim; c++) {
            float acc = 0.0f;
            for (int e = by_row->off[r]; e < by_row->off[r + 1]; e++)
                acc += by_row->w[e] * dy[(size_t)by_row->bag[e] * ldy + c];
            grad[(size_t)r * dim + c] = acc;
        }
}

static void staged_interact_fwd(backend_t *be, const float *t, int batch, int f, int d, float *y, int ldy) {
    backend_t *cpu = INNER(be);
    cpu->ops->interact_fwd(cpu, t, batch, f, d, y, ldy);
}

static void staged_interact_bwd(backend_t *be, const float *t, const float *dy, int ldy, int batch, int f,
                                int d, float *dt) {
    backend_t *cpu = INNER(be);
    cpu->ops->interact_bwd(cpu, t, dy, ldy, batch, f, d, dt);
}

static void staged_optim_step(backend_t *be, const struct optim *o, float *p, float *s0, float *s1,
                              const float *const *g, int ng, float gscale, size_t n, long t) {
    backend_t *cpu = INNER(be);
    cpu->ops->optim_step(cpu, o, p, s0, s1, g, ng, gscale, n, t);
}

static void staged_destroy(backend_t *be) {
    staged_t *s = st(be);
    if (!s) return;
    land(s, UINT64_MAX);
    free(s->q);
    backend_free(s->cpu);
}

static void staged_to_bf16(backend_t *be, uint16_t *dst, const float *src, size_t n) {
    backend_t *cpu = INNER(be);
    cpu->ops->to_bf16(cpu, dst, src, n);
}

static void staged_from_bf16(backend_t *be, float *dst, const uint16_t *src, size_t n) {
    backend_t *cpu = INNER(be);
    cpu->ops->from_bf16(cpu, dst, src, n);
}

static const backend_ops_t staged_ops = {
    .name = "cpu-staged",
    .alloc = staged_alloc,
    .free = staged_free,
    .to_device = staged_to_device,
    .to_host = staged_to_host,
    .sync = staged_sync,
    .gemm = staged_gemm,
    .add_bias = staged_add_bias,
    .sum_rows = staged_sum_rows,
    .relu_fwd = staged_relu_fwd,
    .relu_bwd = staged_relu_bwd,
    .softmax_xent = staged_softmax_xent,
    .sigmoid_bce = staged_sigmoid_bce,
    .axpy = staged_axpy,
    .copy_cols = staged_copy_cols,
    .embedding_bag_fwd = staged_embedding_bag_fwd,
    .embedding_bag_bwd = staged_embedding_bag_bwd,
    .interact_fwd = staged_interact_fwd,
    .interact_bwd = staged_interact_bwd,
    .optim_step = staged_optim_step,
    .to_bf16 = staged_to_bf16,
    .from_bf16 = staged_from_bf16,
    .destroy = staged_destroy,
    .to_host_async = staged_to_host_async,
    .to_device_async = staged_to_device_async,
    .copy_wait = staged_copy_wait,
    .copy_done = staged_copy_done,
};

backend_t *backend_staged_create(int threads) {
    backend_t *cpu = backend_cpu_create(threads);
    staged_t *s = calloc(1, sizeof *s);
    backend_t *be = calloc(1, sizeof *be);
    if (!cpu || !s || !be) {
        backend_free(cpu);
        free(s);
        free(be);
        return NULL;
    }
    s->cpu = cpu;
    s->first = s->next = 1;
    be->ops = &staged_ops;
    be->ctx = s;
    be->threads = cpu->threads;
    be->host_memory = 0;
    return be;
}
