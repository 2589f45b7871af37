/* Each layer's backward pass against central finite differences, on the CPU backend. For layers
 * other than the loss, the scalar is L = sum(y * r) for a fixed random r, so dL/dy = r. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "expect.h"
#include "layer.h"
#include "model.h"
#include "util.h"

static rng_t rng;

static float uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)(rng_next(&rng) >> 40) / 16777216.0f;
}

static void fill(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++)
        x[i] = uniform(lo, hi);
}

/* Relative error of an analytic gradient against a numeric one, tolerant of tiny values. */
static double rel_err(double a, double n) {
    double d = fabs(a - n), s = fabs(a) + fabs(n);
    return s < 1e-4 ? d : d / s;
}

typedef struct {
    layer_t l;
    int batch;
    float *x, *y, *r, *dx, *params, *grads;
} lcase_t;

static double objective(lcase_t *c, backend_t *be) {
    c->l.ops->forward(&c->l, be, c->x, c->y, c->batch);
    double s = 0;
    for (int i = 0; i < c->batch * c->l.out; i++)
        s += (double)c->y[i] * c->r[i];
    return s;
}

/* Checks d objective / d v[i] for every i of v (n values) against the analytic gradient g. */
static double check_wrt(lcase_t *c, backend_t *be, float *v, const float *g, size_t n) {
    double worst = 0;
    const float h = 1e-2f;
    for (size_t i = 0; i < n; i++) {
        float keep = v[i];
        v[i] = keep + h;
        double up = objective(c, be);
        v[i] = keep - h;
        double down = objective(c, be);
        v[i] = keep;
        double e = rel_err(g[i], (up - down) / (2.0 * h));
        if (e > worst) worst = e;
    }
    return worst;
}

static void test_layer(const char *type, int in, int out, backend_t *be) {
    lcase_t c = {.batch = 5};
    layer_cfg_t cfg = {.out = out};
    snprintf(cfg.name, sizeof cfg.name, "t");
    snprintf(cfg.type, sizeof cfg.type, "%s", type);
    c.l.ops = layer_find(type);
    EXPECT(c.l.ops != NULL, "layer %s missing", type);
    if (!c.l.ops) return;
    char err[256];
    EXPECT(c.l.ops->init(&c.l, &cfg, in, err, sizeof err) == 0, "%s init", type);
    size_t np = 0;
    for (int p = 0; p < c.l.n_params; p++)
        np += c.l.pshape[p].rows * c.l.pshape[p].cols;
    c.params = calloc(np + 1, sizeof(float));
    c.grads = calloc(np + 1, sizeof(float));
    fill(c.params, np, -1, 1);
    size_t off = 0;
    for (int p = 0; p < c.l.n_params; p++) {
        c.l.p[p] = c.params + off;
        c.l.g[p] = c.grads + off;
        off += c.l.pshape[p].rows * c.l.pshape[p].cols;
    }
    c.x = calloc((size_t)c.batch * in, sizeof(float));
    c.dx = calloc((size_t)c.batch * in, sizeof(float));
    c.y = calloc((size_t)c.batch * c.l.out, sizeof(float));
    c.r = calloc((size_t)c.batch * c.l.out, sizeof(float));
    fill(c.x, (size_t)c.batch * in, -1, 1);
    /* keep relu inputs away from the kink, where finite differences are meaningless */
    if (!strcmp(type, "relu"))
        for (int i = 0; i < c.batch * in; i++)
            c.x[i] += c.x[i] > 0 ? 0.1f : -0.1f;
    fill(c.r, (size_t)c.batch * c.l.out, -1, 1);
    objective(&c, be);
    c.l.ops->backward(&c.l, be, c.x, c.y, c.r, c.dx, c.batch);
    float *gcopy = malloc((np + 1) * sizeof(float)), *dxcopy = malloc((size_t)c.batch * in * sizeof(float));
    memcpy(gcopy, c.grads, np * sizeof(float));
    memcpy(dxcopy, c.dx, (size_t)c.batch * in * sizeof(float));
    double ex = check_wrt(&c, be, c.x, dxcopy, (size_t)c.batch * in);
    double ep = np ? check_wrt(&c, be, c.params, gcopy, np) : 0;
    EXPECT(ex < 1e-2, "%s: dx relative error %.3g", type, ex);
    EXPECT(ep < 1e-2, "%s: dparams relative error %.3g", type, ep);
    fprintf(stderr, "%-12s max relative error: dx %.2e, dparams %.2e\n", type, ex, ep);
    free(c.params);
    free(c.grads);
    free(c.x);
    free(c.dx);
    free(c.y);
    free(c.r);
    free(gcopy);
    free(dxcopy);
}

static void test_softmax_xent(backend_t *be) {
    enum { B = 4, C = 6 };
    float x[B * C], dx[B * C], loss[B];
    int32_t labels[B] = {0, 5, 2, 2}, pred[B];
    fill(x, B * C, -3, 3);
    layer_t l = {.ops = &layer_softmax_xent_ops};
    layer_cfg_t cfg = {.out = 0};
    char err[64];
    l.ops->init(&l, &cfg, C, err, sizeof err);
    l.ops->loss(&l, be, x, labels, B, loss, pred, dx);
    double worst = 0;
    const float h = 1e-2f;
    for (int i = 0; i < B * C; i++) {
        float keep = x[i];
        double up = 0, down = 0;
        x[i] = keep + h;
        l.ops->loss(&l, be, x, labels, B, loss, pred, NULL);
        for (int r = 0; r < B; r++)
            up += loss[r] / B;
        x[i] = keep - h;
        l.ops->loss(&l, be, x, labels, B, loss, pred, NULL);
        for (int r = 0; r < B; r++)
            down += loss[r] / B;
        x[i] = keep;
        double e = rel_err(dx[i], (up - down) / (2.0 * h));
        if (e > worst) worst = e;
    }
    EXPECT(worst < 1e-2, "softmax_xent: dx relative error %.3g", worst);
    fprintf(stderr, "%-12s max relative error: dx %.2e\n", "softmax_xent", worst);
    /* A hand-checked value: equal logits give loss log(C) and predict class 0. */
    float flat[C] = {0};
    int32_t lab = 3;
    l.ops->loss(&l, be, flat, &lab, 1, loss, pred, NULL);
    EXPECT_NEAR(loss[0], log(C), 1e-6);
    EXPECT(pred[0] == 0, "argmax of equal logits is %d", pred[0]);
}

/* The whole model (linear-relu-linear-softmax_xent) through model_run against finite differences of
 * the mean loss with respect to every parameter. */
static void test_model(backend_t *be) {
    job_config_t cfg;
    config_defaults(&cfg);
    cfg.input_dim = 7;
    cfg.n_layers = 4;
    cfg.layers[0] = (layer_cfg_t){"fc1", "linear", 5};
    cfg.layers[1] = (layer_cfg_t){"act", "relu", 0};
    cfg.layers[2] = (layer_cfg_t){"fc2", "linear", 3};
    cfg.layers[3] = (layer_cfg_t){"loss", "softmax_xent", 0};
    model_t m;
    char err[256];
    EXPECT(model_init(&m, &cfg, be, 8, err, sizeof err) == 0, "model_init: %s", err);
    EXPECT(m.spec.n_tensors == 4 && m.spec.n_floats == 7 * 5 + 5 + 5 * 3 + 3,
           "model has %d tensors, %zu floats", m.spec.n_tensors, m.spec.n_floats);
    for (int t = 0; t < m.spec.n_tensors; t++)
        model_spec_init_rows(&m.spec, t, 0, m.spec.tensors[t].rows, 42, m.params + m.spec.tensors[t].offset);
    enum { B = 6 };
    float x[B * 7];
    int32_t y[B] = {0, 1, 2, 1, 0, 2};
    fill(x, B * 7, -2, 2);
    double loss = 0;
    long correct = 0;
    model_run(&m, x, y, B, 1, &loss, &correct);
    float *g = malloc(m.spec.n_floats * sizeof(float));
    memcpy(g, m.grads, m.spec.n_floats * sizeof(float));
    double worst = 0;
    const float h = 1e-3f; /* small: a step across a relu kink breaks the comparison */
    for (size_t i = 0; i < m.spec.n_floats; i++) {
        float keep = m.params[i];
        double up = 0, down = 0;
        m.params[i] = keep + h;
        model_run(&m, x, y, B, 0, &up, &correct);
        m.params[i] = keep - h;
        model_run(&m, x, y, B, 0, &down, &correct);
        m.params[i] = keep;
        double e = rel_err(g[i], (up - down) / B / (2.0 * h));
        if (e > 1e-2)
            fprintf(stderr, "param %zu analytic %.6g numeric %.6g\n", i, g[i], (up - down) / B / (2.0 * h));
        if (e > worst) worst = e;
    }
    EXPECT(worst < 2e-2, "model: dparams relative error %.3g", worst);
    fprintf(stderr, "%-12s max relative error: dparams %.2e\n", "model", worst);
    free(g);
    model_free(&m);
}

int main(void) {
    rng_seed(&rng, 7);
    backend_t *be = backend_cpu_create(1);
    test_layer("linear", 6, 4, be);
    test_layer("relu", 9, 0, be);
    test_softmax_xent(be);
    test_model(be);
    backend_free(be);
    EXPECT_DONE();
}
