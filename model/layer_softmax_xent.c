/* softmax_xent: the mean softmax cross-entropy of logits against integer class labels. */
#include "layer.h"

static int softmax_xent_init(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen) {
    (void)cfg;
    (void)err;
    (void)errlen;
    l->out = in;
    return 0;
}

static void softmax_xent_loss(layer_t *l, backend_t *be, const float *x, const int32_t *labels, int batch,
                              float *loss_rows, int32_t *pred, float *dx) {
    be->ops->softmax_xent(be, x, labels, batch, l->in, 1.0f / (float)batch, loss_rows, pred, dx);
}

const layer_ops_t layer_softmax_xent_ops = {
    .type = "softmax_xent",
    .is_loss = 1,
    .max_in = 1,
    .init = softmax_xent_init,
    .loss = softmax_xent_loss,
};
