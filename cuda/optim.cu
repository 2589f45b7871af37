/* The optimizer step of a shard whose parameters live on a GPU (ps.device = cuda): one pass over the
 * parameters sums the workers' gradients in order, then applies SGD, momentum, AdaGrad or Adam/AdamW.
 * Every operation is an explicitly rounded IEEE one (__fadd_rn, __fmul_rn, __fdiv_rn, __fsqrt_rn, never
 * a fused multiply-add), in the association model/optim.c uses, so the GPU gives the CPU's bits. */
#include "cuda_check.h"
#include "kernels.h"

#define THREADS 256

static __global__ void optim_step_kernel(cuda_optim_args_t a, float *p, float *s0, float *s1,
                                         const float *const *g, int ng, float gscale, size_t n) {
    size_t i0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = i0; i < n; i += stride) {
        float gi = g[0][i];
        for (int j = 1; j < ng; j++)
            gi = __fadd_rn(gi, g[j][i]);
        gi = __fmul_rn(gi, gscale); /* exact when gscale is 1, as optim.c's shortcut for one gradient */
        float pi = p[i];
        switch (a.kind) {
        case CUDA_OPT_SGD: p[i] = __fsub_rn(pi, __fmul_rn(a.lr, __fadd_rn(gi, __fmul_rn(a.wd, pi)))); break;
        case CUDA_OPT_MOMENTUM: {
            float gw = __fadd_rn(gi, __fmul_rn(a.wd, pi));
            float m = __fadd_rn(__fmul_rn(a.momentum, s0[i]), gw);
            s0[i] = m;
            p[i] = __fsub_rn(pi, __fmul_rn(a.lr, m));
            break;
        }
        case CUDA_OPT_ADAGRAD: {
            float gw = __fadd_rn(gi, __fmul_rn(a.wd, pi));
            float acc = __fadd_rn(s0[i], __fmul_rn(gw, gw));
            s0[i] = acc;
            p[i] = __fsub_rn(pi, __fdiv_rn(__fmul_rn(a.lr, gw), __fadd_rn(__fsqrt_rn(acc), a.eps)));
            break;
        }
        default: { /* Adam, AdamW: decay is 1 and l2 the weight decay for Adam, the reverse for AdamW */
            float pd = __fmul_rn(pi, a.decay);
            float gw = __fadd_rn(gi, __fmul_rn(a.l2, pd));
            float m = __fadd_rn(__fmul_rn(a.b1, s0[i]), __fmul_rn(__fsub_rn(1.0f, a.b1), gw));
            float v = __fadd_rn(__fmul_rn(a.b2, s1[i]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, a.b2), gw), gw));
            s0[i] = m;
            s1[i] = v;
            float den = __fadd_rn(__fmul_rn(__fsqrt_rn(v), a.inv_bc2_sqrt), a.eps);
            p[i] = __fsub_rn(pd, __fdiv_rn(__fmul_rn(a.step, m), den));
        }
        }
    }
}

void cuda_optim_step(cudaStream_t s, const cuda_optim_args_t *a, float *p, float *s0, float *s1,
                     const float *const *g, int ng, float gscale, size_t n) {
    if (!n || ng < 1) return;
    optim_step_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s>>>(*a, p, s0, s1, g, ng, gscale, n);
    CUDA_CHECK_LAUNCH();
}
