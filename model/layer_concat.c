/* concat: y = [x0 | x1 | ...] along features. */
#include "layer.h"

static int concat_init(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen) {
    (void)cfg;
    (void)err;
    (void)errlen;
    l->out = in;
    return 0;
}

static void concat_forward(layer_t *l, backend_t *be, const float *const *x, float *y, int batch) {
    for (int k = 0, col = 0; k < l->n_in; col += l->in_w[k++])
        be->ops->copy_cols(be, y + col, l->out, x[k], l->in_w[k], batch, l->in_w[k]);
}

static void concat_backward(layer_t *l, backend_t *be, const float *const *x, const float *y, const float *dy,
                            float *const *dx, int batch) {
    (void)x;
    (void)y;
    for (int k = 0, col = 0; k < l->n_in; col += l->in_w[k++])
        if (dx[k]) be->ops->copy_cols(be, dx[k], l->in_w[k], dy + col, l->out, batch, l->in_w[k]);
}

const layer_ops_t layer_concat_ops = {
    .type = "concat",
    .max_in = LAYER_MAX_INPUTS,
    .init = concat_init,
    .forward = concat_forward,
    .backward = concat_backward,
};
