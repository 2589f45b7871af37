/* The host launchers of the CUDA backend's kernels, one group per .cu file. Each enqueues its work on
 * stream `s` and returns at once. Pointers are device memory; shapes and semantics are those of the
 * matching op in model/backend.h, which the CPU backend (model/backend_cpu.c) defines by example. */
#ifndef TESSERA_CUDA_KERNELS_H
#define TESSERA_CUDA_KERNELS_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend.h" /* bag_rows_t */
}

/* Blocks for a grid-stride loop over `n` items, `threads` per block: one item per thread up to a cap
 * that fills an H100/H200 several times over (the loop covers the rest); at least one. */
static inline unsigned cuda_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return b < 1 ? 1u : b > 4096 ? 4096u : (unsigned)b;
}

#if defined(__CUDACC__) || defined(TESSERA_CUDA_EMU) /* nvcc, or the host emulator (tests/cuda_emu) */
/* float4 arithmetic for the vectorised paths (component-wise, as the scalar code does it). */
static __device__ __forceinline__ float4 operator+(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
static __device__ __forceinline__ float4 operator*(float a, float4 b) {
    return make_float4(a * b.x, a * b.y, a * b.z, a * b.w);
}
static __device__ __forceinline__ float4 operator/(float4 a, float b) {
    return make_float4(a.x / b, a.y / b, a.z / b, a.w / b);
}
template <typename T> static __device__ __forceinline__ T vec_zero();
template <> __device__ __forceinline__ float vec_zero<float>() {
    return 0.0f;
}
template <> __device__ __forceinline__ float4 vec_zero<float4>() {
    return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}

static __device__ __forceinline__ bool aligned16(const void *p) {
    return ((uintptr_t)p & 15) == 0;
}
#endif

/* elementwise.cu */
void cuda_add_bias(cudaStream_t s, float *y, const float *bias, int rows, int cols);
/* sum_rows in chunks of rows for parallelism, then the chunks' partial sums in chunk order (the same
 * bits run after run): work holds cuda_sum_rows_chunks(rows, cols) * cols floats (unused for one). */
int cuda_sum_rows_chunks(int rows, int cols);
void cuda_sum_rows(cudaStream_t s, float *out, const float *x, int rows, int cols, float *work);
void cuda_relu_fwd(cudaStream_t s, const float *x, float *y, size_t n);
void cuda_relu_bwd(cudaStream_t s, const float *y, const float *dy, float *dx, size_t n);
void cuda_axpy(cudaStream_t s, float *y, const float *x, float a, size_t n);
void cuda_copy_cols(cudaStream_t s, float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols);
/* dst[i] = src[i] as bfloat16, rounded as common/util.c's bf16_from_f32 (the CPU's bits). */
void cuda_bf16_from_f32(cudaStream_t s, uint16_t *dst, const float *src, size_t n);
/* dst[i] = src[i] widened to float32, as common/util.c's f32_from_bf16 (exact). */
void cuda_f32_from_bf16(cudaStream_t s, float *dst, const uint16_t *src, size_t n);

/* losses.cu */
void cuda_softmax_xent(cudaStream_t s, const float *logits, const int32_t *labels, int rows, int classes,
                       float scale, float *loss, int32_t *pred, float *dlogits);
void cuda_sigmoid_bce(cudaStream_t s, const float *logits, const int32_t *labels, int rows, float scale,
                      float *loss, int32_t *pred, float *dlogits);

/* embedding_bag.cu */
void cuda_embedding_bag_fwd(cudaStream_t s, const float *rows, int dim, const int32_t *off,
                            const int32_t *idx, const float *wts, int batch, int mean, float *y, int ldy);
void cuda_embedding_bag_bwd(cudaStream_t s, const float *dy, int ldy, int dim, const int32_t *off,
                            const int32_t *idx, const float *wts, int batch, int mean, float *grad,
                            int n_rows, const bag_rows_t *by_row);

/* optim.cu: the step of model/optim.h's optim_apply, its bits, for parameters on the device. g is a
 * device array of ng device pointers; the step's scalars come precomputed (as optim.c computes them). */
enum { CUDA_OPT_SGD, CUDA_OPT_MOMENTUM, CUDA_OPT_ADAGRAD, CUDA_OPT_ADAM };
typedef struct {
    int kind;
    float lr, wd, momentum, eps;
    float b1, b2, step, inv_bc2_sqrt, decay, l2; /* Adam/AdamW */
} cuda_optim_args_t;
void cuda_optim_step(cudaStream_t s, const cuda_optim_args_t *a, float *p, float *s0, float *s1,
                     const float *const *g, int ng, float gscale, size_t n);

/* interact.cu */
void cuda_interact_fwd(cudaStream_t s, const float *t, int batch, int f, int d, float *y, int ldy);
void cuda_interact_bwd(cudaStream_t s, const float *t, const float *dy, int ldy, int batch, int f, int d,
                       float *dt);

#endif
