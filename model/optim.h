/* Optimizers that run on the shards, beside the parameters they update (on the CPU, or on a device
 * through the backend's optim_step, which gives the same bits). */
#ifndef TESSERA_OPTIM_H
#define TESSERA_OPTIM_H

#include <stddef.h>

#include "config.h"

typedef enum { OPT_SGD, OPT_MOMENTUM, OPT_ADAM, OPT_ADAMW, OPT_ADAGRAD } opt_kind_t;

typedef struct optim {
    opt_kind_t kind;
    float lr, beta1, beta2, eps, momentum, weight_decay;
} optim_t;

/* The optimizer called `name` (sgd, momentum, adam, adamw, adagrad). 0, or -1 when unknown. */
int optim_parse_kind(const char *name, opt_kind_t *kind);

/* From the job's [optimizer] section (already validated). */
void optim_from_config(optim_t *o, const job_config_t *cfg);

/* Number of state slots per parameter: 0 (sgd), 1 (momentum, adagrad) or 2 (adam, adamw). */
int optim_slots(const optim_t *o);

/* One optimizer step over n elements, with the PyTorch update rules. The gradient of element i is
 * (g[0][i] + g[1][i] + ... + g[ng-1][i]) * gscale, summed in that order so results are reproducible.
 * `t` is the 1-based step number (bias correction). s0/s1 are the state slots (NULL if unused). */
void optim_apply(const optim_t *o, float *p, float *s0, float *s1, const float *const *g, int ng,
                 float gscale, size_t n, long t);

#endif
