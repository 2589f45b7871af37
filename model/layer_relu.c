/* relu: y = max(x, 0). */
#include "layer.h"

static int relu_init(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen) {
    (void)cfg;
    (void)err;
    (void)errlen;
    l->out = in;
    return 0;
}

static void relu_forward(layer_t *l, backend_t *be, const float *const *x, float *y, int batch) {
    be->ops->relu_fwd(be, x[0], y, (size_t)batch * (size_t)l->out);
}

static void relu_backward(layer_t *l, backend_t *be, const float *const *x, const float *y, const float *dy,
                          float *const *dx, int batch) {
    (void)x;
    if (dx[0]) be->ops->relu_bwd(be, y, dy, dx[0], (size_t)batch * (size_t)l->out);
}

const layer_ops_t layer_relu_ops = {
    .type = "relu",
    .max_in = 1,
    .init = relu_init,
    .forward = relu_forward,
    .backward = relu_backward,
};
