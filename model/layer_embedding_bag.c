/* embedding_bag: for each categorical slot it reads (features = A-B), the sum (or mean) of the rows of
 * that slot's table named by the example's ids, side by side: y[b] = [bag(b, A) | ... | bag(b, B)], dim
 * floats each. The rows come from the shards (sparse pull) into l->slots; the backward pass writes the
 * deduplicated row gradients there for the sparse push. */
#include "layer.h"

static int embedding_bag_init(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen) {
    (void)cfg;
    (void)in;
    (void)err;
    (void)errlen;
    l->out = l->n_slots * l->dim;
    return 0;
}

static void embedding_bag_forward(layer_t *l, backend_t *be, const float *const *x, float *y, int batch) {
    (void)x;
    for (int k = 0; k < l->n_slots; k++) {
        const sparse_slot_t *s = &l->slots[k];
        be->ops->embedding_bag_fwd(be, s->rows, l->dim, s->off, s->idx, s->wts, batch, l->mean,
                                   y + k * l->dim, l->out);
    }
}

static void embedding_bag_backward(layer_t *l, backend_t *be, const float *const *x, const float *y,
                                   const float *dy, float *const *dx, int batch) {
    (void)x;
    (void)y;
    (void)dx;
    for (int k = 0; k < l->n_slots; k++) {
        sparse_slot_t *s = &l->slots[k];
        be->ops->embedding_bag_bwd(be, dy + k * l->dim, l->out, l->dim, s->off, s->idx, s->wts, batch,
                                   l->mean, s->grad, s->n_unique, s->by_row);
    }
}

const layer_ops_t layer_embedding_bag_ops = {
    .type = "embedding_bag",
    .max_in = 0,
    .init = embedding_bag_init,
    .forward = embedding_bag_forward,
    .backward = embedding_bag_backward,
};
