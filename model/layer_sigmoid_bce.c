/* sigmoid_bce: the mean binary cross-entropy of one logit per example against a 0/1 label (click-through
 * models); the prediction is logit > 0. */
#include <stdio.h>

#include "layer.h"

static int sigmoid_bce_init(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen) {
    (void)cfg;
    if (in != 1) {
        snprintf(err, errlen, "sigmoid_bce takes one logit per example; its input has %d features", in);
        return -1;
    }
    l->out = 1;
    return 0;
}

static void sigmoid_bce_loss(layer_t *l, backend_t *be, const float *x, const int32_t *labels, int batch,
                             float *loss_rows, int32_t *pred, float *dx) {
    (void)l;
    be->ops->sigmoid_bce(be, x, labels, batch, 1.0f / (float)batch, loss_rows, pred, dx);
}

const layer_ops_t layer_sigmoid_bce_ops = {
    .type = "sigmoid_bce",
    .is_loss = 1,
    .max_in = 1,
    .init = sigmoid_bce_init,
    .loss = sigmoid_bce_loss,
};
