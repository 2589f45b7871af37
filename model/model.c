#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "util.h"

static const layer_ops_t *const layer_types[] = {&layer_linear_ops, &layer_relu_ops, &layer_softmax_xent_ops};

const layer_ops_t *layer_find(const char *type) {
    for (size_t i = 0; i < sizeof layer_types / sizeof layer_types[0]; i++)
        if (!strcmp(layer_types[i]->type, type)) return layer_types[i];
    return NULL;
}

int model_spec_init(model_spec_t *s, const job_config_t *cfg, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    s->input_dim = cfg->input_dim;
    s->n_layers = cfg->n_layers;
    s->layers = XCALLOC((size_t)cfg->n_layers, sizeof *s->layers);
    s->tensors = XCALLOC((size_t)cfg->n_layers * LAYER_MAX_PARAMS, sizeof *s->tensors);
    int width = cfg->input_dim;
    for (int i = 0; i < cfg->n_layers; i++) {
        const layer_cfg_t *lc = &cfg->layers[i];
        layer_t *l = &s->layers[i];
        l->ops = layer_find(lc->type);
        snprintf(l->name, sizeof l->name, "%s", lc->name);
        if (!l->ops) {
            snprintf(err, errlen, "%s: [layer %s]: unknown type '%s' (linear, relu, softmax_xent)", cfg->path,
                     lc->name, lc->type);
            goto fail;
        }
        if (l->ops->is_loss != (i == cfg->n_layers - 1)) {
            snprintf(err, errlen, "%s: [layer %s]: %s", cfg->path, lc->name,
                     l->ops->is_loss ? "a loss must be the last layer"
                                     : "the last layer must be a loss (softmax_xent)");
            goto fail;
        }
        char msg[256] = "";
        if (l->ops->init(l, lc, width, msg, sizeof msg)) {
            snprintf(err, errlen, "%s: [layer %s]: %s", cfg->path, lc->name, msg);
            goto fail;
        }
        for (int p = 0; p < l->n_params; p++) {
            tensor_info_t *t = &s->tensors[s->n_tensors];
            snprintf(t->name, sizeof t->name, "%s.%s", l->name, l->pshape[p].suffix);
            t->rows = l->pshape[p].rows;
            t->cols = l->pshape[p].cols;
            t->bound = l->pshape[p].bound;
            t->offset = s->n_floats;
            s->n_floats += (size_t)(t->rows * t->cols);
            l->tensor[p] = s->n_tensors++;
        }
        width = l->out;
    }
    s->classes = width;
    return 0;
fail:
    model_spec_free(s);
    return -TS_EINVAL;
}

void model_spec_free(model_spec_t *s) {
    if (!s) return;
    free(s->layers);
    free(s->tensors);
    memset(s, 0, sizeof *s);
}

void model_spec_init_rows(const model_spec_t *s, int t, uint64_t row_begin, uint64_t row_end, uint64_t seed,
                          float *out) {
    const tensor_info_t *ti = &s->tensors[t];
    init_uniform(out, (size_t)((row_end - row_begin) * ti->cols), seed, (uint32_t)t, row_begin * ti->cols,
                 ti->bound);
}

int model_init(model_t *m, const job_config_t *cfg, backend_t *be, int max_batch, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    int rc = model_spec_init(&m->spec, cfg, err, errlen);
    if (rc) return rc;
    m->be = be;
    m->max_batch = max_batch;
    const backend_ops_t *o = be->ops;
    size_t pbytes = m->spec.n_floats * sizeof(float);
    m->params = o->alloc(be, pbytes);
    m->grads = o->alloc(be, pbytes);
    int n = m->spec.n_layers;
    m->act = XCALLOC((size_t)n, sizeof *m->act);
    m->dact = XCALLOC((size_t)n, sizeof *m->dact);
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)max_batch * (size_t)m->spec.layers[i].in * sizeof(float);
        m->act[i] = o->alloc(be, bytes);
        if (i > 0) m->dact[i] = o->alloc(be, bytes);
    }
    m->labels_dev = o->alloc(be, (size_t)max_batch * sizeof(int32_t));
    m->pred_dev = o->alloc(be, (size_t)max_batch * sizeof(int32_t));
    m->loss_dev = o->alloc(be, (size_t)max_batch * sizeof(float));
    m->loss_host = XCALLOC((size_t)max_batch, sizeof(float));
    m->pred_host = XCALLOC((size_t)max_batch, sizeof(int32_t));
    int ok = m->params && m->grads && m->labels_dev && m->pred_dev && m->loss_dev;
    for (int i = 0; i < n; i++)
        ok &= m->act[i] != NULL && (i == 0 || m->dact[i] != NULL);
    if (!ok) {
        snprintf(err, errlen, "backend %s: out of memory for %zu parameters", o->name, m->spec.n_floats);
        model_free(m);
        return -TS_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        layer_t *l = &m->spec.layers[i];
        for (int p = 0; p < l->n_params; p++) {
            l->p[p] = m->params + m->spec.tensors[l->tensor[p]].offset;
            l->g[p] = m->grads + m->spec.tensors[l->tensor[p]].offset;
        }
    }
    return 0;
}

void model_free(model_t *m) {
    if (!m || !m->be) return;
    const backend_ops_t *o = m->be->ops;
    for (int i = 0; i < m->spec.n_layers; i++) {
        if (m->act) o->free(m->be, m->act[i]);
        if (m->dact) o->free(m->be, m->dact[i]);
    }
    free(m->act);
    free(m->dact);
    o->free(m->be, m->params);
    o->free(m->be, m->grads);
    o->free(m->be, m->labels_dev);
    o->free(m->be, m->pred_dev);
    o->free(m->be, m->loss_dev);
    free(m->loss_host);
    free(m->pred_host);
    model_spec_free(&m->spec);
    memset(m, 0, sizeof *m);
}

void model_run(model_t *m, const float *x_host, const int32_t *y_host, int batch, int train, double *loss_sum,
               long *correct) {
    backend_t *be = m->be;
    const backend_ops_t *o = be->ops;
    int n = m->spec.n_layers;
    layer_t *L = m->spec.layers;
    o->to_device(be, m->act[0], x_host, (size_t)batch * (size_t)m->spec.input_dim * sizeof(float));
    o->to_device(be, m->labels_dev, y_host, (size_t)batch * sizeof(int32_t));
    for (int i = 0; i < n - 1; i++)
        L[i].ops->forward(&L[i], be, m->act[i], m->act[i + 1], batch);
    L[n - 1].ops->loss(&L[n - 1], be, m->act[n - 1], m->labels_dev, batch, m->loss_dev, m->pred_dev,
                       train ? m->dact[n - 1] : NULL);
    if (train)
        for (int i = n - 2; i >= 0; i--)
            L[i].ops->backward(&L[i], be, m->act[i], m->act[i + 1], m->dact[i + 1], i > 0 ? m->dact[i] : NULL,
                               batch);
    o->to_host(be, m->loss_host, m->loss_dev, (size_t)batch * sizeof(float));
    o->to_host(be, m->pred_host, m->pred_dev, (size_t)batch * sizeof(int32_t));
    o->sync(be);
    for (int r = 0; r < batch; r++) {
        *loss_sum += m->loss_host[r];
        *correct += m->pred_host[r] == y_host[r];
    }
}

void model_forward(model_t *m, const float *x_host, int batch, float *logits_host) {
    backend_t *be = m->be;
    int n = m->spec.n_layers;
    layer_t *L = m->spec.layers;
    be->ops->to_device(be, m->act[0], x_host, (size_t)batch * (size_t)m->spec.input_dim * sizeof(float));
    for (int i = 0; i < n - 1; i++)
        L[i].ops->forward(&L[i], be, m->act[i], m->act[i + 1], batch);
    be->ops->to_host(be, logits_host, m->act[n - 1], (size_t)batch * (size_t)L[n - 1].in * sizeof(float));
    be->ops->sync(be);
}

int model_layer_out(const model_spec_t *s, int i) {
    return i + 1 < s->n_layers ? s->layers[i + 1].in : s->layers[i].out;
}
