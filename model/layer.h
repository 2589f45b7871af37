/* Layers: each type lives in its own file (layer_<type>.c) with hand-written forward and backward
 * passes that call only the backend vtable. */
#ifndef TESSERA_LAYER_H
#define TESSERA_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"

#define LAYER_MAX_PARAMS 2

typedef struct {
    char suffix[16]; /* "weight", "bias": the tensor is named "<layer>.<suffix>" */
    uint64_t rows, cols;
    float bound; /* initial values U(-bound, bound); 0 gives zeros */
} param_shape_t;

typedef struct layer layer_t;

typedef struct {
    const char *type;
    int is_loss; /* a loss ends the model: it takes labels and produces the first gradient */
    /* Sets out, n_params and pshape from the layer's config and input width. 0 or -TS_EINVAL. */
    int (*init)(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen);
    /* y[batch, out] = f(x[batch, in]) */
    void (*forward)(layer_t *l, backend_t *be, const float *x, float *y, int batch);
    /* Overwrites the parameter gradients g[] and, unless dx is NULL, writes dx[batch, in]. */
    void (*backward)(layer_t *l, backend_t *be, const float *x, const float *y, const float *dy, float *dx,
                     int batch);
    /* Loss layers: per-row loss and prediction; dx (unless NULL) is d(mean loss)/dx. */
    void (*loss)(layer_t *l, backend_t *be, const float *x, const int32_t *labels, int batch,
                 float *loss_rows, int32_t *pred, float *dx);
} layer_ops_t;

struct layer {
    const layer_ops_t *ops;
    char name[32];
    int in, out;
    int n_params;
    param_shape_t pshape[LAYER_MAX_PARAMS];
    int tensor[LAYER_MAX_PARAMS];                     /* index in the model's tensor list */
    float *p[LAYER_MAX_PARAMS], *g[LAYER_MAX_PARAMS]; /* backend memory; NULL in a bare spec */
};

extern const layer_ops_t layer_linear_ops;
extern const layer_ops_t layer_relu_ops;
extern const layer_ops_t layer_softmax_xent_ops;

/* The ops of layer type `type`, or NULL. */
const layer_ops_t *layer_find(const char *type);

#endif
