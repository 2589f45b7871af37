#include "overlap.h"

#include <stdio.h>
#include <string.h>

/* The first float of tensors >= t in the flat buffer (remote tensors are not in it). */
static size_t offset_from(const model_spec_t *s, int t) {
    for (; t < s->n_tensors; t++)
        if (!s->tensors[t].remote) return s->tensors[t].offset;
    return s->n_floats;
}

/* Every shard maps the worker's device region (CUDA IPC): none needs the gradients copied to the host. */
static int all_on_device(const overlap_t *o) {
    return o->pc->n_local_dev == o->pc->n_shards;
}

static void send_part(overlap_t *o, int from) {
    if (!o->rc)
        o->rc =
            ps_client_push_part(o->pc, o->clock, o->grads_host, o->params_host, from, o->err, sizeof o->err);
}

/* Sends the buckets whose copies have landed, oldest first; with `wait`, all of them. */
static void send_copied(overlap_t *o, int wait) {
    backend_t *be = o->m->be;
    while (o->count) {
        uint64_t t = o->ticket[o->head];
        if (wait)
            be->ops->copy_wait(be, t);
        else if (!be->ops->copy_done(be, t))
            return;
        send_part(o, o->copying[o->head]);
        o->head = (o->head + 1) % OVERLAP_MAX_BUCKETS;
        o->count--;
    }
}

/* Whether tensors [first, handed), final and not handed off yet, make a bucket: at least the bucket size,
 * and not the model's first floats, which go with the push itself. */
static int bucket_full(const overlap_t *o, int first, int handed) {
    const model_spec_t *s = &o->m->spec;
    size_t lo = offset_from(s, first), hi = offset_from(s, handed);
    return first < handed && lo > 0 && (hi - lo) * sizeof(float) >= o->bucket_bytes;
}

/* The model's hook: tensors [first, n_tensors) are final; hands off a full bucket. */
static void grads_ready(void *ctx, int first) {
    overlap_t *o = ctx;
    const model_spec_t *s = &o->m->spec;
    if (!bucket_full(o, first, o->handed)) return;
    size_t lo = offset_from(s, first), hi = offset_from(s, o->handed);
    if (o->async) {
        backend_t *be = o->m->be;
        if (o->count == OVERLAP_MAX_BUCKETS) { /* the oldest goes first */
            be->ops->copy_wait(be, o->ticket[o->head]);
            send_copied(o, 0);
        }
        int at = (o->head + o->count++) % OVERLAP_MAX_BUCKETS;
        o->copying[at] = first;
        if (all_on_device(o)) {
            /* Every shard reads the device's gradients itself (CUDA IPC): no bytes, only the mark that
             * the bucket's kernels, and those reading its parameters, are done before its part leaves. */
            o->ticket[at] = be->ops->to_host_async(be, o->grads_host + lo, o->m->grads + lo, 0);
        } else if (o->dev16) { /* rounded where they are: half the bytes cross */
            be->ops->to_bf16(be, o->dev16 + lo, o->m->grads + lo, hi - lo);
            o->ticket[at] =
                be->ops->to_host_async(be, o->stage16 + lo, o->dev16 + lo, (hi - lo) * sizeof(uint16_t));
        } else {
            o->ticket[at] =
                be->ops->to_host_async(be, o->grads_host + lo, o->m->grads + lo, (hi - lo) * sizeof(float));
        }
        send_copied(o, 0);
    } else {
        send_part(o, first);
    }
    o->handed = first;
}

/* The PS client's hook: shard k's slices of tensors [t_lo, t_hi) are in params_host; queue them to the
 * device. */
static void params_taken(void *ctx, int k, int t_lo, int t_hi) {
    overlap_t *o = ctx;
    const model_spec_t *s = &o->m->spec;
    backend_t *be = o->m->be;
    if (o->pc->local_dev && o->pc->local_dev[k]) return; /* the shard wrote the device's copy itself */
    for (int t = t_lo; t < t_hi; t++) {
        row_range_t r = shard_map_range(o->pc->map, t, k);
        if (r.row_end == r.row_begin || s->tensors[t].remote) continue;
        size_t at = s->tensors[t].offset + (size_t)(r.row_begin * s->tensors[t].cols);
        size_t n = (size_t)((r.row_end - r.row_begin) * s->tensors[t].cols);
        if (o->pc->taken_bf16) { /* half the bytes cross, widened where they land */
            o->params_ticket =
                be->ops->to_device_async(be, o->pdev16 + at, o->pstage16 + at, n * sizeof(uint16_t));
            be->ops->from_bf16(be, o->m->params + at, o->pdev16 + at, n);
        } else {
            o->params_ticket =
                be->ops->to_device_async(be, o->m->params + at, o->params_host + at, n * sizeof(float));
        }
    }
}

/* The bfloat16 gradient buffers, handed back to the PS client's own rounding. */
static void free_grads16(overlap_t *o) {
    backend_t *be = o->m->be;
    if (o->pc->stage == o->stage16 && o->stage16) {
        o->pc->stage = NULL;
        o->pc->stage_filled = 0;
    }
    if (o->dev16) be->ops->free(be, o->dev16);
    if (o->stage16) backend_host_free(be, o->stage16);
    o->dev16 = NULL;
    o->stage16 = NULL;
}

void overlap_init(overlap_t *o, model_t *m, ps_client_t *pc, float *grads_host, float *params_host,
                  double bucket_mb, int node_reduce) {
    memset(o, 0, sizeof *o);
    o->m = m;
    o->pc = pc;
    o->grads_host = grads_host;
    o->params_host = params_host;
    o->bucket_bytes = bucket_mb > 0 && !node_reduce ? (size_t)(bucket_mb * 1024 * 1024) : 0;
    o->handed = m->spec.n_tensors;
    const backend_ops_t *ops = m->be->ops;
    int staged = grads_host != m->grads;
    o->async = staged && ops->to_host_async && ops->to_device_async && ops->copy_wait && ops->copy_done;
    if (staged && !o->async) o->bucket_bytes = 0; /* a part must not leave before its bucket is copied */
    if (o->bucket_bytes) {
        m->grads_ready = grads_ready;
        m->grads_ready_ctx = o;
    }
    if (o->async && params_host != m->params && !node_reduce) {
        pc->params_taken = params_taken;
        pc->params_taken_ctx = o;
    }
    if (pc->params_taken == params_taken && pc->param_bf16 && ops->from_bf16) {
        size_t n = (m->spec.n_floats ? m->spec.n_floats : 1) * sizeof(uint16_t);
        o->pdev16 = ops->alloc(m->be, n);
        o->pstage16 = o->pdev16 ? backend_host_alloc(m->be, n) : NULL;
        if (o->pstage16) {
            pc->params16 = o->pstage16;
        } else if (o->pdev16) { /* no room: the PS client widens on the host */
            ops->free(m->be, o->pdev16);
            o->pdev16 = NULL;
        }
    }
    if (staged && pc->grad_bf16 && !node_reduce && ops->to_bf16) {
        size_t n = (m->spec.n_floats ? m->spec.n_floats : 1) * sizeof(uint16_t);
        o->dev16 = ops->alloc(m->be, n);
        o->stage16 = o->dev16 ? backend_host_alloc(m->be, n) : NULL;
        if (o->stage16) {
            pc->stage = o->stage16;
            pc->stage_filled = 1;
        } else { /* no room on the device: the PS client rounds on the host */
            free_grads16(o);
        }
    }
}

void overlap_free(overlap_t *o) {
    backend_t *be = o->m->be;
    free_grads16(o);
    if (o->pc->params16 == o->pstage16) o->pc->params16 = NULL;
    if (o->pdev16) be->ops->free(be, o->pdev16);
    if (o->pstage16) backend_host_free(be, o->pstage16);
    o->pdev16 = NULL;
    o->pstage16 = NULL;
}

void overlap_begin(overlap_t *o, int64_t clock) {
    o->clock = clock;
    o->handed = o->m->spec.n_tensors;
    o->head = o->count = 0;
}

int overlap_finish(overlap_t *o, char *err, size_t errlen) {
    model_t *m = o->m;
    send_copied(o, 1);
    if (o->grads_host != m->grads && all_on_device(o)) {
        m->be->ops->sync(m->be); /* every shard reads the device's gradients itself, once they are done */
    } else if (o->grads_host != m->grads) { /* the rest: what the push itself carries */
        size_t n = offset_from(&m->spec, o->handed);
        if (o->dev16) {
            m->be->ops->to_bf16(m->be, o->dev16, m->grads, n);
            m->be->ops->to_host(m->be, o->stage16, o->dev16, n * sizeof(uint16_t));
        } else {
            m->be->ops->to_host(m->be, o->grads_host, m->grads, n * sizeof(float));
        }
    }
    /* The push's replies overwrite params_host: the last step's copies from it must have landed. */
    if (o->params_ticket) m->be->ops->copy_wait(m->be, o->params_ticket);
    if (o->rc) snprintf(err, errlen, "%s", o->err);
    return o->rc;
}

int overlap_params_on_device(const overlap_t *o) {
    return o->pc->params_taken == params_taken;
}

int overlap_parts_per_step(const overlap_t *o) {
    if (!o->bucket_bytes) return 0;
    const model_spec_t *s = &o->m->spec;
    int parts = 0, handed = s->n_tensors, first = s->n_tensors;
    for (int i = s->n_layers - 1; i >= 0; i--) {
        const layer_t *l = &s->layers[i];
        for (int p = 0; p < l->n_params; p++)
            if (l->tensor[p] < first) first = l->tensor[p];
        if (l->n_params && bucket_full(o, first, handed)) {
            parts++;
            handed = first;
        }
    }
    return parts;
}
