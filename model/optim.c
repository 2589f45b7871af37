#include "optim.h"

#include <math.h>
#include <string.h>

int optim_parse_kind(const char *name, opt_kind_t *kind) {
    static const struct {
        const char *name;
        opt_kind_t kind;
    } names[] = {{"sgd", OPT_SGD},
                 {"momentum", OPT_MOMENTUM},
                 {"adam", OPT_ADAM},
                 {"adamw", OPT_ADAMW},
                 {"adagrad", OPT_ADAGRAD}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i].name)) {
            *kind = names[i].kind;
            return 0;
        }
    return -1;
}

void optim_from_config(optim_t *o, const job_config_t *cfg) {
    memset(o, 0, sizeof *o);
    optim_parse_kind(cfg->opt_type, &o->kind);
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

/* The averaged gradient: g[0] alone, or the sum of all g[j] in order, into `scratch`. */
static const float *mean_grad(const float *const *g, int ng, float gscale, size_t n, float *scratch) {
    if (ng == 1 && gscale == 1.0f) return g[0];
    for (size_t i = 0; i < n; i++)
        scratch[i] = g[0][i];
    for (int j = 1; j < ng; j++)
        for (size_t i = 0; i < n; i++)
            scratch[i] += g[j][i];
    for (size_t i = 0; i < n; i++)
        scratch[i] *= gscale;
    return scratch;
}

/* Elementwise loops kept simple so the compiler vectorises them (-O3 -fno-math-errno). Processed in
 * blocks so the summed gradient stays in cache. */
#define OPTIM_BLOCK 4096

static void apply_block(const optim_t *o, float *restrict p, float *restrict s0, float *restrict s1,
                        const float *restrict g, size_t n, long t) {
    const float lr = o->lr, wd = o->weight_decay;
    switch (o->kind) {
    case OPT_SGD:
        for (size_t i = 0; i < n; i++)
            p[i] -= lr * (g[i] + wd * p[i]);
        break;
    case OPT_MOMENTUM:
        for (size_t i = 0; i < n; i++) {
            float gi = g[i] + wd * p[i];
            s0[i] = o->momentum * s0[i] + gi;
            p[i] -= lr * s0[i];
        }
        break;
    case OPT_ADAGRAD:
        for (size_t i = 0; i < n; i++) {
            float gi = g[i] + wd * p[i];
            s0[i] += gi * gi;
            p[i] -= lr * gi / (sqrtf(s0[i]) + o->eps);
        }
        break;
    case OPT_ADAM:
    case OPT_ADAMW: {
        const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
        const float bc1 = (float)(1.0 - pow((double)b1, (double)t));
        const float inv_bc2_sqrt = (float)(1.0 / sqrt(1.0 - pow((double)b2, (double)t)));
        const float step = lr / bc1;
        /* AdamW decays the weight first (decoupled); Adam adds wd * p to the gradient. */
        const float decay = o->kind == OPT_ADAMW ? 1.0f - lr * wd : 1.0f;
        const float l2 = o->kind == OPT_ADAMW ? 0.0f : wd;
        for (size_t i = 0; i < n; i++) {
            float pi = p[i] * decay;
            float gi = g[i] + l2 * pi;
            float m = b1 * s0[i] + (1.0f - b1) * gi;
            float v = b2 * s1[i] + (1.0f - b2) * gi * gi;
            s0[i] = m;
            s1[i] = v;
            p[i] = pi - step * m / (sqrtf(v) * inv_bc2_sqrt + eps);
        }
        break;
    }
    }
}

void optim_apply(const optim_t *o, float *p, float *s0, float *s1, const float *const *g, int ng,
                 float gscale, size_t n, long t) {
    float scratch[OPTIM_BLOCK];
    for (size_t off = 0; off < n; off += OPTIM_BLOCK) {
        size_t len = n - off < OPTIM_BLOCK ? n - off : OPTIM_BLOCK;
        const float *gb[ng];
        for (int j = 0; j < ng; j++)
            gb[j] = g[j] + off;
        const float *gm = mean_grad(gb, ng, gscale, len, scratch);
        apply_block(o, p + off, s0 ? s0 + off : NULL, s1 ? s1 + off : NULL, gm, len, t);
    }
}
