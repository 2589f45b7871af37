/* CPU backend: OpenBLAS for GEMM, plain loops for the rest. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "optim.h"
#include "util.h" /* bf16_from_f32 */

static void *cpu_alloc(backend_t *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    memset(p, 0, bytes);
    return p;
}

static void cpu_free(backend_t *be, void *p) {
    (void)be;
    free(p);
}

static void cpu_copy(backend_t *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    memcpy(dst, src, bytes);
}

static void cpu_sync(backend_t *be) {
    (void)be;
}

static void cpu_gemm(backend_t *be, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                     const float *b, float beta, float *c) {
    (void)be;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                a, ta ? m : k, b, tb ? k : n, beta, c, n);
}

static void cpu_add_bias(backend_t *be, float *y, const float *bias, int rows, int cols) {
    (void)be;
    for (int r = 0; r < rows; r++) {
        float *row = y + (size_t)r * cols;
        for (int c = 0; c < cols; c++)
            row[c] += bias[c];
    }
}

static void cpu_sum_rows(backend_t *be, float *out, const float *x, int rows, int cols) {
    (void)be;
    memset(out, 0, sizeof(float) * (size_t)cols);
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * cols;
        for (int c = 0; c < cols; c++)
            out[c] += row[c];
    }
}

static void cpu_relu_fwd(backend_t *be, const float *x, float *y, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void cpu_relu_bwd(backend_t *be, const float *y, const float *dy, float *dx, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

static void cpu_softmax_xent(backend_t *be, const float *logits, const int32_t *labels, int rows, int classes,
                             float scale, float *loss, int32_t *pred, float *dlogits) {
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *x = logits + (size_t)r * classes;
        int arg = 0;
        for (int c = 1; c < classes; c++)
            if (x[c] > x[arg]) arg = c;
        float mx = x[arg], sum = 0.0f;
        for (int c = 0; c < classes; c++)
            sum += expf(x[c] - mx);
        loss[r] = logf(sum) - (x[labels[r]] - mx);
        pred[r] = arg;
        if (dlogits) {
            float *d = dlogits + (size_t)r * classes, inv = 1.0f / sum;
            for (int c = 0; c < classes; c++)
                d[c] = expf(x[c] - mx) * inv * scale;
            d[labels[r]] -= scale;
        }
    }
}

static void cpu_sigmoid_bce(backend_t *be, const float *logits, const int32_t *labels, int rows, float scale,
                            float *loss, int32_t *pred, float *dlogits) {
    (void)be;
    for (int r = 0; r < rows; r++) {
        float x = logits[r], y = (float)labels[r];
        loss[r] = fmaxf(x, 0.0f) - x * y + log1pf(expf(-fabsf(x)));
        pred[r] = x > 0.0f;
        if (dlogits) {
            float p = x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
            dlogits[r] = (p - y) * scale;
        }
    }
}

static void cpu_axpy(backend_t *be, float *y, const float *x, float a, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void cpu_copy_cols(backend_t *be, float *dst, int ld_dst, const float *src, int ld_src, int rows,
                          int cols) {
    (void)be;
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * ld_dst, src + (size_t)r * ld_src, (size_t)cols * sizeof(float));
}

static void cpu_embedding_bag_fwd(backend_t *be, const float *rows, int dim, const int32_t *off,
                                  const int32_t *idx, const float *wts, int batch, int mean, float *y,
                                  int ldy) {
    (void)be;
    for (int b = 0; b < batch; b++) {
        float *out = y + (size_t)b * ldy;
        memset(out, 0, (size_t)dim * sizeof(float));
        for (int j = off[b]; j < off[b + 1]; j++) {
            const float *row = rows + (size_t)idx[j] * dim;
            float w = wts ? wts[j] : 1.0f;
            for (int c = 0; c < dim; c++)
                out[c] += w * row[c];
        }
        int n = off[b + 1] - off[b];
        if (mean && n > 1)
            for (int c = 0; c < dim; c++)
                out[c] /= (float)n;
    }
}

/* Walks the bags in order, so it needs no by_row. */
static void cpu_embedding_bag_bwd(backend_t *be, const float *dy, int ldy, int dim, const int32_t *off,
                                  const int32_t *idx, const float *wts, int batch, int mean, float *grad,
                                  int n_rows, const bag_rows_t *by_row) {
    (void)be;
    (void)by_row;
    memset(grad, 0, (size_t)n_rows * (size_t)dim * sizeof(float));
    for (int b = 0; b < batch; b++) {
        const float *d = dy + (size_t)b * ldy;
        int n = off[b + 1] - off[b];
        float scale = mean && n > 1 ? 1.0f / (float)n : 1.0f;
        for (int j = off[b]; j < off[b + 1]; j++) {
            float *g = grad + (size_t)idx[j] * dim;
            float w = (wts ? wts[j] : 1.0f) * scale;
            for (int c = 0; c < dim; c++)
                g[c] += w * d[c];
        }
    }
}

static void cpu_interact_fwd(backend_t *be, const float *t, int batch, int f, int d, float *y, int ldy) {
    (void)be;
    for (int b = 0; b < batch; b++) {
        const float *v = t + (size_t)b * f * d;
        float *out = y + (size_t)b * ldy;
        int j = 0;
        for (int i = 1; i < f; i++)
            for (int k = 0; k < i; k++) {
                float s = 0.0f;
                for (int c = 0; c < d; c++)
                    s += v[i * d + c] * v[k * d + c];
                out[j++] = s;
            }
    }
}

static void cpu_interact_bwd(backend_t *be, const float *t, const float *dy, int ldy, int batch, int f, int d,
                             float *dt) {
    (void)be;
    memset(dt, 0, (size_t)batch * f * d * sizeof(float));
    for (int b = 0; b < batch; b++) {
        const float *v = t + (size_t)b * f * d, *g = dy + (size_t)b * ldy;
        float *dv = dt + (size_t)b * f * d;
        int j = 0;
        for (int i = 1; i < f; i++)
            for (int k = 0; k < i; k++) {
                float gj = g[j++];
                for (int c = 0; c < d; c++) {
                    dv[i * d + c] += gj * v[k * d + c];
                    dv[k * d + c] += gj * v[i * d + c];
                }
            }
    }
}

static void cpu_optim_step(backend_t *be, const optim_t *o, float *p, float *s0, float *s1,
                           const float *const *g, int ng, float gscale, size_t n, long t) {
    (void)be;
    optim_apply(o, p, s0, s1, g, ng, gscale, n, t);
}

static void cpu_to_bf16(backend_t *be, uint16_t *dst, const float *src, size_t n) {
    (void)be;
    bf16_from_f32(dst, src, n);
}

static void cpu_from_bf16(backend_t *be, float *dst, const uint16_t *src, size_t n) {
    (void)be;
    f32_from_bf16(dst, src, n);
}

static const backend_ops_t cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .sync = cpu_sync,
    .gemm = cpu_gemm,
    .add_bias = cpu_add_bias,
    .sum_rows = cpu_sum_rows,
    .relu_fwd = cpu_relu_fwd,
    .relu_bwd = cpu_relu_bwd,
    .softmax_xent = cpu_softmax_xent,
    .sigmoid_bce = cpu_sigmoid_bce,
    .axpy = cpu_axpy,
    .copy_cols = cpu_copy_cols,
    .embedding_bag_fwd = cpu_embedding_bag_fwd,
    .embedding_bag_bwd = cpu_embedding_bag_bwd,
    .interact_fwd = cpu_interact_fwd,
    .interact_bwd = cpu_interact_bwd,
    .optim_step = cpu_optim_step,
    .to_bf16 = cpu_to_bf16,
    .from_bf16 = cpu_from_bf16,
};

backend_t *backend_cpu_create(int threads) {
    backend_t *be = calloc(1, sizeof *be);
    if (!be) return NULL;
    be->ops = &cpu_ops;
    be->threads = threads > 0 ? threads : 1;
    be->host_memory = 1;
    openblas_set_num_threads(be->threads);
    return be;
}
