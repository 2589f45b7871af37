/* The CUDA backend against the CPU backend. Every op of the vtable runs on the same random inputs on
 * both, at several shapes (odd sizes, misaligned pointers, both transposes, empty bags, ...), into output
 * buffers poisoned with NaN first: an element the op should write and does not, or must not write and
 * does, shows as a mismatch. Then whole models run forward and backward through model_run on both
 * backends, and every layer's output and input gradient, every parameter gradient and every embedding
 * row gradient are compared.
 *
 * Bounds: exact where both sides do the same single rounding (relu, add_bias, copies); elsewhere
 * |cuda - cpu| <= tol * mag, where mag is the op applied to the inputs' absolute values (the sum of the
 * terms' magnitudes) and tol = eps * (2 + 2 sqrt(terms)) covers two different summation orders.
 *
 * Prints "SKIP: <reason>" and exits 77 when the build has no CUDA or no device is visible. The inputs
 * come from a fixed seed, printed; TESSERA_TEST_SEED=N picks others. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "expect.h"
#include "layer.h"
#include "model.h"
#include "optim.h"
#include "util.h"

#define EPS      ((double)FLT_EPSILON)
#define TF32_EPS (1.0 / 1024) /* TF32 keeps 10 mantissa bits */

static backend_t *cpu, *gpu;
static rng_t rng;
static int tf32; /* TESSERA_CUDA_TF32=1: cuBLAS may round GEMM inputs to TF32 */

/* The worst error / bound of the current op over its cases, printed by op_done(). */
static double op_worst;
static int op_cases;

static void op_done(const char *op) {
    fprintf(stderr, "%-18s %3d cases, worst |cuda - cpu| / bound %.3f\n", op, op_cases, op_worst);
    op_worst = 0;
    op_cases = 0;
}

static double sum_tol(double terms) {
    return EPS * (2.0 + 2.0 * sqrt(terms > 1 ? terms : 1));
}

static float uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)(rng_next(&rng) >> 40) / 16777216.0f;
}

static float *rand_floats(size_t n, float lo, float hi) {
    float *p = XMALLOC(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = uniform(lo, hi);
    return p;
}

/* NaN floats (and -1 as int32): the poison. */
static void *poisoned(size_t bytes) {
    void *p = XMALLOC(bytes);
    memset(p, 0xff, bytes);
    return p;
}

static float *abs_copy(const float *x, size_t n) {
    float *p = XMALLOC(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = fabsf(x[i]);
    return p;
}

static void *dev_copy(const void *host, size_t bytes) {
    void *d = gpu->ops->alloc(gpu, bytes);
    if (!d) {
        fprintf(stderr, "FAIL: the CUDA backend cannot allocate %zu bytes\n", bytes);
        exit(1);
    }
    gpu->ops->to_device(gpu, d, host, bytes);
    return d;
}

/* Copies device memory back into a new host buffer and frees the device memory. */
static void *dev_take(void *dev, size_t bytes) {
    void *h = XMALLOC(bytes);
    gpu->ops->to_host(gpu, h, dev, bytes);
    gpu->ops->free(gpu, dev);
    return h;
}

/* Compares n values of `got` (CUDA) with `ref` (CPU). Where ref is NaN (poison the op must leave alone)
 * got must be NaN too; elsewhere got must be within tol * mag[i] of ref (mag NULL: equal). */
static void check_close(const char *what, const float *got, const float *ref, const float *mag, size_t n,
                        double tol) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        int ok;
        if (isnan(ref[i])) {
            ok = isnan(got[i]);
        } else {
            double d = fabs((double)got[i] - (double)ref[i]), lim = mag ? tol * (double)mag[i] : 0.0;
            ok = isfinite(got[i]) && d <= lim;
            if (ok && d > 0 && d / lim > op_worst) op_worst = d / lim;
        }
        if (!ok && !bad++) first = i;
    }
    EXPECT(bad == 0, "%s: %zu of %zu values differ; first [%zu]: cuda %.9g cpu %.9g bound %.3g", what, bad, n,
           first, bad ? got[first] : 0.0, bad ? ref[first] : 0.0,
           bad && mag ? tol * (double)mag[first] : 0.0);
    op_cases++;
}

static void check_ints(const char *what, const int32_t *got, const int32_t *ref, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != ref[i] && !bad++) first = i;
    EXPECT(bad == 0, "%s: %zu of %zu values differ; first [%zu]: cuda %d cpu %d", what, bad, n, first,
           bad ? got[first] : 0, bad ? ref[first] : 0);
}

/* Norm-wise, for whole models: max |got - ref| <= tol * max |ref|, and no NaN where ref has none. */
static void check_norm(const char *what, const float *got, const float *ref, size_t n, double tol) {
    double diff = 0, scale = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) != isnan(ref[i])) nan = 1;
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > diff) diff = d;
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    }
    double rel = scale > 0 ? diff / scale : diff;
    EXPECT(!nan && rel <= tol, "%s: max |cuda - cpu| / max |cpu| = %.3g (bound %.1g)%s", what, rel, tol,
           nan ? ", NaN" : "");
    if (rel / tol > op_worst) op_worst = rel / tol;
    op_cases++;
}

static void test_vtable(void) {
    const backend_ops_t *o = gpu->ops;
    EXPECT(!strcmp(o->name, "cuda"), "name %s", o->name);
    EXPECT(!gpu->host_memory, "the CUDA backend says its memory is host memory");
#define OP(name)                                                                                             \
    { #name, o->name != NULL }
    const struct {
        const char *name;
        int present;
    } ops[] = {OP(alloc),        OP(free),         OP(to_device),         OP(to_host),
               OP(sync),         OP(gemm),         OP(add_bias),          OP(sum_rows),
               OP(relu_fwd),     OP(relu_bwd),     OP(softmax_xent),      OP(sigmoid_bce),
               OP(axpy),         OP(copy_cols),    OP(embedding_bag_fwd), OP(embedding_bag_bwd),
               OP(interact_fwd), OP(interact_bwd), OP(destroy),           OP(optim_step),
               OP(to_bf16),      OP(from_bf16)};
#undef OP
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        EXPECT(ops[i].present, "the CUDA backend has no %s", ops[i].name);
}

/* alloc gives zeroed memory (or NULL when it cannot), copies round-trip, free(NULL) is a no-op. */
static void test_memory(void) {
    const backend_ops_t *o = gpu->ops;
    size_t n = (1u << 20) + 3;
    unsigned char *h = poisoned(n), *back = poisoned(n);
    void *d = o->alloc(gpu, n);
    EXPECT(d != NULL, "alloc(%zu)", n);
    o->to_host(gpu, h, d, n);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++)
        nonzero += h[i] != 0;
    EXPECT(nonzero == 0, "alloc: %zu of %zu bytes not zero", nonzero, n);
    for (size_t i = 0; i < n; i++)
        h[i] = (unsigned char)rng_next(&rng);
    o->to_device(gpu, d, h, n);
    o->to_host(gpu, back, d, n);
    o->sync(gpu);
    EXPECT(!memcmp(h, back, n), "to_device / to_host round trip of %zu bytes", n);
    o->free(gpu, d);
    o->free(gpu, NULL);
    void *z = o->alloc(gpu, 0);
    EXPECT(z != NULL, "alloc(0) is NULL (the CPU backend gives a pointer)");
    o->free(gpu, z);
    void *huge = o->alloc(gpu, (size_t)1 << 50);
    EXPECT(huge == NULL, "alloc of 1 PiB did not fail");
    o->free(gpu, huge);
    free(h);
    free(back);
    op_cases = 1;
    op_done("alloc/copies");
}

/* the last two are larger than one sweep of the grid (4096 blocks of 256 threads, float4 or scalar) */
static const size_t elem_sizes[] = {1, 3, 4, 31, 256, 1000, 4097, 65537, (1u << 20) + 3, (9u << 20) + 5};
#define N_ELEM (sizeof elem_sizes / sizeof elem_sizes[0])

/* to_bf16 against the CPU's bf16_from_f32, bit for bit, at each size and one float off: random floats
 * of every exponent, with the cases rounding can get wrong planted among them (ties to even either way,
 * the largest finite floats that round to infinity, infinities, subnormals, signed zeros, NaNs with
 * payloads), into a poisoned output: an element not written shows as 0xffff. */
static void test_to_bf16(void) {
    static const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x7f7fffffu, 0xff7fffffu,
                                       0x7f800000u, 0xff800000u, 0x00000001u, 0x807fffffu, 0x00000000u,
                                       0x80000000u, 0x7fc00001u, 0xffa00000u, 0x7f800001u, 0x3f7f8000u};
    size_t nsp = sizeof special / sizeof special[0];
    for (size_t si = 0; si < N_ELEM; si++)
        for (int off = 0; off <= 1; off++) {
            size_t n = elem_sizes[si];
            uint32_t *bits = XMALLOC((n + 1) * sizeof *bits);
            for (size_t i = 0; i < n + 1; i++)
                bits[i] = i % 7 == 3 ? special[(i / 7) % nsp] : (uint32_t)(rng_next(&rng) >> 32);
            float *x = XMALLOC((n + 1) * sizeof *x);
            memcpy(x, bits, (n + 1) * sizeof *x);
            uint16_t *ref = XMALLOC((n + 1) * sizeof *ref), *got;
            cpu->ops->to_bf16(cpu, ref, x + off, n);
            float *dx = dev_copy(x, (n + 1) * sizeof *x);
            uint16_t *poison = poisoned((n + 1) * sizeof *poison),
                     *dy = dev_copy(poison, (n + 1) * sizeof *dy);
            free(poison);
            gpu->ops->to_bf16(gpu, dy, dx + off, n);
            got = dev_take(dy, (n + 1) * sizeof *got);
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < n; i++)
                if (got[i] != ref[i] && !bad++) first = i;
            EXPECT(
                bad == 0,
                "to_bf16 n=%zu off=%d: %zu values differ; first [%zu] (f32 0x%08x): cuda 0x%04x cpu 0x%04x",
                n, off, bad, first, bad ? bits[first + off] : 0u, bad ? got[first] : 0u,
                bad ? ref[first] : 0u);
            EXPECT(got[n] == 0xffffu, "to_bf16 n=%zu wrote past its end", n);
            gpu->ops->free(gpu, dx);
            free(bits);
            free(x);
            free(ref);
            free(got);
            op_cases++;
        }
    op_done("to_bf16");
}

/* from_bf16 against the CPU's f32_from_bf16, bit for bit (exact: compared as bits, so NaN payloads
 * count), at each size and one element off, into a poisoned output. */
static void test_from_bf16(void) {
    static const uint16_t special[] = {0x7f80u, 0xff80u, 0x7fc1u, 0xffa0u, 0x0001u,
                                       0x807fu, 0x0000u, 0x8000u, 0x7f7fu, 0x3f80u};
    size_t nsp = sizeof special / sizeof special[0];
    for (size_t si = 0; si < N_ELEM; si++)
        for (int off = 0; off <= 1; off++) {
            size_t n = elem_sizes[si];
            uint16_t *x = XMALLOC((n + 1) * sizeof *x);
            for (size_t i = 0; i < n + 1; i++)
                x[i] = i % 5 == 2 ? special[(i / 5) % nsp] : (uint16_t)(rng_next(&rng) >> 48);
            uint32_t *ref = XMALLOC((n + 1) * sizeof *ref), *got;
            cpu->ops->from_bf16(cpu, (float *)(void *)ref, x + off, n);
            uint16_t *dx = dev_copy(x, (n + 1) * sizeof *x);
            uint32_t *poison = poisoned((n + 1) * sizeof *poison),
                     *dy = dev_copy(poison, (n + 1) * sizeof *dy);
            free(poison);
            gpu->ops->from_bf16(gpu, (float *)(void *)dy, dx + off, n);
            got = dev_take(dy, (n + 1) * sizeof *got);
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < n; i++)
                if (got[i] != ref[i] && !bad++) first = i;
            EXPECT(bad == 0,
                   "from_bf16 n=%zu off=%d: %zu values differ; first [%zu] (bf16 0x%04x): cuda 0x%08x cpu "
                   "0x%08x",
                   n, off, bad, first, bad ? x[first + off] : 0u, bad ? got[first] : 0u,
                   bad ? ref[first] : 0u);
            EXPECT(got[n] == 0xffffffffu, "from_bf16 n=%zu wrote past its end", n);
            gpu->ops->free(gpu, dx);
            free(x);
            free(ref);
            free(got);
            op_cases++;
        }
    op_done("from_bf16");
}

/* relu, relu_bwd and axpy at each size, at aligned pointers and one float off (the scalar path). */
static void test_elementwise(void) {
    const char *names[3] = {"relu_fwd", "relu_bwd", "axpy"};
    for (int op = 0; op < 3; op++) {
        for (size_t s = 0; s < N_ELEM; s++)
            for (int off = 0; off <= 1; off++) {
                size_t n = elem_sizes[s], all = n + 1, bytes = all * sizeof(float);
                float *x = rand_floats(all, -1, 1), *y = rand_floats(all, -1, 1);
                for (size_t i = 0; i < all; i += 7)
                    x[i] = i % 2 ? -0.0f : 0.0f; /* exact zeros: the relu edge */
                float *dx = dev_copy(x, bytes), *ref, *got;
                char what[64];
                snprintf(what, sizeof what, "%s n=%zu off=%d", names[op], n, off);
                if (op == 0) {
                    ref = poisoned(bytes);
                    float *dy = dev_copy(ref, bytes);
                    cpu->ops->relu_fwd(cpu, x + off, ref + off, n);
                    gpu->ops->relu_fwd(gpu, dx + off, dy + off, n);
                    got = dev_take(dy, bytes);
                    check_close(what, got, ref, NULL, all, 0);
                } else if (op == 1) {
                    ref = poisoned(bytes);
                    float *dg = dev_copy(y, bytes), *dd = dev_copy(ref, bytes);
                    cpu->ops->relu_bwd(cpu, x + off, y + off, ref + off, n);
                    gpu->ops->relu_bwd(gpu, dx + off, dg + off, dd + off, n);
                    got = dev_take(dd, bytes);
                    gpu->ops->free(gpu, dg);
                    check_close(what, got, ref, NULL, all, 0);
                } else {
                    const float a = -0.75f;
                    float *dy = dev_copy(y, bytes), *mag = abs_copy(y, all), *ax = abs_copy(x, all);
                    ref = y;
                    cpu->ops->axpy(cpu, ref + off, x + off, a, n);
                    cpu->ops->axpy(cpu, mag + off, ax + off, fabsf(a), n);
                    gpu->ops->axpy(gpu, dy + off, dx + off, a, n);
                    got = dev_take(dy, bytes);
                    check_close(what, got, ref, mag, all, sum_tol(2));
                    free(mag);
                    free(ax);
                    y = NULL; /* it is ref */
                }
                gpu->ops->free(gpu, dx);
                free(x);
                free(y);
                free(ref);
                free(got);
            }
        op_done(names[op]);
    }
}

/* the last two take more than one sweep of the grid (scalar, then float4) */
static const int rc_shapes[][2] = {{1, 1},    {3, 5}, {7, 64},   {129, 33},    {1000, 1},   {257, 1024},
                                   {4096, 3}, {0, 5}, {2, 4096}, {4099, 1001}, {4100, 2048}};
#define N_RC (sizeof rc_shapes / sizeof rc_shapes[0])

static void test_add_bias_sum_rows(void) {
    for (size_t s = 0; s < N_RC; s++)
        for (int off = 0; off <= 1; off++) {
            int rows = rc_shapes[s][0], cols = rc_shapes[s][1];
            size_t n = (size_t)rows * cols + 1;
            float *y = rand_floats(n, -1, 1), *bias = rand_floats((size_t)cols + 1, -1, 1);
            float *dy = dev_copy(y, n * sizeof(float)),
                  *db = dev_copy(bias, ((size_t)cols + 1) * sizeof(float));
            cpu->ops->add_bias(cpu, y + off, bias + off, rows, cols);
            gpu->ops->add_bias(gpu, dy + off, db + off, rows, cols);
            float *got = dev_take(dy, n * sizeof(float));
            char what[64];
            snprintf(what, sizeof what, "add_bias %dx%d off=%d", rows, cols, off);
            check_close(what, got, y, NULL, n, 0);
            gpu->ops->free(gpu, db);
            free(y);
            free(bias);
            free(got);
        }
    op_done("add_bias");
    for (size_t s = 0; s < N_RC; s++) {
        int rows = rc_shapes[s][0], cols = rc_shapes[s][1];
        size_t n = (size_t)rows * cols, ob = ((size_t)cols + 1) * sizeof(float);
        float *x = rand_floats(n + 1, -1, 1), *ax = abs_copy(x, n + 1);
        float *ref = poisoned(ob), *mag = poisoned(ob);
        float *dx = dev_copy(x, (n + 1) * sizeof(float)), *dout = dev_copy(ref, ob);
        cpu->ops->sum_rows(cpu, ref, x, rows, cols);
        cpu->ops->sum_rows(cpu, mag, ax, rows, cols);
        gpu->ops->sum_rows(gpu, dout, dx, rows, cols);
        float *got = dev_take(dout, ob);
        char what[64];
        snprintf(what, sizeof what, "sum_rows %dx%d", rows, cols);
        check_close(what, got, ref, mag, (size_t)cols + 1, sum_tol(rows));
        gpu->ops->free(gpu, dx);
        free(x);
        free(ax);
        free(ref);
        free(mag);
        free(got);
    }
    op_done("sum_rows");
}

static void test_copy_cols(void) {
    static const int cases[][4] = {
        {1, 1, 1, 1}, {5, 3, 7, 4}, {100, 16, 48, 16}, {33, 33, 33, 65}, {1000, 1, 3, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rows = cases[c][0], cols = cases[c][1], ld_src = cases[c][2], ld_dst = cases[c][3];
        size_t ns = (size_t)rows * ld_src, nd = (size_t)rows * ld_dst;
        float *src = rand_floats(ns, -1, 1), *ref = poisoned(nd * sizeof(float));
        float *ds = dev_copy(src, ns * sizeof(float)), *dd = dev_copy(ref, nd * sizeof(float));
        cpu->ops->copy_cols(cpu, ref, ld_dst, src, ld_src, rows, cols);
        gpu->ops->copy_cols(gpu, dd, ld_dst, ds, ld_src, rows, cols);
        float *got = dev_take(dd, nd * sizeof(float));
        char what[64];
        snprintf(what, sizeof what, "copy_cols %dx%d ld %d->%d", rows, cols, ld_src, ld_dst);
        check_close(what, got, ref, NULL, nd, 0);
        gpu->ops->free(gpu, ds);
        free(src);
        free(ref);
        free(got);
    }
    op_done("copy_cols");
}

/* Every transpose pair, beta = 0 into a poisoned C (C must not be read) and beta != 0. */
static void test_gemm(void) {
    static const int shapes[][3] = {{1, 1, 1},      {2, 3, 4},       {7, 5, 3},      {33, 65, 17},
                                    {64, 128, 256}, {257, 129, 300}, {1, 500, 1000}, {1000, 1, 7}};
    static const float ab[2][2] = {{1.0f, 0.0f}, {0.5f, -1.25f}};
    double eps = tf32 ? TF32_EPS : EPS;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            for (int v = 0; v < 2; v++) {
                int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ta = t & 1, tb = t >> 1;
                float alpha = ab[v][0], beta = ab[v][1];
                size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
                float *a = rand_floats(na, -1, 1), *b = rand_floats(nb, -1, 1);
                float *c = beta != 0 ? rand_floats(nc, -1, 1) : poisoned(nc * sizeof(float));
                float *aa = abs_copy(a, na), *ab_ = abs_copy(b, nb);
                float *mag = beta != 0 ? abs_copy(c, nc) : calloc(nc, sizeof(float));
                float *da = dev_copy(a, na * sizeof(float)), *db = dev_copy(b, nb * sizeof(float));
                float *dc = dev_copy(c, nc * sizeof(float));
                cpu->ops->gemm(cpu, ta, tb, m, n, k, alpha, a, b, beta, c);
                cpu->ops->gemm(cpu, ta, tb, m, n, k, fabsf(alpha), aa, ab_, fabsf(beta), mag);
                gpu->ops->gemm(gpu, ta, tb, m, n, k, alpha, da, db, beta, dc);
                float *got = dev_take(dc, nc * sizeof(float));
                char what[96];
                snprintf(what, sizeof what, "gemm %c%c m=%d n=%d k=%d alpha=%g beta=%g", ta ? 'T' : 'N',
                         tb ? 'T' : 'N', m, n, k, alpha, beta);
                check_close(what, got, c, mag, nc, eps * (2.0 + 2.0 * sqrt(k + 1.0)));
                gpu->ops->free(gpu, da);
                gpu->ops->free(gpu, db);
                free(a);
                free(b);
                free(c);
                free(aa);
                free(ab_);
                free(mag);
                free(got);
            }
    op_done("gemm");
}

static void test_softmax_xent(void) {
    static const int shapes[][2] = {{1, 1},      {5, 2},    {7, 10},    {64, 33},
                                    {1000, 128}, {3, 1000}, {17, 5000}, {40000, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int with_d = 0; with_d <= 1; with_d++) {
            int rows = shapes[s][0], classes = shapes[s][1];
            size_t n = (size_t)rows * classes;
            float scale = 1.0f / (float)rows, *x = rand_floats(n, -8, 8);
            int32_t *labels = XMALLOC((size_t)rows * sizeof(int32_t));
            for (int r = 0; r < rows; r++)
                labels[r] = (int32_t)rng_below(&rng, (uint64_t)classes);
            for (int c = 0; c < classes; c++)
                x[c] = 0.25f; /* row 0: all equal, the argmax is 0 */
            if (rows > 1 && classes > 4) x[classes + 3] = x[2 * classes - 1] = 9.0f; /* row 1: tie at 3 */
            float *loss = poisoned((size_t)rows * sizeof(float)), *d = poisoned(n * sizeof(float));
            int32_t *pred = poisoned((size_t)rows * sizeof(int32_t));
            float *dx = dev_copy(x, n * sizeof(float)), *dloss = dev_copy(loss, (size_t)rows * sizeof(float));
            float *dd = dev_copy(d, n * sizeof(float));
            int32_t *dl = dev_copy(labels, (size_t)rows * sizeof(int32_t));
            int32_t *dp = dev_copy(pred, (size_t)rows * sizeof(int32_t));
            cpu->ops->softmax_xent(cpu, x, labels, rows, classes, scale, loss, pred, with_d ? d : NULL);
            gpu->ops->softmax_xent(gpu, dx, dl, rows, classes, scale, dloss, dp, with_d ? dd : NULL);
            float *gl = dev_take(dloss, (size_t)rows * sizeof(float)), *gd = dev_take(dd, n * sizeof(float));
            int32_t *gp = dev_take(dp, (size_t)rows * sizeof(int32_t));
            double tol = EPS * (8.0 + 4.0 * sqrt((double)classes));
            float *mag = XMALLOC((n > (size_t)rows ? n : (size_t)rows) * sizeof(float));
            char what[96];
            for (int r = 0; r < rows; r++)
                mag[r] = fabsf(loss[r]) + 1.0f;
            snprintf(what, sizeof what, "softmax_xent %dx%d loss", rows, classes);
            check_close(what, gl, loss, mag, (size_t)rows, tol);
            snprintf(what, sizeof what, "softmax_xent %dx%d pred", rows, classes);
            check_ints(what, gp, pred, (size_t)rows);
            for (size_t i = 0; i < n; i++)
                mag[i] = fabsf(d[i]) + ((int)(i % classes) == labels[i / classes] ? scale : 0.0f);
            snprintf(what, sizeof what, "softmax_xent %dx%d dlogits%s", rows, classes,
                     with_d ? "" : " (NULL)");
            check_close(what, gd, d, with_d ? mag : NULL, n, tol);
            gpu->ops->free(gpu, dx);
            gpu->ops->free(gpu, dl);
            free(x);
            free(labels);
            free(loss);
            free(d);
            free(pred);
            free(gl);
            free(gd);
            free(gp);
            free(mag);
        }
    op_done("softmax_xent");
}

static void test_sigmoid_bce(void) {
    static const int sizes[] = {1, 7, 1000, 100003, 1100001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int with_d = 0; with_d <= 1; with_d++) {
            int rows = sizes[s];
            float scale = 1.0f / (float)rows, *x = rand_floats((size_t)rows, -20, 20);
            int32_t *labels = XMALLOC((size_t)rows * sizeof(int32_t));
            for (int r = 0; r < rows; r++)
                labels[r] = (int32_t)(rng_next(&rng) >> 63);
            for (int r = 0; r < rows; r += 5)
                x[r] = r % 3 == 0 ? 0.0f : r % 3 == 1 ? 1e-3f : -1e-3f;
            size_t fb = (size_t)rows * sizeof(float);
            float *loss = poisoned(fb), *d = poisoned(fb);
            int32_t *pred = poisoned((size_t)rows * sizeof(int32_t));
            float *dx = dev_copy(x, fb), *dloss = dev_copy(loss, fb), *dd = dev_copy(d, fb);
            int32_t *dl = dev_copy(labels, (size_t)rows * sizeof(int32_t));
            int32_t *dp = dev_copy(pred, (size_t)rows * sizeof(int32_t));
            cpu->ops->sigmoid_bce(cpu, x, labels, rows, scale, loss, pred, with_d ? d : NULL);
            gpu->ops->sigmoid_bce(gpu, dx, dl, rows, scale, dloss, dp, with_d ? dd : NULL);
            float *gl = dev_take(dloss, fb), *gd = dev_take(dd, fb);
            int32_t *gp = dev_take(dp, (size_t)rows * sizeof(int32_t));
            float *mag = XMALLOC(fb);
            char what[96];
            for (int r = 0; r < rows; r++)
                mag[r] = fabsf(loss[r]);
            snprintf(what, sizeof what, "sigmoid_bce n=%d loss", rows);
            check_close(what, gl, loss, mag, (size_t)rows, 16 * EPS);
            snprintf(what, sizeof what, "sigmoid_bce n=%d pred", rows);
            check_ints(what, gp, pred, (size_t)rows);
            for (int r = 0; r < rows; r++)
                mag[r] = fabsf(d[r]) + (labels[r] ? scale : 0.0f);
            snprintf(what, sizeof what, "sigmoid_bce n=%d dlogits%s", rows, with_d ? "" : " (NULL)");
            check_close(what, gd, d, with_d ? mag : NULL, (size_t)rows, 16 * EPS);
            gpu->ops->free(gpu, dx);
            gpu->ops->free(gpu, dl);
            free(x);
            free(labels);
            free(loss);
            free(d);
            free(pred);
            free(gl);
            free(gd);
            free(gp);
            free(mag);
        }
    op_done("sigmoid_bce");
}

/* Bags of 0 .. max_bag ids (every 7th empty, every 5th of one id), ids repeating within and across bags. */
static int32_t *make_bags(int batch, int n_rows, int max_bag, int32_t **idx_out) {
    int32_t *off = XMALLOC(((size_t)batch + 1) * sizeof(int32_t));
    off[0] = 0;
    for (int b = 0; b < batch; b++) {
        int n = (int)rng_below(&rng, (uint64_t)max_bag + 1);
        if (b % 7 == 3) n = 0;
        if (b % 5 == 1 && max_bag > 0) n = 1;
        off[b + 1] = off[b] + n;
    }
    int32_t *idx = XMALLOC(((size_t)off[batch] + 1) * sizeof(int32_t));
    for (int j = 0; j < off[batch]; j++)
        idx[j] = (int32_t)rng_below(&rng, (uint64_t)n_rows);
    *idx_out = idx;
    return off;
}

static void test_embedding_bag(void) {
    /* batch, table rows, dim, largest bag, weighted, mean, y column offset, extra columns in y */
    static const int cases[][8] = {
        {1, 1, 1, 1, 0, 0, 0, 0},          {5, 3, 4, 3, 1, 1, 0, 0},     {64, 50, 16, 6, 0, 0, 0, 0},
        {64, 50, 16, 6, 1, 1, 16, 16},     {33, 1000, 3, 5, 1, 0, 1, 4}, {100, 7, 129, 9, 0, 1, 2, 5},
        {300, 20000, 64, 20, 1, 0, 0, 64}, {10, 4, 8, 0, 0, 1, 0, 0},    {2000, 5, 32, 40, 0, 0, 32, 0},
        {10000, 1000, 128, 3, 1, 1, 0, 0} /* more bags than one sweep of the grid */};
    for (int pass = 0; pass < 2; pass++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            int batch = cases[c][0], n_rows = cases[c][1], dim = cases[c][2], max_bag = cases[c][3];
            int weighted = cases[c][4], mean = cases[c][5], col = cases[c][6], ldy = col + dim + cases[c][7];
            int32_t *idx, *off = make_bags(batch, n_rows, max_bag, &idx);
            int nnz = off[batch];
            size_t nt = (size_t)n_rows * dim, ny = (size_t)batch * ldy;
            float *rows = rand_floats(nt, -1, 1),
                  *wts = weighted ? rand_floats((size_t)nnz + 1, 0.5f, 1.5f) : NULL;
            float *arows = abs_copy(rows, nt), *awts = weighted ? abs_copy(wts, (size_t)nnz + 1) : NULL;
            int32_t *doff = dev_copy(off, ((size_t)batch + 1) * sizeof(int32_t));
            int32_t *didx = dev_copy(idx, ((size_t)nnz + 1) * sizeof(int32_t));
            float *dwts = weighted ? dev_copy(wts, ((size_t)nnz + 1) * sizeof(float)) : NULL;
            char what[128];
            snprintf(what, sizeof what, "embedding_bag_%s batch=%d rows=%d dim=%d bag<=%d%s%s ldy=%d+%d",
                     pass ? "bwd" : "fwd", batch, n_rows, dim, max_bag, weighted ? " weighted" : "",
                     mean ? " mean" : " sum", col, ldy);
            if (pass == 0) {
                float *ref = poisoned(ny * sizeof(float)), *mag = poisoned(ny * sizeof(float));
                float *drows = dev_copy(rows, nt * sizeof(float)), *dy = dev_copy(ref, ny * sizeof(float));
                cpu->ops->embedding_bag_fwd(cpu, rows, dim, off, idx, wts, batch, mean, ref + col, ldy);
                cpu->ops->embedding_bag_fwd(cpu, arows, dim, off, idx, awts, batch, mean, mag + col, ldy);
                gpu->ops->embedding_bag_fwd(gpu, drows, dim, doff, didx, dwts, batch, mean, dy + col, ldy);
                float *got = dev_take(dy, ny * sizeof(float));
                check_close(what, got, ref, mag, ny, sum_tol(max_bag));
                gpu->ops->free(gpu, drows);
                free(ref);
                free(mag);
                free(got);
            } else {
                float *dyh = rand_floats(ny, -1, 1), *ady = abs_copy(dyh, ny);
                float *ref = poisoned((nt + 1) * sizeof(float)), *mag = poisoned((nt + 1) * sizeof(float));
                float *ddy = dev_copy(dyh, ny * sizeof(float)), *dg = dev_copy(ref, (nt + 1) * sizeof(float));
                cpu->ops->embedding_bag_bwd(cpu, dyh + col, ldy, dim, off, idx, wts, batch, mean, ref, n_rows,
                                            NULL);
                cpu->ops->embedding_bag_bwd(cpu, ady + col, ldy, dim, off, idx, awts, batch, mean, mag,
                                            n_rows, NULL);
                gpu->ops->embedding_bag_bwd(gpu, ddy + col, ldy, dim, doff, didx, dwts, batch, mean, dg,
                                            n_rows, NULL);
                float *got = dev_take(dg, (nt + 1) * sizeof(float));
                int *count = calloc((size_t)n_rows, sizeof(int)), most = 1;
                for (int j = 0; j < nnz; j++)
                    if (++count[idx[j]] > most) most = count[idx[j]];
                check_close(what, got, ref, mag, nt + 1, sum_tol(most)); /* atomics: any order */
                /* With the bags by row: each row summed in bag order, the CPU's bits exactly. */
                int32_t *roff = malloc(((size_t)n_rows + 1) * sizeof(int32_t));
                int32_t *rbag = malloc(((size_t)nnz + 1) * sizeof(int32_t));
                float *rw = malloc(((size_t)nnz + 1) * sizeof(float));
                bag_rows_build(off, idx, wts, batch, mean, n_rows, roff, rbag, rw);
                bag_rows_t by_row = {dev_copy(roff, ((size_t)n_rows + 1) * sizeof(int32_t)),
                                     dev_copy(rbag, ((size_t)nnz + 1) * sizeof(int32_t)),
                                     dev_copy(rw, ((size_t)nnz + 1) * sizeof(float))};
                float *pz = poisoned((nt + 1) * sizeof(float)), *dg2 = dev_copy(pz, (nt + 1) * sizeof(float));
                gpu->ops->embedding_bag_bwd(gpu, ddy + col, ldy, dim, doff, didx, dwts, batch, mean, dg2,
                                            n_rows, &by_row);
                float *got2 = dev_take(dg2, (nt + 1) * sizeof(float));
                char exact[160];
                snprintf(exact, sizeof exact, "%s by_row (bit-exact)", what);
                check_close(exact, got2, ref, NULL, nt + 1, 0.0); /* and the poison past the end kept */
                gpu->ops->free(gpu, (void *)by_row.off);
                gpu->ops->free(gpu, (void *)by_row.bag);
                gpu->ops->free(gpu, (void *)by_row.w);
                free(roff);
                free(rbag);
                free(rw);
                free(pz);
                free(got2);
                gpu->ops->free(gpu, ddy);
                free(dyh);
                free(ady);
                free(ref);
                free(mag);
                free(got);
                free(count);
            }
            gpu->ops->free(gpu, doff);
            gpu->ops->free(gpu, didx);
            gpu->ops->free(gpu, dwts);
            free(off);
            free(idx);
            free(rows);
            free(wts);
            free(arows);
            free(awts);
        }
        op_done(pass ? "embedding_bag_bwd" : "embedding_bag_fwd");
    }
}

/* The shard's optimizer step (ps.device = cuda): every optimizer, with and without weight decay, one to
 * 70 gradients (more than fit one kernel argument list), against optim_apply: bit for bit, since both
 * round every operation the same way in the same order. */
static void test_optim_step(void) {
    static const char *kinds[] = {"sgd", "momentum", "adagrad", "adam", "adamw"};
    static const size_t sizes[] = {1, 1000, 65537, (1u << 20) + 3};
    static const int ngs[] = {1, 3, 70};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (int wd = 0; wd < 2; wd++)
            for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++)
                for (size_t q = 0; q < sizeof ngs / sizeof ngs[0]; q++) {
                    optim_t o = {.lr = 1e-3f,
                                 .beta1 = 0.9f,
                                 .beta2 = 0.999f,
                                 .eps = 1e-8f,
                                 .momentum = 0.9f,
                                 .weight_decay = wd ? 0.01f : 0.0f};
                    optim_parse_kind(kinds[k], &o.kind);
                    size_t n = sizes[z], bytes = n * sizeof(float);
                    int ng = ngs[q], slots = optim_slots(&o);
                    if (ng > 3 && n > 65537) continue; /* 70 large gradients add time, not coverage */
                    long t = 1 + (long)(z * 3 + q);
                    float *p = rand_floats(n, -1, 1), *s[2] = {NULL, NULL}, *g[70];
                    for (int j = 0; j < slots; j++)
                        s[j] = rand_floats(n, 0, 0.01f); /* adagrad's sum, adam's second moment: >= 0 */
                    for (int j = 0; j < ng; j++)
                        g[j] = rand_floats(n, -0.1f, 0.1f);
                    float *dp = dev_copy(p, bytes), *ds[2] = {NULL, NULL};
                    const float *dg[70];
                    for (int j = 0; j < slots; j++)
                        ds[j] = dev_copy(s[j], bytes);
                    for (int j = 0; j < ng; j++)
                        dg[j] = dev_copy(g[j], bytes);
                    optim_apply(&o, p, s[0], s[1], (const float *const *)g, ng, 1.0f / (float)ng, n, t);
                    gpu->ops->optim_step(gpu, &o, dp, ds[0], ds[1], dg, ng, 1.0f / (float)ng, n, t);
                    char what[96];
                    snprintf(what, sizeof what, "optim_step %s wd=%d n=%zu grads=%d", kinds[k], wd, n, ng);
                    float *got = dev_take(dp, bytes);
                    check_close(what, got, p, NULL, n, 0);
                    free(got);
                    for (int j = 0; j < slots; j++) {
                        got = dev_take(ds[j], bytes);
                        check_close(what, got, s[j], NULL, n, 0);
                        free(got);
                        free(s[j]);
                    }
                    for (int j = 0; j < ng; j++) {
                        gpu->ops->free(gpu, (void *)dg[j]);
                        free(g[j]);
                    }
                    free(p);
                }
    op_done("optim_step");
}

static void test_interact(void) {
    /* batch, F, d, y column offset, extra columns; {2, 100, 200}: too big for shared memory */
    static const int cases[][5] = {{1, 2, 1, 0, 0},      {3, 3, 4, 0, 0},     {16, 9, 16, 16, 0},
                                   {7, 27, 128, 128, 0}, {2, 100, 200, 0, 3}, {5, 1, 8, 8, 0},
                                   {5000, 3, 2, 0, 0}};
    for (int pass = 0; pass < 2; pass++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            int batch = cases[c][0], f = cases[c][1], d = cases[c][2], col = cases[c][3];
            int pairs = f * (f - 1) / 2, ldy = col + pairs + cases[c][4];
            size_t nt = (size_t)batch * f * d, ny = (size_t)batch * ldy + 1;
            float *t = rand_floats(nt, -1, 1), *at = abs_copy(t, nt), *dt = dev_copy(t, nt * sizeof(float));
            char what[96];
            snprintf(what, sizeof what, "interact_%s batch=%d F=%d d=%d ldy=%d+%d", pass ? "bwd" : "fwd",
                     batch, f, d, col, ldy);
            if (pass == 0) {
                float *ref = poisoned(ny * sizeof(float)), *mag = poisoned(ny * sizeof(float));
                float *dy = dev_copy(ref, ny * sizeof(float));
                cpu->ops->interact_fwd(cpu, t, batch, f, d, ref + col, ldy);
                cpu->ops->interact_fwd(cpu, at, batch, f, d, mag + col, ldy);
                gpu->ops->interact_fwd(gpu, dt, batch, f, d, dy + col, ldy);
                float *got = dev_take(dy, ny * sizeof(float));
                check_close(what, got, ref, mag, ny, sum_tol(d));
                free(ref);
                free(mag);
                free(got);
            } else {
                float *g = rand_floats(ny, -1, 1), *ag = abs_copy(g, ny);
                float *ref = poisoned((nt + 1) * sizeof(float)), *mag = poisoned((nt + 1) * sizeof(float));
                float *dg = dev_copy(g, ny * sizeof(float)), *ddt = dev_copy(ref, (nt + 1) * sizeof(float));
                cpu->ops->interact_bwd(cpu, t, g + col, ldy, batch, f, d, ref);
                cpu->ops->interact_bwd(cpu, at, ag + col, ldy, batch, f, d, mag);
                gpu->ops->interact_bwd(gpu, dt, dg + col, ldy, batch, f, d, ddt);
                float *got = dev_take(ddt, (nt + 1) * sizeof(float));
                check_close(what, got, ref, mag, nt + 1, sum_tol(f));
                gpu->ops->free(gpu, dg);
                free(g);
                free(ag);
                free(ref);
                free(mag);
                free(got);
            }
            gpu->ops->free(gpu, dt);
            free(t);
            free(at);
        }
        op_done(pass ? "interact_bwd" : "interact_fwd");
    }
}

/* ---- whole models: every layer's forward and backward through model_run on both backends ---- */

enum { MAX_TABLES = 8, UNIQUE = 24 };

typedef struct {
    int32_t *off, *idx;
    float *rows, *wts;
    int nnz;
} bags_t;

/* Runs `cfg` for one training batch on both backends from the same parameters, rows and data, and
 * compares the loss, every layer's output and its gradient, and every gradient. */
static void test_model(const char *name, job_config_t *cfg, int batch, int weighted) {
    model_t mc, mg;
    char err[512] = "";
    int rc = model_init(&mc, cfg, cpu, batch, err, sizeof err);
    EXPECT(rc == 0, "%s: model_init (cpu): %s", name, err);
    if (rc) return;
    rc = model_init(&mg, cfg, gpu, batch, err, sizeof err);
    EXPECT(rc == 0, "%s: model_init (cuda): %s", name, err);
    if (rc) {
        model_free(&mc);
        return;
    }
    const model_spec_t *s = &mc.spec;
    for (int t = 0; t < s->n_tensors; t++)
        model_spec_init_rows(s, t, 0, s->tensors[t].rows, rng_next(&rng), mc.params + s->tensors[t].offset);
    gpu->ops->to_device(gpu, mg.params, mc.params, s->n_floats * sizeof(float));
    bags_t bags[MAX_TABLES];
    float *gpu_grad[MAX_TABLES];
    EXPECT(s->n_tables <= MAX_TABLES, "%s: %d tables", name, s->n_tables);
    for (int t = 0; t < s->n_tables && t < MAX_TABLES; t++) {
        bags_t *b = &bags[t];
        int dim = s->tables[t].dim;
        b->off = make_bags(batch, UNIQUE, 4, &b->idx);
        b->nnz = b->off[batch];
        b->rows = rand_floats((size_t)UNIQUE * dim, -0.5f, 0.5f);
        b->wts = weighted ? rand_floats((size_t)b->nnz + 1, 0.5f, 1.5f) : NULL;
        mc.slots[t] = (sparse_slot_t){t,      UNIQUE, b->rows, XCALLOC((size_t)UNIQUE * dim, sizeof(float)),
                                      b->off, b->idx, b->wts,  NULL};
        gpu_grad[t] = dev_copy(mc.slots[t].grad, (size_t)UNIQUE * dim * sizeof(float));
        mg.slots[t] =
            (sparse_slot_t){t,
                            UNIQUE,
                            dev_copy(b->rows, (size_t)UNIQUE * dim * sizeof(float)),
                            gpu_grad[t],
                            dev_copy(b->off, ((size_t)batch + 1) * sizeof(int32_t)),
                            dev_copy(b->idx, ((size_t)b->nnz + 1) * sizeof(int32_t)),
                            weighted ? dev_copy(b->wts, ((size_t)b->nnz + 1) * sizeof(float)) : NULL,
                            NULL}; /* the atomic backward pass here; training's by-row one is tested above */
    }
    float *x = rand_floats((size_t)batch * (s->input_dim ? s->input_dim : 1), -1, 1);
    int32_t *y = XMALLOC((size_t)batch * sizeof(int32_t));
    for (int r = 0; r < batch; r++)
        y[r] = (int32_t)rng_below(&rng, s->classes == 1 ? 2 : (uint64_t)s->classes);
    double loss_c = 0, loss_g = 0;
    long correct_c = 0, correct_g = 0;
    model_run(&mc, x, y, batch, 1, &loss_c, &correct_c);
    model_run(&mg, x, y, batch, 1, &loss_g, &correct_g);
    double tol = tf32 ? 1e-2 : 1e-4;
    char what[128];
    EXPECT(fabs(loss_c - loss_g) <= tol * fabs(loss_c) + 1e-6, "%s: loss cpu %.9g cuda %.9g", name, loss_c,
           loss_g);
    /* a logit within rounding of a decision boundary may flip one prediction */
    EXPECT(labs(correct_c - correct_g) <= 1, "%s: correct cpu %ld cuda %ld", name, correct_c, correct_g);
    for (int i = 0; i < s->n_layers - 1; i++) {
        size_t n = (size_t)batch * s->layers[i].out;
        float *got = XMALLOC(n * sizeof(float));
        gpu->ops->to_host(gpu, got, mg.out[i], n * sizeof(float));
        snprintf(what, sizeof what, "%s: layer %s (%s) output", name, s->layers[i].name,
                 s->layers[i].ops->type);
        check_norm(what, got, mc.out[i], n, tol);
        gpu->ops->to_host(gpu, got, mg.dout[i], n * sizeof(float));
        snprintf(what, sizeof what, "%s: layer %s (%s) output gradient", name, s->layers[i].name,
                 s->layers[i].ops->type);
        check_norm(what, got, mc.dout[i], n, tol);
        free(got);
    }
    float *g = XMALLOC(s->n_floats * sizeof(float));
    gpu->ops->to_host(gpu, g, mg.grads, s->n_floats * sizeof(float));
    for (int t = 0; t < s->n_tensors; t++) {
        const tensor_info_t *ti = &s->tensors[t];
        snprintf(what, sizeof what, "%s: gradient of %s", name, ti->name);
        check_norm(what, g + ti->offset, mc.grads + ti->offset, (size_t)(ti->rows * ti->cols), tol);
    }
    free(g);
    for (int t = 0; t < s->n_tables && t < MAX_TABLES; t++) {
        size_t n = (size_t)UNIQUE * s->tables[t].dim;
        float *got = XMALLOC(n * sizeof(float));
        gpu->ops->to_host(gpu, got, gpu_grad[t], n * sizeof(float));
        snprintf(what, sizeof what, "%s: gradient of the rows of %s", name, s->tables[t].name);
        check_norm(what, got, mc.slots[t].grad, n, tol);
        free(got);
        gpu->ops->free(gpu, (void *)mg.slots[t].rows);
        gpu->ops->free(gpu, gpu_grad[t]);
        gpu->ops->free(gpu, (void *)mg.slots[t].off);
        gpu->ops->free(gpu, (void *)mg.slots[t].idx);
        gpu->ops->free(gpu, (void *)mg.slots[t].wts);
        free(mc.slots[t].grad);
        free(bags[t].off);
        free(bags[t].idx);
        free(bags[t].rows);
        free(bags[t].wts);
    }
    fprintf(stderr, "%-18s loss cpu %.9g cuda %.9g, correct %ld / %ld\n", name, loss_c, loss_g, correct_c,
            correct_g);
    free(x);
    free(y);
    model_free(&mc);
    model_free(&mg);
}

static void test_models(void) {
    job_config_t *cfg = XMALLOC(sizeof *cfg);
    /* an MLP: linear, relu, softmax_xent */
    config_defaults(cfg);
    cfg->input_dim = 37;
    cfg->n_layers = 4;
    cfg->layers[0] = (layer_cfg_t){.name = "fc1", .type = "linear", .out = 64};
    cfg->layers[1] = (layer_cfg_t){.name = "act", .type = "relu"};
    cfg->layers[2] = (layer_cfg_t){.name = "fc2", .type = "linear", .out = 10};
    cfg->layers[3] = (layer_cfg_t){.name = "loss", .type = "softmax_xent"};
    test_model("mlp", cfg, 33, 0);
    /* DLRM: bottom MLP, sum bags, dot interaction, top MLP, sigmoid_bce; and a concat of mean, weighted bags
     */
    for (int use_dot = 1; use_dot >= 0; use_dot--) {
        config_defaults(cfg);
        snprintf(cfg->data_format, sizeof cfg->data_format, "criteo");
        cfg->dense_features = 13;
        cfg->sparse_features = 4;
        cfg->n_layers = 8;
        cfg->layers[0] =
            (layer_cfg_t){.name = "bot", .type = "linear", .out = 16, .n_inputs = 1, .inputs = {"input"}};
        cfg->layers[1] = (layer_cfg_t){.name = "bot_act", .type = "relu"};
        cfg->layers[2] = (layer_cfg_t){
            .name = "emb", .type = "embedding_bag", .slot_begin = 0, .slot_end = use_dot ? 4 : 3, .dim = 16};
        snprintf(cfg->layers[2].mode, sizeof cfg->layers[2].mode, "%s", use_dot ? "sum" : "mean");
        cfg->layers[3] = (layer_cfg_t){.name = "mix", .n_inputs = 2, .inputs = {"bot_act", "emb"}};
        snprintf(cfg->layers[3].type, sizeof cfg->layers[3].type, "%s", use_dot ? "dot" : "concat");
        cfg->layers[4] = (layer_cfg_t){.name = "top", .type = "linear", .out = 32};
        cfg->layers[5] = (layer_cfg_t){.name = "top_act", .type = "relu"};
        cfg->layers[6] = (layer_cfg_t){.name = "out", .type = "linear", .out = 1};
        cfg->layers[7] = (layer_cfg_t){.name = "loss", .type = "sigmoid_bce"};
        test_model(use_dot ? "dlrm(dot)" : "ctr(concat)", cfg, use_dot ? 64 : 17, !use_dot);
    }
    free(cfg);
    op_done("models");
}

int main(int argc, char **argv) {
    char err[512] = "";
    gpu = backend_create("cuda", 1, err, sizeof err);
    if (!gpu) {
        printf("SKIP: %s\n", err);
        return 77;
    }
    if (argc > 1 && !strcmp(argv[1], "--probe")) { /* tells scripts whether the CUDA backend opens */
        printf("cuda backend available\n");
        backend_free(gpu);
        return 0;
    }
    cpu = backend_cpu_create(1);
    uint64_t seed = 20240613;
    const char *env = getenv("TESSERA_TEST_SEED");
    if (env) {
        char *end = NULL;
        unsigned long long v = strtoull(env, &end, 10);
        if (!env[0] || *end) {
            fprintf(stderr, "TESSERA_TEST_SEED must be a number, not '%s'\n", env);
            return 2;
        }
        seed = v;
    }
    env = getenv("TESSERA_CUDA_TF32");
    tf32 = env && !strcmp(env, "1");
    fprintf(stderr, "seed %llu (TESSERA_TEST_SEED=N for other inputs)%s\n", (unsigned long long)seed,
            tf32 ? "; TESSERA_CUDA_TF32=1: GEMM bounds for TF32" : "");
    rng_seed(&rng, seed);
    test_vtable();
    test_memory();
    test_elementwise();
    test_add_bias_sum_rows();
    test_copy_cols();
    test_gemm();
    test_softmax_xent();
    test_sigmoid_bce();
    test_embedding_bag();
    test_interact();
    test_optim_step();
    test_to_bf16();
    test_from_bf16();
    test_models();
    backend_free(gpu);
    backend_free(cpu);
    EXPECT_DONE();
}
