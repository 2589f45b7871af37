/* A model: a sequence of layers ending in a loss, with its parameters as named tensors laid out in
 * one flat buffer (tensor by tensor, row-major). */
#ifndef TESSERA_MODEL_H
#define TESSERA_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "layer.h"

typedef struct {
    char name[64]; /* "<layer>.<suffix>" */
    uint64_t rows, cols;
    size_t offset; /* in floats, into the flat buffer (not for remote tensors) */
    float bound;
    int remote; /* a model-parallel weight: only the shards hold it; not in the flat buffer */
} tensor_info_t;

/* A sparse (embedding) table: one per categorical slot of an embedding_bag layer. Its rows live only on
 * the shards (row `id` on shard shard_map_sparse_owner(table, id, S)); workers pull a batch's rows. */
typedef struct {
    char name[64];   /* "<layer>.slot<k>" */
    int layer, slot; /* the embedding_bag layer, and the data's categorical slot it reads */
    int dim;
    uint64_t rows; /* 0: any id, rows created on first touch; N: ids < N, pre-sized */
    float bound;   /* initial values U(-bound, bound) */
    char optimizer[16];
    double lr;
} table_info_t;

/* What a model is, without memory: enough for shards to know every tensor. Layers run in file order;
 * each output feeds exactly one later layer. */
typedef struct {
    int n_layers;
    layer_t *layers;
    int n_tensors;
    tensor_info_t *tensors;
    size_t n_floats;      /* the flat buffer: every tensor but the remote ones */
    size_t remote_floats; /* the remote tensors' */
    int n_remote;         /* model-parallel layers */
    int n_tables;
    table_info_t *tables;
    int input_dim, classes;
    int n_slots;  /* categorical slots the data must have (0: a dense-only model) */
    int is_chain; /* every layer reads the previous one and nothing is sparse (the router can serve it) */
} model_spec_t;

/* Builds the layer list from the job's [layer NAME] sections. 0 or -TS_EINVAL with a message. */
int model_spec_init(model_spec_t *s, const job_config_t *cfg, char *err, size_t errlen);
void model_spec_free(model_spec_t *s);

/* The initial values of rows [row_begin, row_end) of tensor t: a function of (seed, t, element) only. */
void model_spec_init_rows(const model_spec_t *s, int t, uint64_t row_begin, uint64_t row_end, uint64_t seed,
                          float *out);

typedef struct {
    model_spec_t spec;
    backend_t *be;
    int max_batch;
    float *params, *grads; /* backend memory, spec.n_floats each */
    int flat_borrowed;     /* params and grads are the caller's (model_use_flat), not freed here */
    float *x;              /* the dense input [max_batch, input_dim] */
    float **out, **dout;   /* out[i]: output of layer i (NULL for the loss); dout[i]: its gradient */
    float *logits;         /* the loss layer's input: an out[] buffer [max_batch, classes] */
    sparse_slot_t *slots;  /* every embedding_bag slot, table order: slots[t] feeds table t */
    int32_t *labels_dev, *pred_dev;
    float *loss_dev;
    float *loss_host;
    int32_t *pred_host;
    /* Optional: during model_run's backward pass, called after each layer with parameters has been run
     * (queued, on an asynchronous backend) with the first tensor whose gradient is final from then on:
     * every tensor from it to the last. Tensors are numbered in layer order, so this only falls. */
    void (*grads_ready)(void *ctx, int first_tensor);
    void *grads_ready_ctx;
} model_t;

/* Allocates a model for batches of up to `max_batch` rows on `be` (borrowed). */
int model_init(model_t *m, const job_config_t *cfg, backend_t *be, int max_batch, char *err, size_t errlen);
void model_free(model_t *m);

/* The model's parameters and gradients move into the caller's buffers (backend memory, spec.n_floats
 * each, kept until after model_free), e.g. a worker's exchange region or its device region. */
void model_use_flat(model_t *m, float *params, float *grads);

/* Runs x_host[batch, input] forward and, when `train`, backward, leaving the gradient of the mean loss
 * in m->grads (and each sparse slot's grad). Adds the summed loss to *loss_sum and the correct
 * predictions to *correct. A model with tables needs m->slots[t] filled for this batch first. */
void model_run(model_t *m, const float *x_host, const int32_t *y_host, int batch, int train, double *loss_sum,
               long *correct);

/* Inference: runs x_host[batch, input] through every layer before the loss and copies the loss
 * layer's input (the logits, [batch, classes]) to logits_host. batch <= max_batch. */
void model_forward(model_t *m, const float *x_host, int batch, float *logits_host);

/* The width of layer i's output (the logits for the loss layer). */
int model_layer_out(const model_spec_t *s, int i);

#endif
