/* The compute backend: a small vtable (in the manner of ggml's backend interface). Model code calls
 * only these functions; a backend owns its memory and streams. All tensors are row-major float32. */
#ifndef TESSERA_BACKEND_H
#define TESSERA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct backend backend_t;

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
} backend_ops_t;

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

#endif
