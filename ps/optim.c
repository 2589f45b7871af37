#include "optim.h"

#include <math.h>
#include <string.h>

void optim_from_config(optim_t *o, const job_config_t *cfg) {
    static const struct {
        const char *name;
        opt_kind_t kind;
    } names[] = {{"sgd", OPT_SGD}, {"momentum", OPT_MOMENTUM}, {"adam", OPT_ADAM},
                 {"adamw", OPT_ADAMW}, {"adagrad", OPT_ADAGRAD}};
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(cfg->opt_type, names[i].name)) o->kind = names[i].kind;
    o->lr = (float)cfg->lr;
    o->beta1 = (float)cfg->beta1;
    o->beta2 = (float)cfg->beta2;
    o->eps = (float)cfg->eps;
    o->momentum = (float)cfg->momentum;
    o->weight_decay = (float)cfg->weight_decay;
}

int optim_slots(const optim_t *o) {
    switch (o->kind) {
    case OPT_SGD: return 0;
    case OPT_MOMENTUM:
    case OPT_ADAGRAD: return 1;
    case OPT_ADAM:
    case OPT_ADAMW: return 2;
    }
    return 0;
}

static inline float grad_at(const float *const *g, int ng, float gscale, size_t i) {
    float s = g[0][i];
    for (int j = 1; j < ng; j++) s += g[j][i];
    return s * gscale;
}

void optim_apply(const optim_t *o, float *p, float *s0, float *s1, const float *const *g, int ng,
                 float gscale, size_t n, long t) {
    const float lr = o->lr, wd = o->weight_decay;
    switch (o->kind) {
    case OPT_SGD:
        for (size_t i = 0; i < n; i++) p[i] -= lr * (grad_at(g, ng, gscale, i) + wd * p[i]);
        break;
    case OPT_MOMENTUM:
        for (size_t i = 0; i < n; i++) {
            float gi = grad_at(g, ng, gscale, i) + wd * p[i];
            s0[i] = o->momentum * s0[i] + gi;
            p[i] -= lr * s0[i];
        }
        break;
    case OPT_ADAGRAD:
        for (size_t i = 0; i < n; i++) {
            float gi = grad_at(g, ng, gscale, i) + wd * p[i];
            s0[i] += gi * gi;
            p[i] -= lr * gi / (sqrtf(s0[i]) + o->eps);
        }
        break;
    case OPT_ADAM:
    case OPT_ADAMW: {
        const float b1 = o->beta1, b2 = o->beta2;
        const float bc1 = (float)(1.0 - pow((double)b1, (double)t));
        const float bc2_sqrt = (float)sqrt(1.0 - pow((double)b2, (double)t));
        const float step = lr / bc1;
        const int decoupled = o->kind == OPT_ADAMW;
        for (size_t i = 0; i < n; i++) {
            float gi = grad_at(g, ng, gscale, i);
            if (decoupled) p[i] *= 1.0f - lr * wd;
            else gi += wd * p[i];
            s0[i] = b1 * s0[i] + (1.0f - b1) * gi;
            s1[i] = b2 * s1[i] + (1.0f - b2) * gi * gi;
            p[i] -= step * s0[i] / (sqrtf(s1[i]) / bc2_sqrt + o->eps);
        }
        break;
    }
    }
}
