#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "util.h"

static const layer_ops_t *const layer_types[] = {
    &layer_linear_ops, &layer_relu_ops, &layer_softmax_xent_ops, &layer_embedding_bag_ops,
    &layer_concat_ops, &layer_dot_ops,  &layer_sigmoid_bce_ops};

const layer_ops_t *layer_find(const char *type) {
    for (size_t i = 0; i < sizeof layer_types / sizeof layer_types[0]; i++)
        if (!strcmp(layer_types[i]->type, type)) return layer_types[i];
    return NULL;
}

int layer_scratch(layer_t *l, backend_t *be, int batch, int width) {
    if (l->scratch && l->scratch_rows >= batch) return 0;
    be->ops->free(be, l->scratch);
    be->ops->free(be, l->dscratch);
    size_t bytes = (size_t)batch * (size_t)width * sizeof(float);
    l->scratch = be->ops->alloc(be, bytes);
    l->dscratch = be->ops->alloc(be, bytes);
    l->scratch_rows = l->scratch && l->dscratch ? batch : 0;
    return l->scratch_rows ? 0 : -TS_ENOMEM;
}

/* Resolves layer i's inputs (names, or the previous layer by default) into indices and widths, and
 * checks that no output is read twice. 0 or -TS_EINVAL with a message. */
static int resolve_inputs(model_spec_t *s, const job_config_t *cfg, int i, int *readers, char *err,
                          size_t errlen) {
    const layer_cfg_t *lc = &cfg->layers[i];
    layer_t *l = &s->layers[i];
    int max_in = l->ops->max_in;
    if (max_in == 0) {
        if (lc->n_inputs) {
            snprintf(err, errlen, "[layer %s]: %s reads the data's categorical ids and takes no input",
                     lc->name, lc->type);
            return -TS_EINVAL;
        }
        return 0;
    }
    if (lc->n_inputs > max_in) {
        snprintf(err, errlen, "[layer %s]: %s takes %d input%s, not %d", lc->name, lc->type, max_in,
                 max_in == 1 ? "" : "s", lc->n_inputs);
        return -TS_EINVAL;
    }
    l->n_in = lc->n_inputs ? lc->n_inputs : 1;
    for (int k = 0; k < l->n_in; k++) {
        int src = i - 1; /* by default the previous layer, or the model's input for the first */
        if (lc->n_inputs) {
            const char *name = lc->inputs[k];
            src = -2;
            if (!strcmp(name, "input")) src = LAYER_INPUT;
            for (int j = 0; j < i && src == -2; j++)
                if (!strcmp(s->layers[j].name, name)) src = j;
            if (src == -2) {
                snprintf(err, errlen,
                         "[layer %s] input: no earlier layer is called '%s' ('input' is the model's "
                         "dense input)",
                         lc->name, name);
                return -TS_EINVAL;
            }
        }
        if (src >= 0 && s->layers[src].ops->is_loss) {
            snprintf(err, errlen, "[layer %s]: cannot read the loss layer %s", lc->name, s->layers[src].name);
            return -TS_EINVAL;
        }
        if (src >= 0 && readers[src] >= 0) {
            snprintf(err, errlen,
                     "[layer %s]: the output of %s is already read by %s; each output feeds one layer",
                     lc->name, s->layers[src].name, s->layers[readers[src]].name);
            return -TS_EINVAL;
        }
        if (src >= 0) readers[src] = i;
        l->input[k] = src;
        l->in_w[k] = src == LAYER_INPUT ? s->input_dim : s->layers[src].out;
        if (l->in_w[k] <= 0) {
            snprintf(err, errlen, "[layer %s]: its input %s has no features (the data has none?)", lc->name,
                     src == LAYER_INPUT ? "input" : s->layers[src].name);
            return -TS_EINVAL;
        }
        l->in += l->in_w[k];
    }
    return 0;
}

/* Adds the tables of embedding_bag layer i: one per categorical slot it reads. */
static void add_tables(model_spec_t *s, const job_config_t *cfg, int i) {
    const layer_cfg_t *lc = &cfg->layers[i];
    layer_t *l = &s->layers[i];
    for (int k = 0; k < l->n_slots; k++) {
        table_info_t *t = &s->tables[s->n_tables++];
        snprintf(t->name, sizeof t->name, "%s.slot%d", l->name, l->slot_begin + k);
        t->layer = i;
        t->slot = l->slot_begin + k;
        t->dim = l->dim;
        t->rows = lc->rows;
        t->bound = lc->init > 0 ? (float)lc->init : 0.05f;
        snprintf(t->optimizer, sizeof t->optimizer, "%s", lc->optimizer[0] ? lc->optimizer : cfg->opt_type);
        t->lr = lc->lr > 0 ? lc->lr : cfg->lr;
    }
}

int model_spec_init(model_spec_t *s, const job_config_t *cfg, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    int tabular = strcmp(cfg->data_format, "idx") != 0;
    s->input_dim = tabular ? cfg->dense_features : cfg->input_dim;
    s->n_layers = cfg->n_layers;
    s->layers = XCALLOC((size_t)cfg->n_layers, sizeof *s->layers);
    s->tensors = XCALLOC((size_t)cfg->n_layers * LAYER_MAX_PARAMS, sizeof *s->tensors);
    int n_tables = 0;
    for (int i = 0; i < cfg->n_layers; i++)
        if (!strcmp(cfg->layers[i].type, "embedding_bag"))
            n_tables += cfg->layers[i].slot_end - cfg->layers[i].slot_begin;
    s->tables = XCALLOC((size_t)(n_tables ? n_tables : 1), sizeof *s->tables);
    int *readers = XMALLOC((size_t)cfg->n_layers * sizeof *readers);
    for (int i = 0; i < cfg->n_layers; i++)
        readers[i] = -1;
    s->is_chain = 1;
    char msg[512] = "";
    for (int i = 0; i < cfg->n_layers; i++) {
        const layer_cfg_t *lc = &cfg->layers[i];
        layer_t *l = &s->layers[i];
        l->ops = layer_find(lc->type);
        snprintf(l->name, sizeof l->name, "%s", lc->name);
        if (!l->ops) {
            snprintf(
                err, errlen,
                "%s: [layer %s]: unknown type '%s' (linear, relu, embedding_bag, concat, dot, softmax_xent, "
                "sigmoid_bce)",
                cfg->path, lc->name, lc->type);
            goto fail;
        }
        if (!strcmp(lc->name, "input")) {
            snprintf(err, errlen,
                     "%s: [layer input]: 'input' names the model's dense input; call it otherwise",
                     cfg->path);
            goto fail;
        }
        if (l->ops->is_loss != (i == cfg->n_layers - 1)) {
            snprintf(err, errlen, "%s: [layer %s]: %s", cfg->path, lc->name,
                     l->ops->is_loss ? "a loss must be the last layer"
                                     : "the last layer must be a loss (softmax_xent or sigmoid_bce)");
            goto fail;
        }
        if (resolve_inputs(s, cfg, i, readers, msg, sizeof msg)) {
            snprintf(err, errlen, "%s: %s", cfg->path, msg);
            goto fail;
        }
        if (l->ops->max_in == 0) {
            l->n_slots = lc->slot_end - lc->slot_begin;
            l->slot_begin = lc->slot_begin;
            l->dim = lc->dim;
            l->mean = !strcmp(lc->mode, "mean");
            if (lc->slot_end > s->n_slots) s->n_slots = lc->slot_end;
            add_tables(s, cfg, i);
        }
        if (l->ops->max_in == 0 || l->n_in != 1 || l->input[0] != i - 1) s->is_chain = 0;
        if (l->ops->init(l, lc, l->in, msg, sizeof msg)) {
            snprintf(err, errlen, "%s: [layer %s]: %s", cfg->path, lc->name, msg);
            goto fail;
        }
        for (int p = 0; p < l->n_params; p++) {
            tensor_info_t *t = &s->tensors[s->n_tensors];
            snprintf(t->name, sizeof t->name, "%s.%s", l->name, l->pshape[p].suffix);
            t->rows = l->pshape[p].rows;
            t->cols = l->pshape[p].cols;
            t->bound = l->pshape[p].bound;
            t->remote = lc->model_parallel && p == 0; /* the weight; its bias stays data-parallel */
            if (t->remote) {
                s->remote_floats += (size_t)(t->rows * t->cols);
            } else {
                t->offset = s->n_floats;
                s->n_floats += (size_t)(t->rows * t->cols);
            }
            l->tensor[p] = s->n_tensors++;
        }
        if (lc->model_parallel) {
            l->remote_weight = 1;
            s->n_remote++;
        }
    }
    for (int i = 0; i < cfg->n_layers - 1; i++)
        if (readers[i] < 0) {
            snprintf(err, errlen, "%s: [layer %s]: its output is never read (give a later layer input = %s)",
                     cfg->path, s->layers[i].name, s->layers[i].name);
            goto fail;
        }
    s->classes = s->layers[cfg->n_layers - 1].in;
    free(readers);
    return 0;
fail:
    free(readers);
    model_spec_free(s);
    return -TS_EINVAL;
}

void model_spec_free(model_spec_t *s) {
    if (!s) return;
    free(s->layers);
    free(s->tensors);
    free(s->tables);
    memset(s, 0, sizeof *s);
}

void model_spec_init_rows(const model_spec_t *s, int t, uint64_t row_begin, uint64_t row_end, uint64_t seed,
                          float *out) {
    const tensor_info_t *ti = &s->tensors[t];
    init_uniform(out, (size_t)((row_end - row_begin) * ti->cols), seed, (uint32_t)t, row_begin * ti->cols,
                 ti->bound);
}

/* Points every layer's parameters and gradients into the flat buffers. */
static void bind_flat(model_t *m) {
    for (int i = 0; i < m->spec.n_layers; i++) {
        layer_t *l = &m->spec.layers[i];
        for (int p = 0; p < l->n_params; p++) {
            const tensor_info_t *ti = &m->spec.tensors[l->tensor[p]];
            l->p[p] = ti->remote ? NULL : m->params + ti->offset; /* a remote weight is not here */
            l->g[p] = ti->remote ? NULL : m->grads + ti->offset;
        }
    }
}

/* dst = src, n floats of backend memory: on a device through the host (once, at setup). */
static void copy_flat(backend_t *be, float *dst, const float *src, size_t n) {
    if (be->host_memory) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    float *tmp = XMALLOC((n ? n : 1) * sizeof(float));
    be->ops->to_host(be, tmp, src, n * sizeof(float));
    be->ops->to_device(be, dst, tmp, n * sizeof(float));
    free(tmp);
}

void model_use_flat(model_t *m, float *params, float *grads) {
    const backend_ops_t *o = m->be->ops;
    copy_flat(m->be, params, m->params, m->spec.n_floats);
    copy_flat(m->be, grads, m->grads, m->spec.n_floats);
    o->free(m->be, m->params);
    o->free(m->be, m->grads);
    m->params = params;
    m->grads = grads;
    m->flat_borrowed = 1;
    bind_flat(m);
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
    m->out = XCALLOC((size_t)n, sizeof *m->out);
    m->dout = XCALLOC((size_t)n, sizeof *m->dout);
    m->x =
        o->alloc(be, (size_t)max_batch * (size_t)(m->spec.input_dim ? m->spec.input_dim : 1) * sizeof(float));
    int ok = m->params && m->grads && m->x;
    for (int i = 0; i < n - 1; i++) {
        size_t bytes = (size_t)max_batch * (size_t)m->spec.layers[i].out * sizeof(float);
        m->out[i] = o->alloc(be, bytes);
        m->dout[i] = o->alloc(be, bytes);
        ok &= m->out[i] != NULL && m->dout[i] != NULL;
    }
    m->labels_dev = o->alloc(be, (size_t)max_batch * sizeof(int32_t));
    m->pred_dev = o->alloc(be, (size_t)max_batch * sizeof(int32_t));
    m->loss_dev = o->alloc(be, (size_t)max_batch * sizeof(float));
    m->loss_host = XCALLOC((size_t)max_batch, sizeof(float));
    m->pred_host = XCALLOC((size_t)max_batch, sizeof(int32_t));
    ok &= m->labels_dev && m->pred_dev && m->loss_dev;
    if (!ok) {
        snprintf(err, errlen, "backend %s: out of memory for %zu parameters", o->name, m->spec.n_floats);
        model_free(m);
        return -TS_ENOMEM;
    }
    int src = m->spec.layers[n - 1].input[0];
    m->logits = src == LAYER_INPUT ? m->x : m->out[src];
    m->slots = XCALLOC((size_t)(m->spec.n_tables ? m->spec.n_tables : 1), sizeof *m->slots);
    for (int t = 0; t < m->spec.n_tables; t++)
        m->slots[t].table = t;
    bind_flat(m);
    for (int i = 0, t = 0; i < n; i++) {
        layer_t *l = &m->spec.layers[i];
        if (l->n_slots) {
            l->slots = m->slots + t;
            t += l->n_slots;
        }
    }
    return 0;
}

void model_free(model_t *m) {
    if (!m || !m->be) return;
    const backend_ops_t *o = m->be->ops;
    for (int i = 0; i < m->spec.n_layers; i++) {
        o->free(m->be, m->spec.layers[i].scratch);
        o->free(m->be, m->spec.layers[i].dscratch);
        if (m->out) o->free(m->be, m->out[i]);
        if (m->dout) o->free(m->be, m->dout[i]);
    }
    free(m->out);
    free(m->dout);
    free(m->slots);
    o->free(m->be, m->x);
    if (!m->flat_borrowed) {
        o->free(m->be, m->params);
        o->free(m->be, m->grads);
    }
    o->free(m->be, m->labels_dev);
    o->free(m->be, m->pred_dev);
    o->free(m->be, m->loss_dev);
    free(m->loss_host);
    free(m->pred_host);
    model_spec_free(&m->spec);
    memset(m, 0, sizeof *m);
}

/* The forward pass of every layer before the loss, from m->x. */
static void run_forward(model_t *m, int batch) {
    layer_t *L = m->spec.layers;
    for (int i = 0; i < m->spec.n_layers - 1; i++) {
        const float *x[LAYER_MAX_INPUTS];
        for (int k = 0; k < L[i].n_in; k++)
            x[k] = L[i].input[k] == LAYER_INPUT ? m->x : m->out[L[i].input[k]];
        L[i].ops->forward(&L[i], m->be, x, m->out[i], batch);
    }
}

void model_run(model_t *m, const float *x_host, const int32_t *y_host, int batch, int train, double *loss_sum,
               long *correct) {
    backend_t *be = m->be;
    const backend_ops_t *o = be->ops;
    int n = m->spec.n_layers;
    layer_t *L = m->spec.layers;
    if (m->spec.input_dim)
        o->to_device(be, m->x, x_host, (size_t)batch * (size_t)m->spec.input_dim * sizeof(float));
    o->to_device(be, m->labels_dev, y_host, (size_t)batch * sizeof(int32_t));
    run_forward(m, batch);
    int src = L[n - 1].input[0];
    L[n - 1].ops->loss(&L[n - 1], be, m->logits, m->labels_dev, batch, m->loss_dev, m->pred_dev,
                       train && src != LAYER_INPUT ? m->dout[src] : NULL);
    int first_final = m->spec.n_tensors;
    if (train)
        for (int i = n - 2; i >= 0; i--) {
            const float *x[LAYER_MAX_INPUTS];
            float *dx[LAYER_MAX_INPUTS];
            for (int k = 0; k < L[i].n_in; k++) {
                int j = L[i].input[k];
                x[k] = j == LAYER_INPUT ? m->x : m->out[j];
                dx[k] = j == LAYER_INPUT ? NULL : m->dout[j];
            }
            L[i].ops->backward(&L[i], be, x, m->out[i], m->dout[i], dx, batch);
            for (int p = 0; p < L[i].n_params; p++)
                if (L[i].tensor[p] < first_final) first_final = L[i].tensor[p];
            if (m->grads_ready && L[i].n_params) m->grads_ready(m->grads_ready_ctx, first_final);
        }
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
    if (m->spec.input_dim)
        be->ops->to_device(be, m->x, x_host, (size_t)batch * (size_t)m->spec.input_dim * sizeof(float));
    run_forward(m, batch);
    be->ops->to_host(be, logits_host, m->logits, (size_t)batch * (size_t)m->spec.classes * sizeof(float));
    be->ops->sync(be);
}

int model_layer_out(const model_spec_t *s, int i) {
    return s->layers[i].ops->is_loss ? s->layers[i].in : s->layers[i].out;
}
