/* dot: DLRM's dot interaction. The inputs are read as F vectors of d features (d = the first input's
 * width; every input's width is a multiple of d, e.g. the bottom MLP's output and an embedding_bag's
 * slots); y = [first input | the F(F-1)/2 pairwise dot products]. */
#include <stdio.h>

#include "check.h"
#include "layer.h"

static int dot_init(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen) {
    (void)cfg;
    int d = l->in_w[0];
    for (int k = 1; k < l->n_in; k++)
        if (l->in_w[k] % d) {
            snprintf(err, errlen, "dot: input %d has %d features, not a multiple of the first input's %d", k,
                     l->in_w[k], d);
            return -TS_EINVAL;
        }
    int f = in / d;
    if (f < 2) {
        snprintf(err, errlen, "dot: needs at least two vectors of %d features to interact", d);
        return -TS_EINVAL;
    }
    l->dim = d;
    l->out = d + f * (f - 1) / 2;
    return 0;
}

static void dot_forward(layer_t *l, backend_t *be, const float *const *x, float *y, int batch) {
    int d = l->dim, f = l->in / d;
    if (layer_scratch(l, be, batch, l->in)) {
        log_error("dot %s: out of memory for a batch of %d", l->name, batch);
        abort();
    }
    for (int k = 0, col = 0; k < l->n_in; col += l->in_w[k++])
        be->ops->copy_cols(be, l->scratch + col, l->in, x[k], l->in_w[k], batch, l->in_w[k]);
    be->ops->copy_cols(be, y, l->out, x[0], d, batch, d);
    be->ops->interact_fwd(be, l->scratch, batch, f, d, y + d, l->out);
}

static void dot_backward(layer_t *l, backend_t *be, const float *const *x, const float *y, const float *dy,
                         float *const *dx, int batch) {
    (void)x;
    (void)y;
    int d = l->dim, f = l->in / d;
    /* l->scratch still holds this batch's inputs side by side, from the forward pass. */
    be->ops->interact_bwd(be, l->scratch, dy + d, l->out, batch, f, d, l->dscratch);
    for (int k = 0, col = 0; k < l->n_in; col += l->in_w[k++])
        if (dx[k]) be->ops->copy_cols(be, dx[k], l->in_w[k], l->dscratch + col, l->in, batch, l->in_w[k]);
    /* The first input also passes straight through to y[:, 0:d]. */
    if (dx[0]) {
        float *tmp = l->dscratch; /* reuse: add dy[:, 0:d] to dx[0] through the backend */
        be->ops->copy_cols(be, tmp, d, dy, l->out, batch, d);
        be->ops->axpy(be, dx[0], tmp, 1.0f, (size_t)batch * (size_t)d);
    }
}

const layer_ops_t layer_dot_ops = {
    .type = "dot",
    .max_in = LAYER_MAX_INPUTS,
    .init = dot_init,
    .forward = dot_forward,
    .backward = dot_backward,
};
