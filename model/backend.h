/* The compute backend: a small vtable (in the manner of ggml's backend interface). Model code calls
 * only these functions; a backend owns its memory and streams. All tensors are row-major float32. */
#ifndef TESSERA_BACKEND_H
#define TESSERA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct backend backend_t;
#define BACKEND_IPC_HANDLE 64 /* bytes of an ipc_export handle (CUDA's cudaIpcMemHandle_t) */
struct optim;                 /* optim.h */

/* Bags by row: the entries of bags naming row r are [off[r], off[r + 1]), each with the bag it is in
 * (bag[e]) and its weight times that bag's mean scale (w[e]), in bag order. Made on the host by
 * bag_rows_build; backend memory when handed to an op. */
typedef struct {
    const int32_t *off, *bag;
    const float *w;
} bag_rows_t;

typedef struct {
    const char *name;
    /* Zeroed device memory, or NULL. */
    void *(*alloc)(backend_t *be, size_t bytes);
    void (*free)(backend_t *be, void *p);
    void (*to_device)(backend_t *be, void *dst, const void *src, size_t bytes);
    void (*to_host)(backend_t *be, void *dst, const void *src, size_t bytes);
    /* Waits for queued work. */
    void (*sync)(backend_t *be);
    /* C[m,n] = alpha * op(A)[m,k] op(B)[k,n] + beta * C; op transposes when ta / tb. */
    void (*gemm)(backend_t *be, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                 const float *b, float beta, float *c);
    /* y[r,c] += bias[c] */
    void (*add_bias)(backend_t *be, float *y, const float *bias, int rows, int cols);
    /* out[c] = sum_r x[r,c] */
    void (*sum_rows)(backend_t *be, float *out, const float *x, int rows, int cols);
    void (*relu_fwd)(backend_t *be, const float *x, float *y, size_t n);
    /* dx = dy where y > 0, else 0 */
    void (*relu_bwd)(backend_t *be, const float *y, const float *dy, float *dx, size_t n);
    /* Per row: loss[r] = -log softmax(logits[r])[labels[r]], pred[r] = argmax, and when dlogits is not
     * NULL, dlogits[r] = (softmax(logits[r]) - onehot(labels[r])) * scale. */
    void (*softmax_xent)(backend_t *be, const float *logits, const int32_t *labels, int rows, int classes,
                         float scale, float *loss, int32_t *pred, float *dlogits);
    /* Binary cross-entropy of logits[r] (one per row) against labels[r] in {0, 1}: loss[r], pred[r] =
     * logit > 0, and when dlogits is not NULL, dlogits[r] = (sigmoid(logit) - label) * scale. */
    void (*sigmoid_bce)(backend_t *be, const float *logits, const int32_t *labels, int rows, float scale,
                        float *loss, int32_t *pred, float *dlogits);
    /* y[i] += a * x[i] */
    void (*axpy)(backend_t *be, float *y, const float *x, float a, size_t n);
    /* dst[r, 0:cols] = src[r, 0:cols] with row strides ld_dst and ld_src (floats). */
    void (*copy_cols)(backend_t *be, float *dst, int ld_dst, const float *src, int ld_src, int rows,
                      int cols);
    /* Embedding bags: y[b, 0:dim] (row stride ldy) = sum over j in [off[b], off[b+1]) of wts[j] *
     * rows[idx[j]] (wts NULL: weight 1), divided by the bag's size when `mean`; an empty bag gives 0. */
    void (*embedding_bag_fwd)(backend_t *be, const float *rows, int dim, const int32_t *off,
                              const int32_t *idx, const float *wts, int batch, int mean, float *y, int ldy);
    /* The backward pass: grad[n_rows, dim] is zeroed, then every bag entry adds its weight times dy[b],
     * in bag order. With by_row (optional), a backend that cannot follow bag order across threads sums
     * each row in that order from it: the same bits as the CPU, run after run, instead of atomics. */
    void (*embedding_bag_bwd)(backend_t *be, const float *dy, int ldy, int dim, const int32_t *off,
                              const int32_t *idx, const float *wts, int batch, int mean, float *grad,
                              int n_rows, const bag_rows_t *by_row);
    /* Dot interaction: t[b] is F vectors of d floats; y[b, j] (row stride ldy) for j < F(F-1)/2 is the dot
     * product of vectors (i, k), k < i, in the order (1,0), (2,0), (2,1), (3,0), ... */
    void (*interact_fwd)(backend_t *be, const float *t, int batch, int f, int d, float *y, int ldy);
    /* Its backward pass: dt[b] (F x d) = sum over pairs of dy[b, j] times the other vector of the pair. */
    void (*interact_bwd)(backend_t *be, const float *t, const float *dy, int ldy, int batch, int f, int d,
                         float *dt);
    /* Optional (NULL: nothing to do): releases what be->ctx holds (streams, library handles); backend_free
     * calls it, then frees be->ctx and be. */
    void (*destroy)(backend_t *be);
    /* Optional (NULL: use malloc/free): host memory that device copies read and write fastest (pinned,
     * page-locked), for the buffers staged every step. */
    void *(*alloc_host)(backend_t *be, size_t bytes);
    void (*free_host)(backend_t *be, void *p);
    /* Optional: pins host memory the caller allocated (cudaHostRegister), so copies to and from it are
     * as fast as from alloc_host's; 0, or nonzero when refused (the memory then stays pageable). */
    int (*register_host)(backend_t *be, void *p, size_t bytes);
    void (*unregister_host)(backend_t *be, void *p);
    /* Optional (NULL: callers use to_host / to_device): copies on a stream of their own that overlap the
     * compute queued around them. to_host_async copies src (device) to dst (host, pinned) once the work
     * queued before it is done; to_device_async copies src (host, pinned) to dst (device), and work
     * queued after it waits for it. Neither waits; each returns a ticket (> 0, rising). copy_wait(t)
     * returns once copy t and every earlier one is done: until then dst (to_host) must not be read and
     * src (to_device) must not change. copy_done(t) tells the same without waiting. */
    uint64_t (*to_host_async)(backend_t *be, void *dst, const void *src, size_t bytes);
    uint64_t (*to_device_async)(backend_t *be, void *dst, const void *src, size_t bytes);
    void (*copy_wait)(backend_t *be, uint64_t ticket);
    int (*copy_done)(backend_t *be, uint64_t ticket);
    /* One optimizer step over n parameters in device memory (a shard with ps.device): p and the
     * optimizer's slots s0, s1 (NULL when unused) updated with the mean gradient (g[0] + ... +
     * g[ng-1]) * gscale, summed in that order; g is a host array of device pointers, t the 1-based
     * step. The same bits as optim_apply (model/optim.h). */
    void (*optim_step)(backend_t *be, const struct optim *o, float *p, float *s0, float *s1,
                       const float *const *g, int ng, float gscale, size_t n, long t);
    /* Optional: dst[i] = src[i] rounded to bfloat16 as bf16_from_f32 (common/util.h) rounds it (to
     * nearest, ties to even; NaN stays NaN), both in device memory: net.grad_dtype = bf16 gradients then
     * leave a device at half the bytes, converted where they are. */
    void (*to_bf16)(backend_t *be, uint16_t *dst, const float *src, size_t n);
    /* Optional: dst[i] = src[i] widened to float32 as f32_from_bf16 widens it (exact), both in device
     * memory: net.param_dtype = bf16 parameters then reach a device at half the bytes. */
    void (*from_bf16)(backend_t *be, float *dst, const uint16_t *src, size_t n);
    /* Optional (CUDA IPC): ipc_export writes into `handle` what lets another process of this machine map
     * device memory p (the start of an alloc), 0 or nonzero when refused; ipc_open maps such a handle
     * here, or returns NULL with the reason (the handle is this process's own, or of a device this one
     * cannot reach); ipc_close unmaps it. The processes share no stream: each side's sync before it
     * tells the other (a message) is what orders their work on the memory. */
    int (*ipc_export)(backend_t *be, void *p, unsigned char handle[BACKEND_IPC_HANDLE]);
    void *(*ipc_open)(backend_t *be, const unsigned char handle[BACKEND_IPC_HANDLE], char *why,
                      size_t whylen);
    void (*ipc_close)(backend_t *be, void *p);
} backend_ops_t;

/* Transposes bags (off [batch + 1], idx and wts (or NULL) [off[batch]], indices < n_rows) into the host
 * arrays of a bag_rows_t: r_off [n_rows + 1], r_bag and r_w [off[batch]]. A stable counting sort. */
void bag_rows_build(const int32_t *off, const int32_t *idx, const float *wts, int batch, int mean, int n_rows,
                    int32_t *r_off, int32_t *r_bag, float *r_w);

/* Host staging buffers: the backend's pinned memory when it has some, else malloc (never NULL). */
void *backend_host_alloc(backend_t *be, size_t bytes);
void backend_host_free(backend_t *be, void *p);

struct backend {
    const backend_ops_t *ops;
    void *ctx;
    int threads;
    int host_memory; /* device memory is ordinary host memory: callers may skip staging copies */
};

/* Creates the backend called `name` ("cpu"; "cuda" when built with CUDA). Returns NULL with a message
 * in `err` when the name is unknown or the device cannot be opened. */
backend_t *backend_create(const char *name, int threads, char *err, size_t errlen);
void backend_free(backend_t *be);

backend_t *backend_cpu_create(int threads);
/* "cpu-staged": the CPU backend's arithmetic behind separate "device" memory with late-landing
 * asynchronous copies, for testing the device paths without a GPU (model/backend_staged.c). */
backend_t *backend_staged_create(int threads);
/* The CUDA backend on the current device: NULL with a message in `err` when no device is visible or it
 * cannot be opened. Defined only in builds with CUDA (TESSERA_HAVE_CUDA); others reach it, and get their
 * error, through backend_create("cuda"). */
backend_t *backend_cuda_create(int threads, char *err, size_t errlen);

#endif
