/* linear: y = x W^T + b, with W [out, in] (the PyTorch layout) and b [out]. */
#include <math.h>
#include <stdio.h>

#include "check.h"
#include "layer.h"

static int linear_init(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    l->out = cfg->out;
    l->n_params = 2;
    float bound = 1.0f / sqrtf((float)in); /* PyTorch's default for nn.Linear */
    l->pshape[0] = (param_shape_t){"weight", (uint64_t)l->out, (uint64_t)in, bound};
    l->pshape[1] = (param_shape_t){"bias", (uint64_t)l->out, 1, bound};
    return 0;
}

/* A model-parallel layer (l->remote_weight) has its weight on the shards: l->remote computes the two
 * products that need it, and the shards accumulate dW; the bias is local. */
static void linear_forward(layer_t *l, backend_t *be, const float *const *x, float *y, int batch) {
    if (l->remote_weight)
        l->remote->fwd(l->remote, l, x[0], y, batch);
    else
        be->ops->gemm(be, 0, 1, batch, l->out, l->in, 1.0f, x[0], l->p[0], 0.0f, y);
    be->ops->add_bias(be, y, l->p[1], batch, l->out);
}

static void linear_backward(layer_t *l, backend_t *be, const float *const *x, const float *y, const float *dy,
                            float *const *dx, int batch) {
    (void)y;
    be->ops->sum_rows(be, l->g[1], dy, batch, l->out); /* db = sum dy */
    if (l->remote_weight) {
        l->remote->bwd(l->remote, l, x[0], dy, dx[0], batch);
        return;
    }
    be->ops->gemm(be, 1, 0, l->out, l->in, batch, 1.0f, dy, x[0], 0.0f, l->g[0]); /* dW = dy^T x */
    if (dx[0]) be->ops->gemm(be, 0, 0, batch, l->in, l->out, 1.0f, dy, l->p[0], 0.0f, dx[0]); /* dx = dy W */
}

const layer_ops_t layer_linear_ops = {
    .type = "linear",
    .max_in = 1,
    .init = linear_init,
    .forward = linear_forward,
    .backward = linear_backward,
};
