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
    size_t offset; /* in floats, into the flat buffer */
    float bound;
} tensor_info_t;

/* What a model is, without memory: enough for shards to know every tensor. */
typedef struct {
    int n_layers;
    layer_t *layers;
    int n_tensors;
    tensor_info_t *tensors;
    size_t n_floats;
    int input_dim, classes;
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
    float **act, **dact;   /* act[i]: input of layer i; dact[i]: its gradient (dact[0] unused) */
    int32_t *labels_dev, *pred_dev;
    float *loss_dev;
    float *loss_host;
    int32_t *pred_host;
} model_t;

/* Allocates a model for batches of up to `max_batch` rows on `be` (borrowed). */
int model_init(model_t *m, const job_config_t *cfg, backend_t *be, int max_batch, char *err, size_t errlen);
void model_free(model_t *m);

/* Runs x_host[batch, input] forward and, when `train`, backward, leaving the gradient of the mean loss
 * in m->grads. Adds the summed loss to *loss_sum and the correct predictions to *correct. */
void model_run(model_t *m, const float *x_host, const int32_t *y_host, int batch, int train, double *loss_sum,
               long *correct);

/* Inference: runs x_host[batch, input] through every layer before the loss and copies the loss
 * layer's input (the logits, [batch, classes]) to logits_host. batch <= max_batch. */
void model_forward(model_t *m, const float *x_host, int batch, float *logits_host);

/* The width of layer i's output (the input of layer i + 1, or the logits for the last one). */
int model_layer_out(const model_spec_t *s, int i);

#endif
