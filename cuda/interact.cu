/* DLRM's dot interaction on the CUDA backend: one block per example (grid-stride over the batch). The
 * example's F x d vectors (and, backward, its pair gradients) are staged in shared memory when they fit
 * in 48 KiB, else read from global memory. Each output is summed in the CPU's order. */
#include <math.h>

#include "cuda_check.h"
#include "kernels.h"

#define THREADS  128
#define SMEM_MAX (48 * 1024)

/* Pair j = i(i-1)/2 + k with k < i: the order (1,0), (2,0), (2,1), (3,0), ... */
static __device__ __forceinline__ int pair_row(int j) {
    int i = (int)((1.0f + sqrtf(1.0f + 8.0f * (float)j)) * 0.5f);
    while (i * (i - 1) / 2 > j)
        i--;
    while (i * (i + 1) / 2 <= j)
        i++;
    return i;
}

static __global__ void interact_fwd_kernel(const float *t, int batch, int f, int d, float *y, int ldy,
                                           int smem) {
    extern __shared__ float sh[];
    int fd = f * d, pairs = f * (f - 1) / 2;
    for (size_t b = blockIdx.x; b < (size_t)batch; b += gridDim.x) {
        const float *v = t + (size_t)b * fd;
        if (smem) {
            __syncthreads(); /* the previous example's readers are done */
            for (int e = threadIdx.x; e < fd; e += blockDim.x)
                sh[e] = v[e];
            __syncthreads();
            v = sh;
        }
        for (int j = threadIdx.x; j < pairs; j += blockDim.x) {
            int i = pair_row(j), k = j - i * (i - 1) / 2;
            float s = 0.0f;
            for (int c = 0; c < d; c++)
                s += v[i * d + c] * v[k * d + c];
            y[(size_t)b * ldy + j] = s;
        }
    }
}

/* dt[i, c] = sum over the other vectors o (ascending, the CPU's order) of dy[pair(i, o)] * v[o, c]. */
static __global__ void interact_bwd_kernel(const float *t, const float *dy, int ldy, int batch, int f, int d,
                                           float *dt, int smem) {
    extern __shared__ float sh[];
    int fd = f * d, pairs = f * (f - 1) / 2;
    for (size_t b = blockIdx.x; b < (size_t)batch; b += gridDim.x) {
        const float *v = t + (size_t)b * fd, *g = dy + (size_t)b * ldy;
        if (smem) {
            __syncthreads();
            for (int e = threadIdx.x; e < fd; e += blockDim.x)
                sh[e] = v[e];
            for (int e = threadIdx.x; e < pairs; e += blockDim.x)
                sh[fd + e] = g[e];
            __syncthreads();
            v = sh;
            g = sh + fd;
        }
        for (int e = threadIdx.x; e < fd; e += blockDim.x) {
            int i = e / d, c = e - i * d;
            float s = 0.0f;
            for (int o = 0; o < f; o++) {
                if (o == i) continue;
                int j = i > o ? i * (i - 1) / 2 + o : o * (o - 1) / 2 + i;
                s += g[j] * v[o * d + c];
            }
            dt[(size_t)b * fd + e] = s;
        }
    }
}

void cuda_interact_fwd(cudaStream_t s, const float *t, int batch, int f, int d, float *y, int ldy) {
    if (batch <= 0 || f < 2) return;
    size_t bytes = (size_t)f * (size_t)d * sizeof(float);
    int smem = bytes <= SMEM_MAX;
    interact_fwd_kernel<<<cuda_blocks((size_t)batch, 1), THREADS, smem ? bytes : 0, s>>>(t, batch, f, d, y,
                                                                                         ldy, smem);
    CUDA_CHECK_LAUNCH();
}

void cuda_interact_bwd(cudaStream_t s, const float *t, const float *dy, int ldy, int batch, int f, int d,
                       float *dt) {
    if (batch <= 0 || f <= 0 || d <= 0) return;
    if (f == 1) { /* no pairs: the gradient is zero */
        CUDA_CHECK(cudaMemsetAsync(dt, 0, (size_t)batch * (size_t)d * sizeof(float), s));
        return;
    }
    size_t bytes = ((size_t)f * (size_t)d + (size_t)f * (size_t)(f - 1) / 2) * sizeof(float);
    int smem = bytes <= SMEM_MAX;
    interact_bwd_kernel<<<cuda_blocks((size_t)batch, 1), THREADS, smem ? bytes : 0, s>>>(t, dy, ldy, batch, f,
                                                                                         d, dt, smem);
    CUDA_CHECK_LAUNCH();
}
