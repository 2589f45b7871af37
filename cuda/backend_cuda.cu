/* CUDA backend: cuBLAS for GEMM, the kernels in cuda/ for the rest, all queued on one stream of the
 * current device (device 0 unless the process chose another, e.g. through CUDA_VISIBLE_DEVICES); the
 * asynchronous copies (to_host_async, to_device_async) run on a second one, ordered against the first
 * by events, so gradients leave and parameters arrive while kernels run.
 * GEMM runs in full fp32 (CUBLAS_DEFAULT_MATH, no TF32) so results match the CPU backend to rounding;
 * TESSERA_CUDA_TF32=1 lets cuBLAS use TF32 tensor cores instead (faster, about 3 decimal digits).
 * A CUDA failure inside an op is fatal (the ops return nothing); opening the device fails softly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>

extern "C" {
#include "backend.h"
#include "optim.h"
}
#include "cuda_check.h"
#include "kernels.h"

/* Copies that overlap compute run on a second stream; ticket t's completion is event t mod COPY_EVENTS,
 * recorded after it. The copy stream runs in order, so a slot recorded again by a later ticket is still
 * a correct (later) thing to wait for. */
#define COPY_EVENTS 64

typedef struct {
    int device;
    cudaStream_t stream, copy;
    cublasHandle_t blas;
    cudaEvent_t compute_mark, copied[COPY_EVENTS];
    uint64_t tickets;
    const float **grad_ptrs; /* optim_step: the gradients' device pointers, on the device */
    int cap_ptrs;
    float *work; /* sum_rows: partial sums of row chunks */
    size_t work_floats;
} cuda_ctx_t;

static cudaStream_t stream_of(backend_t *be) {
    return ((cuda_ctx_t *)be->ctx)->stream;
}

/* A kernel that does nothing: its attributes tell whether this build has code for the device. */
static __global__ void probe_kernel(void) {}

static void *cuda_alloc(backend_t *be, size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        return NULL;
    }
    cuda_check(e, "cudaMalloc", __FILE__, __LINE__);
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_of(be)));
    return p;
}

/* cudaFree waits for the device, so queued work still using p finishes first. */
static void cuda_free(backend_t *be, void *p) {
    (void)be;
    if (p) CUDA_CHECK(cudaFree(p));
}

/* Both copies are complete when they return, like the CPU backend's memcpy: callers reuse the host
 * buffer (to_device) or read it (to_host) at once. */
static void cuda_to_device(backend_t *be, void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_of(be)));
    CUDA_CHECK(cudaStreamSynchronize(stream_of(be)));
}

static void cuda_to_host(backend_t *be, void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_of(be)));
    CUDA_CHECK(cudaStreamSynchronize(stream_of(be)));
}

/* Device to host on the copy stream, after what the compute stream holds so far. */
static uint64_t cuda_to_host_async(backend_t *be, void *dst, const void *src, size_t bytes) {
    cuda_ctx_t *c = (cuda_ctx_t *)be->ctx;
    uint64_t t = ++c->tickets;
    CUDA_CHECK(cudaEventRecord(c->compute_mark, c->stream));
    CUDA_CHECK(cudaStreamWaitEvent(c->copy, c->compute_mark, 0));
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->copy));
    CUDA_CHECK(cudaEventRecord(c->copied[t % COPY_EVENTS], c->copy));
    return t;
}

/* Host to device on the copy stream, after what the compute stream holds so far (kernels still reading
 * dst, alloc's zeroing of it), as cpu-staged lands it; the compute stream's later work waits for it. */
static uint64_t cuda_to_device_async(backend_t *be, void *dst, const void *src, size_t bytes) {
    cuda_ctx_t *c = (cuda_ctx_t *)be->ctx;
    uint64_t t = ++c->tickets;
    CUDA_CHECK(cudaEventRecord(c->compute_mark, c->stream));
    CUDA_CHECK(cudaStreamWaitEvent(c->copy, c->compute_mark, 0));
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->copy));
    CUDA_CHECK(cudaEventRecord(c->copied[t % COPY_EVENTS], c->copy));
    CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->copied[t % COPY_EVENTS], 0));
    return t;
}

static void cuda_copy_wait(backend_t *be, uint64_t ticket) {
    cuda_ctx_t *c = (cuda_ctx_t *)be->ctx;
    if (ticket) CUDA_CHECK(cudaEventSynchronize(c->copied[ticket % COPY_EVENTS]));
}

static int cuda_copy_done(backend_t *be, uint64_t ticket) {
    cuda_ctx_t *c = (cuda_ctx_t *)be->ctx;
    if (!ticket) return 1;
    cudaError_t e = cudaEventQuery(c->copied[ticket % COPY_EVENTS]);
    if (e == cudaErrorNotReady) return 0;
    CUDA_CHECK(e);
    return 1;
}

static void cuda_sync(backend_t *be) {
    CUDA_CHECK(cudaStreamSynchronize(stream_of(be)));
}

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B first, m and n swap,
 * and every leading dimension is the row-major row length. */
static void cuda_gemm(backend_t *be, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                      const float *b, float beta, float *c) {
    if (m <= 0 || n <= 0) return;
    int lda = ta ? m : k, ldb = tb ? k : n;
    CUBLAS_CHECK(cublasSgemm(((cuda_ctx_t *)be->ctx)->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                             ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb > 1 ? ldb : 1, a,
                             lda > 1 ? lda : 1, &beta, c, n));
}

static void cuda_add_bias_op(backend_t *be, float *y, const float *bias, int rows, int cols) {
    cuda_add_bias(stream_of(be), y, bias, rows, cols);
}

static void cuda_sum_rows_op(backend_t *be, float *out, const float *x, int rows, int cols) {
    cuda_ctx_t *c = (cuda_ctx_t *)be->ctx;
    int chunks = cuda_sum_rows_chunks(rows, cols);
    size_t need = chunks > 1 ? (size_t)chunks * (size_t)cols : 0;
    if (need > c->work_floats) { /* the old buffer may still be read by queued kernels */
        CUDA_CHECK(cudaStreamSynchronize(c->stream));
        if (c->work) CUDA_CHECK(cudaFree(c->work));
        CUDA_CHECK(cudaMalloc((void **)&c->work, need * sizeof(float)));
        c->work_floats = need;
    }
    cuda_sum_rows(c->stream, out, x, rows, cols, c->work);
}

static void cuda_relu_fwd_op(backend_t *be, const float *x, float *y, size_t n) {
    cuda_relu_fwd(stream_of(be), x, y, n);
}

static void cuda_relu_bwd_op(backend_t *be, const float *y, const float *dy, float *dx, size_t n) {
    cuda_relu_bwd(stream_of(be), y, dy, dx, n);
}

static void cuda_softmax_xent_op(backend_t *be, const float *logits, const int32_t *labels, int rows,
                                 int classes, float scale, float *loss, int32_t *pred, float *dlogits) {
    cuda_softmax_xent(stream_of(be), logits, labels, rows, classes, scale, loss, pred, dlogits);
}

static void cuda_sigmoid_bce_op(backend_t *be, const float *logits, const int32_t *labels, int rows,
                                float scale, float *loss, int32_t *pred, float *dlogits) {
    cuda_sigmoid_bce(stream_of(be), logits, labels, rows, scale, loss, pred, dlogits);
}

static void cuda_axpy_op(backend_t *be, float *y, const float *x, float a, size_t n) {
    cuda_axpy(stream_of(be), y, x, a, n);
}

static void cuda_copy_cols_op(backend_t *be, float *dst, int ld_dst, const float *src, int ld_src, int rows,
                              int cols) {
    cuda_copy_cols(stream_of(be), dst, ld_dst, src, ld_src, rows, cols);
}

static void cuda_embedding_bag_fwd_op(backend_t *be, const float *rows, int dim, const int32_t *off,
                                      const int32_t *idx, const float *wts, int batch, int mean, float *y,
                                      int ldy) {
    cuda_embedding_bag_fwd(stream_of(be), rows, dim, off, idx, wts, batch, mean, y, ldy);
}

static void cuda_embedding_bag_bwd_op(backend_t *be, const float *dy, int ldy, int dim, const int32_t *off,
                                      const int32_t *idx, const float *wts, int batch, int mean, float *grad,
                                      int n_rows, const bag_rows_t *by_row) {
    cuda_embedding_bag_bwd(stream_of(be), dy, ldy, dim, off, idx, wts, batch, mean, grad, n_rows, by_row);
}

static void cuda_interact_fwd_op(backend_t *be, const float *t, int batch, int f, int d, float *y, int ldy) {
    cuda_interact_fwd(stream_of(be), t, batch, f, d, y, ldy);
}

static void cuda_interact_bwd_op(backend_t *be, const float *t, const float *dy, int ldy, int batch, int f,
                                 int d, float *dt) {
    cuda_interact_bwd(stream_of(be), t, dy, ldy, batch, f, d, dt);
}

/* The step's scalars as model/optim.c computes them (bias corrections in double), then one kernel. */
static void cuda_optim_step_op(backend_t *be, const struct optim *o, float *p, float *s0, float *s1,
                               const float *const *g, int ng, float gscale, size_t n, long t) {
    cuda_ctx_t *c = (cuda_ctx_t *)be->ctx;
    if (ng > c->cap_ptrs) {
        CUDA_CHECK(cudaStreamSynchronize(c->stream)); /* the old array may still be read */
        if (c->grad_ptrs) CUDA_CHECK(cudaFree(c->grad_ptrs));
        int cap = ng < 64 ? 64 : ng;
        CUDA_CHECK(cudaMalloc((void **)&c->grad_ptrs, (size_t)cap * sizeof *c->grad_ptrs));
        c->cap_ptrs = cap;
    }
    /* From pageable memory: returns once g is staged, ordered after the kernels that read the array. */
    CUDA_CHECK(cudaMemcpyAsync(c->grad_ptrs, g, (size_t)ng * sizeof *g, cudaMemcpyHostToDevice, c->stream));
    cuda_optim_args_t a = {};
    a.lr = o->lr;
    a.wd = o->weight_decay;
    a.momentum = o->momentum;
    a.eps = o->eps;
    switch (o->kind) {
    case OPT_SGD: a.kind = CUDA_OPT_SGD; break;
    case OPT_MOMENTUM: a.kind = CUDA_OPT_MOMENTUM; break;
    case OPT_ADAGRAD: a.kind = CUDA_OPT_ADAGRAD; break;
    case OPT_ADAM:
    case OPT_ADAMW: {
        a.kind = CUDA_OPT_ADAM;
        a.b1 = o->beta1;
        a.b2 = o->beta2;
        float bc1 = (float)(1.0 - pow((double)o->beta1, (double)t));
        a.inv_bc2_sqrt = (float)(1.0 / sqrt(1.0 - pow((double)o->beta2, (double)t)));
        a.step = o->lr / bc1;
        a.decay = o->kind == OPT_ADAMW ? 1.0f - o->lr * o->weight_decay : 1.0f;
        a.l2 = o->kind == OPT_ADAMW ? 0.0f : o->weight_decay;
        break;
    }
    }
    cuda_optim_step(c->stream, &a, p, s0, s1, c->grad_ptrs, ng, gscale, n);
}

static void cuda_to_bf16_op(backend_t *be, uint16_t *dst, const float *src, size_t n) {
    cuda_bf16_from_f32(stream_of(be), dst, src, n);
}

static void cuda_from_bf16_op(backend_t *be, float *dst, const uint16_t *src, size_t n) {
    cuda_f32_from_bf16(stream_of(be), dst, src, n);
}

/* Pinned host memory: device copies from and to it run at full PCIe/NVLink speed and asynchronously. NULL
 * when it cannot be had (the caller falls back to malloc). */
static void *cuda_alloc_host(backend_t *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

/* Also takes what backend_host_alloc got from malloc when pinned memory was refused. */
static void cuda_free_host(backend_t *be, void *p) {
    (void)be;
    if (!p) return;
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) == cudaSuccess && a.type == cudaMemoryTypeHost) {
        CUDA_CHECK(cudaFreeHost(p));
    } else {
        (void)cudaGetLastError();
        free(p);
    }
}

/* Pinning is refused on some systems (locked-memory limits): the memory then stays pageable. */
static int cuda_register_host(backend_t *be, void *p, size_t bytes) {
    (void)be;
    if (cudaHostRegister(p, bytes, cudaHostRegisterDefault) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return 0;
}

static void cuda_unregister_host(backend_t *be, void *p) {
    (void)be;
    CUDA_CHECK(cudaHostUnregister(p));
}

static int cuda_ipc_export(backend_t *be, void *p, unsigned char handle[BACKEND_IPC_HANDLE]) {
    (void)be;
    cudaIpcMemHandle_t h;
    static_assert(sizeof h == BACKEND_IPC_HANDLE, "a CUDA IPC handle is 64 bytes");
    if (cudaIpcGetMemHandle(&h, p) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    memcpy(handle, &h, sizeof h);
    return 0;
}

/* Lazy peer access: a handle of another device of this machine opens when the two can reach each other. */
static void *cuda_ipc_open(backend_t *be, const unsigned char handle[BACKEND_IPC_HANDLE], char *why,
                           size_t whylen) {
    (void)be;
    cudaIpcMemHandle_t h;
    memcpy(&h, handle, sizeof h);
    void *p = NULL;
    cudaError_t e = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, whylen, "cudaIpcOpenMemHandle: %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_ipc_close(backend_t *be, void *p) {
    (void)be;
    CUDA_CHECK(cudaIpcCloseMemHandle(p));
}

static void destroy_copy_side(cuda_ctx_t *c) {
    for (int i = 0; i < COPY_EVENTS; i++)
        if (c->copied[i]) cudaEventDestroy(c->copied[i]);
    if (c->compute_mark) cudaEventDestroy(c->compute_mark);
    if (c->copy) cudaStreamDestroy(c->copy);
}

/* Releases the streams, events and the cuBLAS handle; backend_free then frees ctx and the backend. */
static void cuda_destroy(backend_t *be) {
    cuda_ctx_t *c = (cuda_ctx_t *)be->ctx;
    if (!c) return;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->copy));
    CUBLAS_CHECK(cublasDestroy(c->blas));
    if (c->grad_ptrs) CUDA_CHECK(cudaFree(c->grad_ptrs));
    if (c->work) CUDA_CHECK(cudaFree(c->work));
    destroy_copy_side(c);
    CUDA_CHECK(cudaStreamDestroy(c->stream));
}

static const backend_ops_t cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .to_device = cuda_to_device,
    .to_host = cuda_to_host,
    .sync = cuda_sync,
    .gemm = cuda_gemm,
    .add_bias = cuda_add_bias_op,
    .sum_rows = cuda_sum_rows_op,
    .relu_fwd = cuda_relu_fwd_op,
    .relu_bwd = cuda_relu_bwd_op,
    .softmax_xent = cuda_softmax_xent_op,
    .sigmoid_bce = cuda_sigmoid_bce_op,
    .axpy = cuda_axpy_op,
    .copy_cols = cuda_copy_cols_op,
    .embedding_bag_fwd = cuda_embedding_bag_fwd_op,
    .embedding_bag_bwd = cuda_embedding_bag_bwd_op,
    .interact_fwd = cuda_interact_fwd_op,
    .interact_bwd = cuda_interact_bwd_op,
    .destroy = cuda_destroy,
    .alloc_host = cuda_alloc_host,
    .free_host = cuda_free_host,
    .register_host = cuda_register_host,
    .unregister_host = cuda_unregister_host,
    .to_host_async = cuda_to_host_async,
    .to_device_async = cuda_to_device_async,
    .copy_wait = cuda_copy_wait,
    .copy_done = cuda_copy_done,
    .optim_step = cuda_optim_step_op,
    .to_bf16 = cuda_to_bf16_op,
    .from_bf16 = cuda_from_bf16_op,
    .ipc_export = cuda_ipc_export,
    .ipc_open = cuda_ipc_open,
    .ipc_close = cuda_ipc_close,
};

extern "C" backend_t *backend_cuda_create(int threads, char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(err, errlen, "backend 'cuda': no CUDA device is visible (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found none");
        (void)cudaGetLastError();
        return NULL;
    }
    cuda_ctx_t *c = (cuda_ctx_t *)calloc(1, sizeof *c);
    backend_t *be = (backend_t *)calloc(1, sizeof *be);
    cudaDeviceProp prop;
    cudaFuncAttributes attr;
    int stream_ok = 0, blas_ok = 0;
    if (!c || !be) {
        snprintf(err, errlen, "backend 'cuda': out of host memory");
        goto fail;
    }
    {
        /* TESSERA_CUDA_DEVICE (set by the worker to its index among the node's workers) picks one GPU per
         * worker, modulo the GPUs visible; without it, the current device. */
        const char *dev = getenv("TESSERA_CUDA_DEVICE");
        char *end = NULL;
        long want = dev ? strtol(dev, &end, 10) : -1;
        if (dev && (end == dev || *end || want < 0)) {
            snprintf(err, errlen, "backend 'cuda': TESSERA_CUDA_DEVICE='%s' is not a device index", dev);
            goto fail;
        }
        if (want >= 0 && CUDA_TRY(cudaSetDevice((int)(want % n)), err, errlen)) goto fail;
    }
    if (CUDA_TRY(cudaGetDevice(&c->device), err, errlen) ||
        CUDA_TRY(cudaGetDeviceProperties(&prop, c->device), err, errlen))
        goto fail;
    e = cudaFuncGetAttributes(&attr, probe_kernel);
    if (e != cudaSuccess) {
        snprintf(err, errlen,
                 "backend 'cuda': this build has no code for device %d (%s, sm_%d%d): %s; rebuild with "
                 "-DCMAKE_CUDA_ARCHITECTURES=%d%d",
                 c->device, prop.name, prop.major, prop.minor, cudaGetErrorString(e), prop.major, prop.minor);
        (void)cudaGetLastError();
        goto fail;
    }
    if (CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), err, errlen)) goto fail;
    stream_ok = 1;
    if (CUDA_TRY(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking), err, errlen) ||
        CUDA_TRY(cudaEventCreateWithFlags(&c->compute_mark, cudaEventDisableTiming), err, errlen))
        goto fail;
    for (int i = 0; i < COPY_EVENTS; i++)
        if (CUDA_TRY(cudaEventCreateWithFlags(&c->copied[i], cudaEventDisableTiming), err, errlen)) goto fail;
    if (CUBLAS_TRY(cublasCreate(&c->blas), err, errlen)) goto fail;
    blas_ok = 1;
    {
        const char *tf32 = getenv("TESSERA_CUDA_TF32");
        int use_tf32 = tf32 && !strcmp(tf32, "1");
        if (CUBLAS_TRY(cublasSetStream(c->blas, c->stream), err, errlen) ||
            CUBLAS_TRY(
                cublasSetMathMode(c->blas, use_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), err,
                errlen))
            goto fail;
        log_info("backend cuda device=%d name=\"%s\" sm=%d%d memory_gib=%.1f tf32=%s", c->device, prop.name,
                 prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30), use_tf32 ? "on" : "off");
    }
    be->ops = &cuda_ops;
    be->ctx = c;
    be->threads = threads > 0 ? threads : 1;
    be->host_memory = 0;
    return be;
fail:
    if (blas_ok) cublasDestroy(c->blas);
    if (c) destroy_copy_side(c);
    if (stream_ok) cudaStreamDestroy(c->stream);
    free(c);
    free(be);
    return NULL;
}
