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
    const float *x[1] = {c->x};
    c->l.ops->forward(&c->l, be, x, c->y, c->batch);
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
    c.l.in = c.l.in_w[0] = in;
    c.l.n_in = 1;
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
    const float *xs[1] = {c.x};
    float *dxs[1] = {c.dx};
    c.l.ops->backward(&c.l, be, xs, c.y, c.r, dxs, c.batch);
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
    layer_t l = {.ops = &layer_softmax_xent_ops, .in = C};
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
    cfg.layers[0] = (layer_cfg_t){.name = "fc1", .type = "linear", .out = 5};
    cfg.layers[1] = (layer_cfg_t){.name = "act", .type = "relu"};
    cfg.layers[2] = (layer_cfg_t){.name = "fc2", .type = "linear", .out = 3};
    cfg.layers[3] = (layer_cfg_t){.name = "loss", .type = "softmax_xent"};
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

/* A click-through model with embedding bags, through model_run: the gradients of the mean loss with
 * respect to every dense parameter and every pulled embedding row, against finite differences. With
 * `use_dot` the bottom MLP and the bags meet in a dot interaction (sum bags); otherwise in a concat
 * (mean bags, weighted ids). */
static void test_ctr_model(backend_t *be, int use_dot) {
    job_config_t cfg;
    config_defaults(&cfg);
    snprintf(cfg.data_format, sizeof cfg.data_format, "criteo");
    cfg.dense_features = 3;
    cfg.sparse_features = 2;
    cfg.n_layers = 6;
    cfg.layers[0] =
        (layer_cfg_t){.name = "bot", .type = "linear", .out = 4, .n_inputs = 1, .inputs = {"input"}};
    cfg.layers[1] = (layer_cfg_t){.name = "act", .type = "relu"};
    cfg.layers[2] =
        (layer_cfg_t){.name = "emb", .type = "embedding_bag", .slot_begin = 0, .slot_end = 2, .dim = 4};
    snprintf(cfg.layers[2].mode, sizeof cfg.layers[2].mode, "%s", use_dot ? "sum" : "mean");
    cfg.layers[3] = (layer_cfg_t){.name = "mix", .n_inputs = 2, .inputs = {"act", "emb"}};
    snprintf(cfg.layers[3].type, sizeof cfg.layers[3].type, "%s", use_dot ? "dot" : "concat");
    cfg.layers[4] = (layer_cfg_t){.name = "top", .type = "linear", .out = 1};
    cfg.layers[5] = (layer_cfg_t){.name = "loss", .type = "sigmoid_bce"};
    model_t m;
    char err[512];
    int rc = model_init(&m, &cfg, be, 8, err, sizeof err);
    EXPECT(rc == 0, "model_init: %s", err);
    if (rc) return;
    EXPECT(m.spec.n_tables == 2 && !m.spec.is_chain && m.spec.classes == 1, "tables %d chain %d classes %d",
           m.spec.n_tables, m.spec.is_chain, m.spec.classes);
    EXPECT(m.spec.layers[3].out == (use_dot ? 4 + 3 : 12), "mix width %d", m.spec.layers[3].out);
    fill(m.params, m.spec.n_floats, -0.8f, 0.8f);
    enum { B = 5, U = 3, DIM = 4 };
    /* bags: example b of slot t holds these indices into the slot's U unique rows (example 2 of slot 1 is
     * empty: a missing value) */
    static const int32_t off[2][B + 1] = {{0, 1, 2, 4, 5, 6}, {0, 2, 3, 3, 4, 6}};
    static const int32_t idx[2][6] = {{0, 1, 2, 0, 1, 2}, {1, 2, 0, 0, 2, 1}};
    float rows[2][U * DIM], grad[2][U * DIM], wts[6];
    fill(&rows[0][0], 2 * U * DIM, -0.8f, 0.8f);
    fill(wts, 6, 0.5f, 1.5f);
    for (int t = 0; t < 2; t++)
        m.slots[t] = (sparse_slot_t){t, U, rows[t], grad[t], off[t], idx[t], use_dot ? NULL : wts, NULL};
    float x[B * 3];
    int32_t y[B] = {1, 0, 0, 1, 1};
    fill(x, B * 3, 0, 2);
    double loss = 0;
    long correct = 0;
    model_run(&m, x, y, B, 1, &loss, &correct);
    float *g = malloc(m.spec.n_floats * sizeof(float)), grow[2][U * DIM];
    memcpy(g, m.grads, m.spec.n_floats * sizeof(float));
    memcpy(grow, grad, sizeof grow);
    double worst = 0, worst_rows = 0;
    const float h = 1e-3f;
    for (size_t i = 0; i < m.spec.n_floats + 2 * U * DIM; i++) {
        float *v = i < m.spec.n_floats ? &m.params[i] : &rows[0][0] + (i - m.spec.n_floats);
        double a = i < m.spec.n_floats ? g[i] : (&grow[0][0])[i - m.spec.n_floats];
        float keep = *v;
        double up = 0, down = 0;
        *v = keep + h;
        model_run(&m, x, y, B, 0, &up, &correct);
        *v = keep - h;
        model_run(&m, x, y, B, 0, &down, &correct);
        *v = keep;
        double e = rel_err(a, (up - down) / B / (2.0 * h));
        if (i < m.spec.n_floats && e > worst) worst = e;
        if (i >= m.spec.n_floats && e > worst_rows) worst_rows = e;
    }
    EXPECT(worst < 5e-2, "%s model: dparams relative error %.3g", use_dot ? "dot" : "concat", worst);
    EXPECT(worst_rows < 5e-2, "%s model: embedding rows relative error %.3g", use_dot ? "dot" : "concat",
           worst_rows);
    fprintf(stderr, "%-12s max relative error: dparams %.2e, rows %.2e\n",
            use_dot ? "dlrm(dot)" : "ctr(concat)", worst, worst_rows);
    free(g);
    model_free(&m);
}

/* Graph mistakes in a job are errors that name the layer. */
static void test_graph_errors(backend_t *be) {
    job_config_t cfg;
    config_defaults(&cfg);
    cfg.input_dim = 4;
    cfg.n_layers = 3;
    cfg.layers[0] = (layer_cfg_t){.name = "a", .type = "linear", .out = 3};
    cfg.layers[1] =
        (layer_cfg_t){.name = "b", .type = "linear", .out = 2, .n_inputs = 1, .inputs = {"input"}};
    cfg.layers[2] = (layer_cfg_t){.name = "loss", .type = "softmax_xent"};
    model_t m;
    char err[512] = "";
    EXPECT(model_init(&m, &cfg, be, 4, err, sizeof err) != 0 && strstr(err, "[layer a]") &&
               strstr(err, "never read"),
           "unread output: %s", err);
    cfg.layers[1].n_inputs = 1;
    snprintf(cfg.layers[1].inputs[0], sizeof cfg.layers[1].inputs[0], "nosuch");
    err[0] = '\0';
    EXPECT(model_init(&m, &cfg, be, 4, err, sizeof err) != 0 && strstr(err, "nosuch"), "unknown input: %s",
           err);
}

/* bag_rows_build: each row's entries, in bag order, with the weight times the bag's mean scale; summing
 * them row by row in that order (what the CUDA backend's backward pass does) gives the CPU backward
 * pass's bits exactly. Empty bags, repeated ids and rows no bag names included. */
static void test_bag_rows(backend_t *be) {
    enum { B = 50, ROWS = 9, DIM = 5 };
    int32_t off[B + 1], idx[B * 6];
    float wts[B * 6], dy[B * DIM], ref[ROWS * DIM], got[ROWS * DIM];
    for (int mean = 0; mean < 2; mean++)
        for (int weighted = 0; weighted < 2; weighted++) {
            off[0] = 0;
            for (int b = 0; b < B; b++) {
                int n = b % 7 == 0 ? 0 : (int)(rng_next(&rng) % 6) + 1;
                for (int j = off[b]; j < off[b] + n; j++) {
                    idx[j] = (int32_t)(rng_next(&rng) % (ROWS - 1)); /* the last row stays unnamed */
                    wts[j] = uniform(0.5f, 1.5f);
                }
                off[b + 1] = off[b] + n;
            }
            fill(dy, B * DIM, -1, 1);
            const float *w = weighted ? wts : NULL;
            int32_t r_off[ROWS + 1], r_bag[B * 6];
            float r_w[B * 6];
            bag_rows_build(off, idx, w, B, mean, ROWS, r_off, r_bag, r_w);
            EXPECT(r_off[0] == 0 && r_off[ROWS] == off[B], "by row: %d entries of %d", r_off[ROWS], off[B]);
            EXPECT(r_off[ROWS - 1] == r_off[ROWS], "the unnamed row has no entries");
            for (int r = 0; r < ROWS;
                 r++) /* row r's entries are exactly the bag entries naming it, in order */
                for (int b = 0, e = r_off[r]; b < B; b++)
                    for (int j = off[b]; j < off[b + 1]; j++)
                        if (idx[j] == r) {
                            EXPECT(e < r_off[r + 1] && r_bag[e] == b, "row %d entry %d: bag %d", r, e, b);
                            int n = off[b + 1] - off[b];
                            float want = (w ? w[j] : 1.0f) * (mean && n > 1 ? 1.0f / (float)n : 1.0f);
                            EXPECT(r_w[e] == want, "row %d entry %d: weight %g, expected %g", r, e, r_w[e],
                                   want);
                            e++;
                        }
            be->ops->embedding_bag_bwd(be, dy, DIM, DIM, off, idx, w, B, mean, ref, ROWS, NULL);
            for (int r = 0; r < ROWS; r++)
                for (int c = 0; c < DIM; c++) {
                    float acc = 0.0f;
                    for (int e = r_off[r]; e < r_off[r + 1]; e++)
                        acc += r_w[e] * dy[r_bag[e] * DIM + c];
                    got[r * DIM + c] = acc;
                }
            EXPECT(!memcmp(got, ref, sizeof ref),
                   "summing by row (mean=%d weighted=%d) is not the CPU's bits", mean, weighted);
        }
}

int main(void) {
    rng_seed(&rng, 7);
    backend_t *be = backend_cpu_create(1);
    test_layer("linear", 6, 4, be);
    test_layer("relu", 9, 0, be);
    test_softmax_xent(be);
    test_model(be);
    test_ctr_model(be, 1);
    test_ctr_model(be, 0);
    test_graph_errors(be);
    test_bag_rows(be);
    backend_free(be);
    EXPECT_DONE();
}
