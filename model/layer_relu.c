/* relu: y = max(x, 0). */
#include "layer.h"

static int relu_init(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen) {
    (void)cfg;
    (void)err;
    (void)errlen;
    l->in = l->out = in;
    return 0;
}

static void relu_forward(layer_t *l, backend_t *be, const float *x, float *y, int batch) {
    be->ops->relu_fwd(be, x, y, (size_t)batch * (size_t)l->out);
}

static void relu_backward(layer_t *l, backend_t *be, const float *x, const float *y, const float *dy,
                          float *dx, int batch) {
    (void)x;
    if (dx) be->ops->relu_bwd(be, y, dy, dx, (size_t)batch * (size_t)l->out);
}

const layer_ops_t layer_relu_ops = {
    .type = "relu",
    .init = relu_init,
    .forward = relu_forward,
    .backward = relu_backward,
};
