/* Layers: each type lives in its own file (layer_<type>.c) with hand-written forward and backward
 * passes that call only the backend vtable. A layer reads the outputs of earlier layers (or the model's
 * dense input) and writes one output; embedding_bag reads the batch's categorical ids instead. */
#ifndef TESSERA_LAYER_H
#define TESSERA_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"

#define LAYER_MAX_PARAMS 2
#define LAYER_MAX_INPUTS CFG_MAX_INPUTS
#define LAYER_INPUT      (-1) /* an input index meaning the model's dense input */

typedef struct {
    char suffix[16]; /* "weight", "bias": the tensor is named "<layer>.<suffix>" */
    uint64_t rows, cols;
    float bound; /* initial values U(-bound, bound); 0 gives zeros */
} param_shape_t;

/* One categorical slot of an embedding_bag layer for the current batch: the batch's unique ids of the
 * slot's table, their rows (pulled from the shards), and per example a bag of indices into those rows.
 * Set by the model's owner before each run; all pointers are backend memory. */
typedef struct {
    int table;                /* index in the model's table list */
    int n_unique;             /* rows below */
    const float *rows;        /* [n_unique, dim] */
    float *grad;              /* [n_unique, dim]: written by the backward pass (deduplicated row gradients) */
    const int32_t *off;       /* [batch + 1]: example b's bag is idx[off[b] .. off[b + 1]) */
    const int32_t *idx;       /* indices into rows */
    const float *wts;         /* one weight per idx entry, or NULL (all 1) */
    const bag_rows_t *by_row; /* the same bags by row, or NULL (see embedding_bag_bwd) */
} sparse_slot_t;

typedef struct layer layer_t;

/* A model-parallel linear layer's products, computed where its weight lives (the shards). Set by the
 * model's owner; host memory. A failure is recorded in the owner's context (the calls return nothing),
 * and the owner checks it after the pass. */
typedef struct layer_remote {
    void *ctx;
    /* y[batch, out] = x[batch, in] W^T */
    void (*fwd)(const struct layer_remote *r, layer_t *l, const float *x, float *y, int batch);
    /* Hands x and dy[batch, out] to the weight's owners (who accumulate dW = dy^T x) and, unless dx is
     * NULL, writes dx[batch, in] = dy W. */
    void (*bwd)(const struct layer_remote *r, layer_t *l, const float *x, const float *dy, float *dx,
                int batch);
} layer_remote_t;

typedef struct {
    const char *type;
    int is_loss; /* a loss ends the model: it takes labels and produces the first gradient */
    int max_in;  /* inputs it takes: 1 for most layers, 0 for embedding_bag, up to LAYER_MAX_INPUTS */
    /* Sets out, n_params and pshape from the layer's config and its inputs (l->n_in, l->in_w[], and `in`,
     * their total width). 0 or -TS_EINVAL with a message. */
    int (*init)(layer_t *l, const layer_cfg_t *cfg, int in, char *err, size_t errlen);
    /* y[batch, out] = f(x[0][batch, in_w[0]], x[1], ...) */
    void (*forward)(layer_t *l, backend_t *be, const float *const *x, float *y, int batch);
    /* Overwrites the parameter gradients g[] (and the sparse slots' grad) and, for each input i whose
     * dx[i] is not NULL, writes dx[i][batch, in_w[i]]. */
    void (*backward)(layer_t *l, backend_t *be, const float *const *x, const float *y, const float *dy,
                     float *const *dx, int batch);
    /* Loss layers: per-row loss and prediction; dx (unless NULL) is d(mean loss)/dx. */
    void (*loss)(layer_t *l, backend_t *be, const float *x, const int32_t *labels, int batch,
                 float *loss_rows, int32_t *pred, float *dx);
} layer_ops_t;

struct layer {
    const layer_ops_t *ops;
    char name[32];
    int in, out;
    int n_in;                    /* inputs */
    int input[LAYER_MAX_INPUTS]; /* the layer whose output each input is, or LAYER_INPUT */
    int in_w[LAYER_MAX_INPUTS];  /* their widths */
    int n_params;
    param_shape_t pshape[LAYER_MAX_PARAMS];
    int tensor[LAYER_MAX_PARAMS];                     /* index in the model's tensor list */
    int remote_weight;                                /* linear, parallel = model: p[0], g[0] are NULL */
    const layer_remote_t *remote;                     /* how to reach the weight then */
    float *p[LAYER_MAX_PARAMS], *g[LAYER_MAX_PARAMS]; /* backend memory; NULL in a bare spec */
    /* embedding_bag: its slots (one table each) and how bags are reduced */
    int n_slots, slot_begin, dim, mean;
    sparse_slot_t *slots; /* [n_slots], owned by the model */
    /* working memory some layers need (dot: its inputs side by side), grown on use, freed by the model */
    float *scratch, *dscratch;
    int scratch_rows;
};

/* Makes l->scratch and l->dscratch hold at least batch * width floats each. 0 or -TS_ENOMEM. */
int layer_scratch(layer_t *l, backend_t *be, int batch, int width);

extern const layer_ops_t layer_linear_ops;
extern const layer_ops_t layer_relu_ops;
extern const layer_ops_t layer_softmax_xent_ops;
extern const layer_ops_t layer_embedding_bag_ops;
extern const layer_ops_t layer_concat_ops;
extern const layer_ops_t layer_dot_ops;
extern const layer_ops_t layer_sigmoid_bce_ops;

/* The ops of layer type `type`, or NULL. */
const layer_ops_t *layer_find(const char *type);

#endif
