/* Embedding bags on the CUDA backend. Thread block = tx column threads by ty bags; a thread owns one
 * column of one bag and walks the bag's entries in order, so the forward sums in the CPU's order. The
 * forward pass reads float4 columns when dim is a multiple of 4 and the rows and outputs are aligned.
 * The backward pass, given the bags by row (bag_rows_t), gives a thread one column of one row and walks
 * that row's entries in bag order with unfused multiply and add: the CPU's bits, every run. Without
 * them it zeroes the gradient and scatter-adds with atomicAdd (ids repeat within and across bags),
 * whose order, and so the last bits of a repeated row's gradient, vary by run. */
#include "cuda_check.h"
#include "kernels.h"

#define THREADS    256
#define ROWS_AHEAD 8 /* by-row backward: entries whose loads are in flight at once */

/* T is float or float4; dimv and ldyv count T's. */
template <typename T>
static __global__ void embedding_bag_fwd_kernel(const T *rows, int dimv, const int32_t *off,
                                                const int32_t *idx, const float *wts, int batch, int mean,
                                                T *y, int ldyv) {
    for (size_t b = (size_t)blockIdx.x * blockDim.y + threadIdx.y; b < (size_t)batch;
         b += (size_t)gridDim.x * blockDim.y) {
        int begin = off[b], end = off[b + 1], n = end - begin;
        for (int c = threadIdx.x; c < dimv; c += blockDim.x) {
            T acc = vec_zero<T>();
            for (int j = begin; j < end; j++) {
                float w = wts ? wts[j] : 1.0f;
                acc = acc + w * rows[(size_t)idx[j] * dimv + c];
            }
            if (mean && n > 1) acc = acc / (float)n;
            y[(size_t)b * ldyv + c] = acc;
        }
    }
}

static __global__ void embedding_bag_bwd_kernel(const float *dy, int ldy, int dim, const int32_t *off,
                                                const int32_t *idx, const float *wts, int batch, int mean,
                                                float *grad) {
    for (size_t b = (size_t)blockIdx.x * blockDim.y + threadIdx.y; b < (size_t)batch;
         b += (size_t)gridDim.x * blockDim.y) {
        int begin = off[b], end = off[b + 1], n = end - begin;
        float scale = mean && n > 1 ? 1.0f / (float)n : 1.0f;
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            float d = dy[(size_t)b * ldy + c];
            for (int j = begin; j < end; j++) {
                float w = (wts ? wts[j] : 1.0f) * scale;
                atomicAdd(&grad[(size_t)idx[j] * dim + c], w * d);
            }
        }
    }
}

/* grad[r] = sum over row r's entries e, in bag order, of w[e] dy[bag[e]]; every row written. */
static __global__ void embedding_bag_bwd_rows_kernel(const float *dy, int ldy, int dim, const int32_t *roff,
                                                     const int32_t *rbag, const float *rw, int n_rows,
                                                     float *grad) {
    for (size_t r = (size_t)blockIdx.x * blockDim.y + threadIdx.y; r < (size_t)n_rows;
         r += (size_t)gridDim.x * blockDim.y) {
        int begin = roff[r], end = roff[r + 1];
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            /* A hot row has thousands of entries: their products are loaded ROWS_AHEAD at a time, all
             * loads in flight together, then added in order (the sum's order, and bits, unchanged). */
            float acc = 0.0f;
            int e = begin;
            for (; e + ROWS_AHEAD <= end; e += ROWS_AHEAD) {
                float p[ROWS_AHEAD];
#pragma unroll
                for (int k = 0; k < ROWS_AHEAD; k++)
                    p[k] = __fmul_rn(rw[e + k], dy[(size_t)rbag[e + k] * ldy + c]);
#pragma unroll
                for (int k = 0; k < ROWS_AHEAD; k++)
                    acc = __fadd_rn(acc, p[k]);
            }
            for (; e < end; e++)
                acc = __fadd_rn(acc, __fmul_rn(rw[e], dy[(size_t)rbag[e] * ldy + c]));
            grad[(size_t)r * dim + c] = acc;
        }
    }
}

/* Column threads: the next power of two >= the columns (so a warp holds whole bags), at most 128. */
static dim3 bag_block(int cols) {
    unsigned tx = 1;
    while (tx < (unsigned)cols && tx < 128)
        tx <<= 1;
    return dim3(tx, THREADS / tx);
}

void cuda_embedding_bag_fwd(cudaStream_t s, const float *rows, int dim, const int32_t *off,
                            const int32_t *idx, const float *wts, int batch, int mean, float *y, int ldy) {
    if (batch <= 0 || dim <= 0) return;
    int vec = dim % 4 == 0 && ldy % 4 == 0 && ((uintptr_t)rows & 15) == 0 && ((uintptr_t)y & 15) == 0;
    dim3 block = bag_block(vec ? dim / 4 : dim);
    unsigned grid = cuda_blocks((size_t)batch, block.y);
    if (vec)
        embedding_bag_fwd_kernel<float4><<<grid, block, 0, s>>>(reinterpret_cast<const float4 *>(rows),
                                                                dim / 4, off, idx, wts, batch, mean,
                                                                reinterpret_cast<float4 *>(y), ldy / 4);
    else
        embedding_bag_fwd_kernel<float><<<grid, block, 0, s>>>(rows, dim, off, idx, wts, batch, mean, y, ldy);
    CUDA_CHECK_LAUNCH();
}

void cuda_embedding_bag_bwd(cudaStream_t s, const float *dy, int ldy, int dim, const int32_t *off,
                            const int32_t *idx, const float *wts, int batch, int mean, float *grad,
                            int n_rows, const bag_rows_t *by_row) {
    if (dim <= 0 || n_rows <= 0) return;
    dim3 block = bag_block(dim);
    if (by_row) {
        embedding_bag_bwd_rows_kernel<<<cuda_blocks((size_t)n_rows, block.y), block, 0, s>>>(
            dy, ldy, dim, by_row->off, by_row->bag, by_row->w, n_rows, grad);
        CUDA_CHECK_LAUNCH();
        return;
    }
    CUDA_CHECK(cudaMemsetAsync(grad, 0, (size_t)n_rows * (size_t)dim * sizeof(float), s));
    if (batch <= 0) return;
    embedding_bag_bwd_kernel<<<cuda_blocks((size_t)batch, block.y), block, 0, s>>>(dy, ldy, dim, off, idx,
                                                                                   wts, batch, mean, grad);
    CUDA_CHECK_LAUNCH();
}
