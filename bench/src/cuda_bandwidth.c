/* Memory bandwidth of the CUDA backend's memory-bound ops against a device-to-device cudaMemcpy of the
 * same buffers: one line per op with the bytes it must move, its time, GB/s and the percentage of the
 * copy's GB/s. Bytes are counted as the op's compulsory DRAM traffic (each input read once, each output
 * written once; a scatter-add's atomics count as a read and a write of the row). Needs a GPU.
 *
 *   tessera-bench-cuda-bw [--mb N] [--iters N]      (default 256 MB buffers, 20 timed runs per op) */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "optim.h"

#define CUDA_CHECK(call)                                                                                     \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess) {                                                                             \
            fprintf(stderr, "CUDA call failed call=%s file=%s line=%d error=\"%s\"\n", #call, __FILE__,      \
                    __LINE__, cudaGetErrorString(e_));                                                       \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    backend_t *be;
    size_t n; /* floats per buffer */
    float *a, *b, *c;
    /* embedding bags: a table of n / dim rows, `bags` bags of `bag` random ids each */
    int dim, bags, bag, n_rows;
    int32_t *off, *idx;
    float *y, *grad;
    bag_rows_t by_row; /* the same bags by row (device), for the deterministic backward pass */
} bench_t;

enum {
    OP_COPY,
    OP_AXPY,
    OP_RELU_FWD,
    OP_RELU_BWD,
    OP_ADD_BIAS,
    OP_SUM_ROWS,
    OP_COPY_COLS,
    OP_BAG_FWD,
    OP_BAG_BWD,
    OP_BAG_BWD_ROWS,
    OP_SGD,
    OP_ADAM,
    OP_BF16,
    OP_WIDEN,
    OP_COUNT
};

static const char *const op_names[OP_COUNT] = {"cudaMemcpy D2D",
                                               "axpy",
                                               "relu_fwd",
                                               "relu_bwd",
                                               "add_bias (1024 cols)",
                                               "sum_rows (1024 cols)",
                                               "copy_cols (16 of 48)",
                                               "embedding_bag_fwd",
                                               "embedding_bag_bwd",
                                               "embedding_bag_bwd rows",
                                               "optim_step sgd",
                                               "optim_step adam",
                                               "to_bf16 (f32 -> bf16)",
                                               "from_bf16 (bf16 -> f32)"};

#define BIAS_COLS 1024

/* Runs op once (queued; the caller synchronises). */
static void run_op(bench_t *t, int op) {
    backend_t *be = t->be;
    const backend_ops_t *o = be->ops;
    int rows = (int)(t->n / BIAS_COLS);
    switch (op) {
    case OP_COPY:
        CUDA_CHECK(cudaMemcpyAsync(t->b, t->a, t->n * sizeof(float), cudaMemcpyDeviceToDevice, 0));
        break;
    case OP_AXPY: o->axpy(be, t->b, t->a, 0.5f, t->n); break;
    case OP_RELU_FWD: o->relu_fwd(be, t->a, t->b, t->n); break;
    case OP_RELU_BWD: o->relu_bwd(be, t->a, t->b, t->c, t->n); break;
    case OP_ADD_BIAS: o->add_bias(be, t->b, t->a, rows, BIAS_COLS); break;
    case OP_SUM_ROWS: o->sum_rows(be, t->c, t->a, rows, BIAS_COLS); break;
    case OP_COPY_COLS: o->copy_cols(be, t->b, 16, t->a, 48, (int)(t->n / 48), 16); break;
    case OP_BAG_FWD:
        o->embedding_bag_fwd(be, t->a, t->dim, t->off, t->idx, NULL, t->bags, 0, t->y, t->dim);
        break;
    case OP_BAG_BWD:
        o->embedding_bag_bwd(be, t->y, t->dim, t->dim, t->off, t->idx, NULL, t->bags, 0, t->grad, t->n_rows,
                             NULL);
        break;
    case OP_BAG_BWD_ROWS:
        o->embedding_bag_bwd(be, t->y, t->dim, t->dim, t->off, t->idx, NULL, t->bags, 0, t->grad, t->n_rows,
                             &t->by_row);
        break;
    case OP_SGD:
    case OP_ADAM: { /* a shard's step (ps.device = cuda) with one worker's gradient, a */
        optim_t opt = {.kind = op == OP_SGD ? OPT_SGD : OPT_ADAM,
                       .lr = 1e-3f,
                       .beta1 = 0.9f,
                       .beta2 = 0.999f,
                       .eps = 1e-8f};
        const float *g[1] = {t->a};
        o->optim_step(be, &opt, t->b, t->c, t->grad, g, 1, 1.0f, t->n, 1);
        break;
    }
    case OP_BF16: o->to_bf16(be, (uint16_t *)(void *)t->c, t->a, t->n); break;
    case OP_WIDEN: o->from_bf16(be, t->b, (const uint16_t *)(const void *)t->c, t->n); break;
    }
}

static double op_bytes(const bench_t *t, int op) {
    double f = sizeof(float), n = (double)t->n, nnz = (double)t->bags * t->bag;
    double ids = nnz * sizeof(int32_t) + (t->bags + 1.0) * sizeof(int32_t);
    switch (op) {
    case OP_COPY: return 2 * n * f;
    case OP_AXPY: return 3 * n * f;
    case OP_RELU_FWD: return 2 * n * f;
    case OP_RELU_BWD: return 3 * n * f;
    case OP_ADD_BIAS: return 2 * n * f;
    case OP_SUM_ROWS: return n * f;
    case OP_COPY_COLS: return 2 * (double)(t->n / 48) * 16 * f;
    case OP_BAG_FWD: return nnz * t->dim * f + (double)t->bags * t->dim * f + ids;
    case OP_BAG_BWD:
        return (double)t->n_rows * t->dim * f + (double)t->bags * t->dim * f + ids + 2 * nnz * t->dim * f;
    case OP_BAG_BWD_ROWS: /* each entry's dy row gathered, each gradient row written once, the by-row lists */
        return nnz * t->dim * f + (double)t->n_rows * t->dim * f + nnz * (sizeof(int32_t) + f) +
               (t->n_rows + 1.0) * sizeof(int32_t);
    case OP_SGD: return 3 * n * f;  /* p and g read, p written */
    case OP_ADAM: return 7 * n * f; /* p, m, v, g read; p, m, v written */
    case OP_BF16: return n * f + n * sizeof(uint16_t);
    case OP_WIDEN: return n * f + n * sizeof(uint16_t);
    }
    return 0;
}

static void sync_all(bench_t *t) {
    t->be->ops->sync(t->be);
    CUDA_CHECK(cudaDeviceSynchronize());
}

static double time_op(bench_t *t, int op, int iters) {
    for (int i = 0; i < 2; i++)
        run_op(t, op);
    sync_all(t);
    double t0 = now_s();
    for (int i = 0; i < iters; i++)
        run_op(t, op);
    sync_all(t);
    return (now_s() - t0) / iters;
}

static long parse_arg(const char *s, long lo, long hi, const char *what) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!s[0] || *end || v < lo || v > hi) {
        fprintf(stderr, "%s must be an integer in [%ld, %ld], not '%s'\n", what, lo, hi, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    long mb = 256, iters = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = parse_arg(argv[++i], 1, 16384, "--mb");
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = parse_arg(argv[++i], 1, 100000, "--iters");
        else {
            fprintf(stderr, "usage: %s [--mb N] [--iters N]\n", argv[0]);
            return 2;
        }
    }
    char err[512] = "";
    bench_t t = {.be = backend_create("cuda", 1, err, sizeof err)};
    if (!t.be) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const backend_ops_t *o = t.be->ops;
    t.n = ((size_t)mb << 20) / sizeof(float) / (48 * BIAS_COLS) *
          (48 * BIAS_COLS); /* whole rows for every op */
    size_t bytes = t.n * sizeof(float);
    t.dim = 64;
    t.n_rows = (int)(t.n / (size_t)t.dim);
    t.bag = 16;
    t.bags = (int)(t.n / (size_t)t.dim / (size_t)t.bag); /* reads about one table's worth of rows */
    t.a = o->alloc(t.be, bytes);
    t.b = o->alloc(t.be, bytes);
    t.c = o->alloc(t.be, bytes);
    t.grad = o->alloc(t.be, bytes);
    t.y = o->alloc(t.be, (size_t)t.bags * t.dim * sizeof(float));
    t.off = o->alloc(t.be, ((size_t)t.bags + 1) * sizeof(int32_t));
    t.idx = o->alloc(t.be, (size_t)t.bags * t.bag * sizeof(int32_t));
    if (!t.a || !t.b || !t.c || !t.grad || !t.y || !t.off || !t.idx) {
        fprintf(stderr, "out of device memory for %ld MB buffers\n", mb);
        return 1;
    }
    float *host = malloc(bytes);
    int32_t *hoff = malloc(((size_t)t.bags + 1) * sizeof(int32_t));
    int32_t *hidx = malloc((size_t)t.bags * t.bag * sizeof(int32_t));
    if (!host || !hoff || !hidx) {
        fprintf(stderr, "out of host memory\n");
        return 1;
    }
    uint64_t s = 88172645463325252ull; /* xorshift64: inputs need only be varied, not good */
    for (size_t i = 0; i < t.n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        host[i] = (float)(s >> 40) / 16777216.0f - 0.5f;
    }
    for (int b = 0; b <= t.bags; b++)
        hoff[b] = b * t.bag;
    for (size_t j = 0; j < (size_t)t.bags * t.bag; j++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        hidx[j] = (int32_t)(s % (uint64_t)t.n_rows);
    }
    o->to_device(t.be, t.a, host, bytes);
    o->to_device(t.be, t.b, host, bytes);
    o->to_device(t.be, t.off, hoff, ((size_t)t.bags + 1) * sizeof(int32_t));
    o->to_device(t.be, t.idx, hidx, (size_t)t.bags * t.bag * sizeof(int32_t));
    size_t nnz = (size_t)t.bags * t.bag;
    int32_t *roff = malloc(((size_t)t.n_rows + 1) * sizeof(int32_t)), *rbag = malloc(nnz * sizeof(int32_t));
    float *rw = malloc(nnz * sizeof(float));
    int32_t *droff = o->alloc(t.be, ((size_t)t.n_rows + 1) * sizeof(int32_t)),
            *drbag = o->alloc(t.be, nnz * sizeof(int32_t));
    float *drw = o->alloc(t.be, nnz * sizeof(float));
    if (!roff || !rbag || !rw || !droff || !drbag || !drw) {
        fprintf(stderr, "out of memory for the bags by row\n");
        return 1;
    }
    bag_rows_build(hoff, hidx, NULL, t.bags, 0, t.n_rows, roff, rbag, rw);
    o->to_device(t.be, droff, roff, ((size_t)t.n_rows + 1) * sizeof(int32_t));
    o->to_device(t.be, drbag, rbag, nnz * sizeof(int32_t));
    o->to_device(t.be, drw, rw, nnz * sizeof(float));
    t.by_row = (bag_rows_t){droff, drbag, drw};
    free(roff);
    free(rbag);
    free(rw);
    free(host);
    free(hoff);
    free(hidx);

    struct cudaDeviceProp prop;
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    printf("device %d: %s (sm_%d%d), buffers %.0f MB, %ld timed runs per op; bags: %d x %d ids, dim %d, "
           "table %d rows\n",
           dev, prop.name, prop.major, prop.minor, bytes / 1048576.0, iters, t.bags, t.bag, t.dim, t.n_rows);
    printf("%-22s %12s %10s %10s %10s\n", "op", "MB moved", "ms", "GB/s", "% of copy");
    double copy_gbs = 0;
    for (int op = 0; op < OP_COUNT; op++) {
        double sec = time_op(&t, op, (int)iters), moved = op_bytes(&t, op), gbs = moved / sec / 1e9;
        if (op == OP_COPY) copy_gbs = gbs;
        printf("%-22s %12.1f %10.3f %10.1f %9.1f%%\n", op_names[op], moved / 1e6, sec * 1e3, gbs,
               100.0 * gbs / copy_gbs);
    }
    o->free(t.be, t.a);
    o->free(t.be, t.b);
    o->free(t.be, t.c);
    o->free(t.be, t.grad);
    o->free(t.be, t.y);
    o->free(t.be, t.off);
    o->free(t.be, t.idx);
    o->free(t.be, droff);
    o->free(t.be, drbag);
    o->free(t.be, drw);
    backend_free(t.be);
    return 0;
}
