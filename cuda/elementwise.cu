/* Elementwise and row/column ops of the CUDA backend. They are memory-bound: grid-stride loops, and
 * float4 loads and stores when every pointer involved is 16-byte aligned (a scalar loop takes the rest). */
#include "cuda_check.h"
#include "kernels.h"

#define THREADS      256
#define SUM_BLOCKS   1024 /* sum_rows: blocks wanted, all chunks together */
#define SUM_MIN_ROWS 64   /* sum_rows: the fewest rows a chunk sums */

static __device__ __forceinline__ float relu1(float x) {
    return x > 0.0f ? x : 0.0f;
}
static __device__ __forceinline__ float relu_grad1(float y, float dy) {
    return y > 0.0f ? dy : 0.0f;
}

static __global__ void relu_fwd_kernel(const float *x, float *y, size_t n) {
    size_t i0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t n4 = aligned16(x) && aligned16(y) ? n / 4 : 0;
    for (size_t i = i0; i < n4; i += stride) {
        float4 v = reinterpret_cast<const float4 *>(x)[i];
        reinterpret_cast<float4 *>(y)[i] = make_float4(relu1(v.x), relu1(v.y), relu1(v.z), relu1(v.w));
    }
    for (size_t i = 4 * n4 + i0; i < n; i += stride)
        y[i] = relu1(x[i]);
}

static __global__ void relu_bwd_kernel(const float *y, const float *dy, float *dx, size_t n) {
    size_t i0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t n4 = aligned16(y) && aligned16(dy) && aligned16(dx) ? n / 4 : 0;
    for (size_t i = i0; i < n4; i += stride) {
        float4 v = reinterpret_cast<const float4 *>(y)[i], g = reinterpret_cast<const float4 *>(dy)[i];
        reinterpret_cast<float4 *>(dx)[i] = make_float4(relu_grad1(v.x, g.x), relu_grad1(v.y, g.y),
                                                        relu_grad1(v.z, g.z), relu_grad1(v.w, g.w));
    }
    for (size_t i = 4 * n4 + i0; i < n; i += stride)
        dx[i] = relu_grad1(y[i], dy[i]);
}

static __global__ void axpy_kernel(float *y, const float *x, float a, size_t n) {
    size_t i0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t n4 = aligned16(x) && aligned16(y) ? n / 4 : 0;
    for (size_t i = i0; i < n4; i += stride) {
        float4 v = reinterpret_cast<const float4 *>(x)[i], w = reinterpret_cast<float4 *>(y)[i];
        reinterpret_cast<float4 *>(y)[i] = w + a * v;
    }
    for (size_t i = 4 * n4 + i0; i < n; i += stride)
        y[i] += a * x[i];
}

/* y[r, c] += bias[c] over n = rows * cols elements of T (float, or float4 when cols is a multiple of 4 and
 * the pointers are aligned). The column advances by the stride modulo cols, so there is one modulo per
 * thread rather than one per element. */
template <typename T> static __global__ void add_bias_kernel(T *y, const T *bias, size_t n, unsigned cols) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    unsigned c = (unsigned)(i % cols), step = (unsigned)(stride % cols);
    for (; i < n; i += stride) {
        y[i] = y[i] + bias[c];
        c += step;
        if (c >= cols) c -= cols;
    }
}

/* out[c] = sum_r x[r, c] over the rows of chunk blockIdx.y ([y * chunk, (y + 1) * chunk)) into
 * out + y * cols: a block sums 32 columns, its 8 thread rows taking every 8th row, then adds the 8
 * partial sums in a fixed order (no atomics: the result does not depend on scheduling). One chunk
 * writes the result; several write partial sums that sum_chunks_kernel adds. */
static __global__ void sum_rows_kernel(float *out, const float *x, int rows, int cols, int chunk) {
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * chunk, r1 = rows - r0 < chunk ? rows : r0 + chunk;
    float s = 0.0f;
    if (c < cols)
        for (int r = r0 + threadIdx.y; r < r1; r += 8)
            s += x[(size_t)r * cols + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float t = 0.0f;
        for (int k = 0; k < 8; k++)
            t += part[k][threadIdx.x];
        out[(size_t)blockIdx.y * cols + c] = t;
    }
}

/* out[c] = the chunks' partial sums part[0, c] + part[1, c] + ..., in chunk order. */
static __global__ void sum_chunks_kernel(float *out, const float *part, int chunks, int cols) {
    for (size_t c = (size_t)blockIdx.x * blockDim.x + threadIdx.x; c < (size_t)cols;
         c += (size_t)gridDim.x * blockDim.x) {
        float t = 0.0f;
        for (int k = 0; k < chunks; k++)
            t += part[(size_t)k * cols + c];
        out[c] = t;
    }
}

/* bf16_from_f32's rounding (common/util.c), bit for bit: to nearest, ties to even; a NaN keeps its sign
 * and top payload bits and becomes quiet. */
static __device__ __forceinline__ uint16_t bf16_1(float x) {
    uint32_t u = __float_as_uint(x);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}

static __global__ void bf16_kernel(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = bf16_1(src[i]);
}

/* f32_from_bf16 (common/util.c): exact, the bfloat16 bits become the float's top half. */
static __global__ void widen_bf16_kernel(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}

void cuda_bf16_from_f32(cudaStream_t s, uint16_t *dst, const float *src, size_t n) {
    if (!n) return;
    bf16_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s>>>(dst, src, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_f32_from_bf16(cudaStream_t s, float *dst, const uint16_t *src, size_t n) {
    if (!n) return;
    widen_bf16_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s>>>(dst, src, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_relu_fwd(cudaStream_t s, const float *x, float *y, size_t n) {
    if (!n) return;
    relu_fwd_kernel<<<cuda_blocks((n + 3) / 4, THREADS), THREADS, 0, s>>>(x, y, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_relu_bwd(cudaStream_t s, const float *y, const float *dy, float *dx, size_t n) {
    if (!n) return;
    relu_bwd_kernel<<<cuda_blocks((n + 3) / 4, THREADS), THREADS, 0, s>>>(y, dy, dx, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_axpy(cudaStream_t s, float *y, const float *x, float a, size_t n) {
    if (!n) return;
    axpy_kernel<<<cuda_blocks((n + 3) / 4, THREADS), THREADS, 0, s>>>(y, x, a, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_add_bias(cudaStream_t s, float *y, const float *bias, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    size_t n = (size_t)rows * (size_t)cols;
    if (cols % 4 == 0 && ((uintptr_t)y & 15) == 0 && ((uintptr_t)bias & 15) == 0)
        add_bias_kernel<float4><<<cuda_blocks(n / 4, THREADS), THREADS, 0, s>>>(
            reinterpret_cast<float4 *>(y), reinterpret_cast<const float4 *>(bias), n / 4, (unsigned)cols / 4);
    else
        add_bias_kernel<float><<<cuda_blocks(n, THREADS), THREADS, 0, s>>>(y, bias, n, (unsigned)cols);
    CUDA_CHECK_LAUNCH();
}

int cuda_sum_rows_chunks(int rows, int cols) {
    /* Enough blocks to keep every SM's loads in flight (a few per SM of an H200), but no chunk under
     * SUM_MIN_ROWS rows: the partial sums then cost at most 1/SUM_MIN_ROWS of the input's traffic. */
    if (cols <= 0 || rows <= 0) return 1;
    long col_blocks = (cols + 31) / 32, want = (SUM_BLOCKS + col_blocks - 1) / col_blocks;
    long most = rows / SUM_MIN_ROWS;
    long chunks = want < most ? want : most;
    return chunks < 1 ? 1 : chunks > 65535 ? 65535 : (int)chunks;
}

void cuda_sum_rows(cudaStream_t s, float *out, const float *x, int rows, int cols, float *work) {
    if (cols <= 0) return;
    if (rows < 0) rows = 0;
    int chunks = cuda_sum_rows_chunks(rows, cols);
    int chunk = (rows + chunks - 1) / chunks;
    dim3 grid((unsigned)((cols + 31) / 32), (unsigned)chunks);
    sum_rows_kernel<<<grid, dim3(32, 8), 0, s>>>(chunks == 1 ? out : work, x, rows, cols, chunk ? chunk : 1);
    CUDA_CHECK_LAUNCH();
    if (chunks == 1) return;
    sum_chunks_kernel<<<cuda_blocks((size_t)cols, THREADS), THREADS, 0, s>>>(out, work, chunks, cols);
    CUDA_CHECK_LAUNCH();
}

/* A strided 2-D copy is what cudaMemcpy2D does; it uses the copy engines' own best path. */
void cuda_copy_cols(cudaStream_t s, float *dst, int ld_dst, const float *src, int ld_src, int rows,
                    int cols) {
    if (rows <= 0 || cols <= 0) return;
    CUDA_CHECK(cudaMemcpy2DAsync(dst, (size_t)ld_dst * sizeof(float), src, (size_t)ld_src * sizeof(float),
                                 (size_t)cols * sizeof(float), (size_t)rows, cudaMemcpyDeviceToDevice, s));
}
