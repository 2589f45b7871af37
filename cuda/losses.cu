/* Loss ops of the CUDA backend: softmax cross-entropy (one warp per row) and sigmoid binary
 * cross-entropy (one thread per row). The formulas are the CPU backend's, so the two agree to rounding. */
#include <limits.h>
#include <math.h>

#include "cuda_check.h"
#include "kernels.h"

#define THREADS 256
#define FULL    0xffffffffu

/* Per row r (one warp each): the argmax (the lowest index among equal maxima, as the CPU's strict `>`
 * scan gives), the log-sum-exp about the max, the loss and, when dlogits is not NULL, the scaled
 * gradient. A label outside [0, classes) gives a NaN loss rather than an out-of-bounds read. */
static __global__ void softmax_xent_kernel(const float *logits, const int32_t *labels, int rows, int classes,
                                           float scale, float *loss, int32_t *pred, float *dlogits) {
    int lane = threadIdx.x & 31;
    size_t warp = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5,
           warps = ((size_t)gridDim.x * blockDim.x) >> 5;
    for (size_t r = warp; r < (size_t)rows; r += warps) {
        const float *x = logits + (size_t)r * classes;
        float mx = -INFINITY;
        int arg = INT_MAX;
        for (int c = lane; c < classes; c += 32)
            if (arg == INT_MAX || x[c] > mx) {
                mx = x[c];
                arg = c;
            }
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(FULL, mx, o);
            int a2 = __shfl_xor_sync(FULL, arg, o);
            if (a2 != INT_MAX && (arg == INT_MAX || m2 > mx || (m2 == mx && a2 < arg))) {
                mx = m2;
                arg = a2;
            }
        }
        float sum = 0.0f;
        for (int c = lane; c < classes; c += 32)
            sum += expf(x[c] - mx);
        for (int o = 16; o > 0; o >>= 1)
            sum += __shfl_xor_sync(FULL, sum, o);
        int lab = labels[r];
        int valid = lab >= 0 && lab < classes;
        if (lane == 0) {
            loss[r] = valid ? logf(sum) - (x[lab] - mx) : NAN;
            pred[r] = arg;
        }
        if (dlogits) {
            float *d = dlogits + (size_t)r * classes, inv = 1.0f / sum;
            for (int c = lane; c < classes; c += 32) {
                float g = expf(x[c] - mx) * inv * scale;
                d[c] = c == lab ? g - scale : g;
            }
        }
    }
}

static __global__ void sigmoid_bce_kernel(const float *logits, const int32_t *labels, int rows, float scale,
                                          float *loss, int32_t *pred, float *dlogits) {
    for (size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x; r < (size_t)rows;
         r += (size_t)gridDim.x * blockDim.x) {
        float x = logits[r], y = (float)labels[r];
        loss[r] = fmaxf(x, 0.0f) - x * y + log1pf(expf(-fabsf(x)));
        pred[r] = x > 0.0f;
        if (dlogits) {
            float p = x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
            dlogits[r] = (p - y) * scale;
        }
    }
}

void cuda_softmax_xent(cudaStream_t s, const float *logits, const int32_t *labels, int rows, int classes,
                       float scale, float *loss, int32_t *pred, float *dlogits) {
    if (rows <= 0 || classes <= 0) return;
    softmax_xent_kernel<<<cuda_blocks((size_t)rows * 32, THREADS), THREADS, 0, s>>>(
        logits, labels, rows, classes, scale, loss, pred, dlogits);
    CUDA_CHECK_LAUNCH();
}

void cuda_sigmoid_bce(cudaStream_t s, const float *logits, const int32_t *labels, int rows, float scale,
                      float *loss, int32_t *pred, float *dlogits) {
    if (rows <= 0) return;
    sigmoid_bce_kernel<<<cuda_blocks((size_t)rows, THREADS), THREADS, 0, s>>>(logits, labels, rows, scale,
                                                                              loss, pred, dlogits);
    CUDA_CHECK_LAUNCH();
}
