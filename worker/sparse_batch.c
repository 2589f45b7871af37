#include "sparse_batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "shard_map.h"

void sparse_batch_init(sparse_batch_t *sb, const model_spec_t *spec, int n_shards, int max_batch) {
    memset(sb, 0, sizeof *sb);
    sb->n_tables = spec->n_tables;
    sb->n_shards = n_shards;
    sb->t = XCALLOC((size_t)(spec->n_tables ? spec->n_tables : 1), sizeof *sb->t);
    for (int i = 0; i < spec->n_tables; i++) {
        sb_table_t *t = &sb->t[i];
        t->slot = spec->tables[i].slot;
        t->dim = spec->tables[i].dim;
        t->shard_off = XCALLOC((size_t)n_shards + 1, sizeof *t->shard_off);
        t->off = XCALLOC((size_t)max_batch + 1, sizeof *t->off);
    }
}

static void free_staging(sparse_batch_t *sb) {
    backend_t *be = sb->be;
    if (!be) return;
    if (sb->stage_ticket) be->ops->copy_wait(be, sb->stage_ticket);
    backend_host_free(be, sb->h_stage);
    backend_host_free(be, sb->h_grads);
    be->ops->free(be, sb->d_stage);
    be->ops->free(be, sb->d_grads);
    sb->h_stage = sb->d_stage = sb->h_grads = sb->d_grads = NULL;
    sb->stage_cap = sb->grads_cap = 0;
}

void sparse_batch_free(sparse_batch_t *sb) {
    if (!sb || !sb->t) return;
    for (int i = 0; i < sb->n_tables; i++) {
        sb_table_t *t = &sb->t[i];
        free(t->ids);
        free(t->shard_off);
        free(t->rows);
        free(t->grads);
        free(t->off);
        free(t->idx);
        free(t->wts);
    }
    free_staging(sb);
    free(sb->t);
    id_map_free(&sb->map);
    free(sb->tmp);
    free(sb->order);
    memset(sb, 0, sizeof *sb);
}

/* Makes the dedup hash hold nnz keys and the per-entry scratch nnz entries. */
static void reserve_hash(sparse_batch_t *sb, size_t nnz) {
    id_map_reserve(&sb->map, nnz);
    if (sb->scratch_cap >= sb->map.cap) return;
    free(sb->tmp);
    free(sb->order);
    sb->scratch_cap = sb->map.cap;
    sb->tmp = XMALLOC(sb->scratch_cap * sizeof *sb->tmp);
    sb->order = XMALLOC(sb->scratch_cap * sizeof *sb->order);
}

static void reserve_table(sb_table_t *t, size_t nnz, int weighted) {
    if (nnz <= t->cap_nnz && (!weighted || t->wts)) return;
    size_t cap = nnz < 64 ? 64 : nnz;
    free(t->ids);
    free(t->rows);
    free(t->grads);
    free(t->idx);
    free(t->wts);
    t->ids = XMALLOC(cap * sizeof *t->ids);
    t->rows = XMALLOC(cap * (size_t)t->dim * sizeof(float));
    t->grads = XMALLOC(cap * (size_t)t->dim * sizeof(float));
    t->idx = XMALLOC(cap * sizeof *t->idx);
    t->wts = weighted ? XMALLOC(cap * sizeof *t->wts) : NULL;
    t->cap = t->cap_nnz = cap;
}

void sparse_batch_build(sparse_batch_t *sb, const ctr_dataset_t *d, const uint32_t *ex, int batch) {
    sb->batch = batch;
    for (int ti = 0; ti < sb->n_tables; ti++) {
        sb_table_t *t = &sb->t[ti];
        size_t nnz = 0;
        for (int b = 0; b < batch; b++) {
            size_t bag = (size_t)ex[b] * (size_t)d->n_slots + (size_t)t->slot;
            nnz += d->bag_off[bag + 1] - d->bag_off[bag];
        }
        reserve_hash(sb, nnz);
        reserve_table(t, nnz, d->wts != NULL);
        id_map_clear(&sb->map);
        /* First pass: unique ids in first-seen order, and each entry's first-seen index. */
        size_t j = 0;
        int n = 0;
        t->off[0] = 0;
        for (int b = 0; b < batch; b++) {
            size_t bag = (size_t)ex[b] * (size_t)d->n_slots + (size_t)t->slot;
            for (uint64_t k = d->bag_off[bag]; k < d->bag_off[bag + 1]; k++, j++) {
                uint64_t id = d->ids[k];
                int fresh;
                sb->tmp[j] = id_map_get_or_put(&sb->map, id, n, &fresh);
                if (fresh) t->ids[n++] = id; /* first-seen order for now */
                if (t->wts) t->wts[j] = d->wts[k];
            }
            t->off[b + 1] = (int32_t)j;
        }
        /* Second pass: group the unique ids by owning shard (stable), so each shard's are contiguous. */
        int S = sb->n_shards;
        memset(t->shard_off, 0, (size_t)(S + 1) * sizeof *t->shard_off);
        int32_t *owner = sb->map.val; /* reuse: the hash is done with */
        for (int u = 0; u < n; u++) {
            owner[u] = shard_map_sparse_owner((uint32_t)ti, t->ids[u], S);
            t->shard_off[owner[u] + 1]++;
        }
        for (int k = 0; k < S; k++)
            t->shard_off[k + 1] += t->shard_off[k];
        int fill[S];
        for (int k = 0; k < S; k++)
            fill[k] = t->shard_off[k];
        uint64_t *sorted = (uint64_t *)t->rows; /* scratch big enough: dim >= 2 floats per id, or n ids */
        uint64_t *tmp_ids = t->dim >= 2 ? sorted : XMALLOC((size_t)(n ? n : 1) * sizeof *tmp_ids);
        for (int u = 0; u < n; u++) {
            int pos = fill[owner[u]]++;
            sb->order[u] = pos;
            tmp_ids[pos] = t->ids[u];
        }
        memcpy(t->ids, tmp_ids, (size_t)n * sizeof *t->ids);
        if (tmp_ids != sorted) free(tmp_ids);
        for (size_t e = 0; e < j; e++)
            t->idx[e] = sb->order[sb->tmp[e]];
        t->n = n;
    }
}

/* Device buffers of table t for n unique rows, nnz bag entries and batch examples. */
/* Grows a host/device pair of buffers to hold `bytes` (pinned host memory when the backend has it). */
static void reserve_pair(backend_t *be, char **host, char **dev, size_t *cap, size_t bytes) {
    if (*dev && bytes <= *cap) return;
    backend_host_free(be, *host);
    be->ops->free(be, *dev);
    *cap = bytes + bytes / 2 + 4096;
    *host = backend_host_alloc(be, *cap);
    *dev = be->ops->alloc(be, *cap);
    if (!*dev) {
        fprintf(stderr, "sparse_batch: out of device memory for %zu bytes of table rows\n", *cap);
        abort(); /* the layer API has no error path; a batch's rows are small next to the model */
    }
}

#define SB_ALIGN 256 /* every segment starts aligned (the kernels read rows as float4) */

static size_t seg_end(size_t *at, size_t pos, size_t bytes) {
    *at = pos;
    return (pos + bytes + SB_ALIGN - 1) / SB_ALIGN * SB_ALIGN;
}

void sparse_batch_bind(sparse_batch_t *sb, model_t *m) {
    backend_t *be = m->be;
    if (be->host_memory) {
        for (int ti = 0; ti < sb->n_tables; ti++) {
            sb_table_t *t = &sb->t[ti];
            m->slots[ti] = (sparse_slot_t){ti, t->n, t->rows, t->grads, t->off, t->idx, t->wts, NULL};
        }
        return;
    }
    sb->be = be;
    size_t pos = 0, gpos = 0, b1 = (size_t)sb->batch + 1;
    for (int ti = 0; ti < sb->n_tables; ti++) { /* the layout */
        sb_table_t *t = &sb->t[ti];
        size_t n = (size_t)t->n, nnz = (size_t)t->off[sb->batch], row = (size_t)t->dim * sizeof(float);
        pos = seg_end(&t->at[SB_ROWS], pos, n * row);
        pos = seg_end(&t->at[SB_OFF], pos, b1 * sizeof(int32_t));
        pos = seg_end(&t->at[SB_IDX], pos, nnz * sizeof(int32_t));
        pos = seg_end(&t->at[SB_WTS], pos, t->wts ? nnz * sizeof(float) : 0);
        pos = seg_end(&t->at[SB_ROFF], pos, (n + 1) * sizeof(int32_t));
        pos = seg_end(&t->at[SB_RBAG], pos, nnz * sizeof(int32_t));
        pos = seg_end(&t->at[SB_RW], pos, nnz * sizeof(float));
        gpos = seg_end(&t->grads_at, gpos, n * row);
    }
    /* The last batch's copy read h_stage: it must have landed before h_stage is packed again. */
    if (sb->stage_ticket) be->ops->copy_wait(be, sb->stage_ticket);
    sb->stage_ticket = 0;
    reserve_pair(be, &sb->h_stage, &sb->d_stage, &sb->stage_cap, pos);
    reserve_pair(be, &sb->h_grads, &sb->d_grads, &sb->grads_cap, gpos);
    char *h = sb->h_stage, *d = sb->d_stage;
    for (int ti = 0; ti < sb->n_tables; ti++) { /* packing */
        sb_table_t *t = &sb->t[ti];
        size_t n = (size_t)t->n, nnz = (size_t)t->off[sb->batch], *at = t->at;
        memcpy(h + at[SB_ROWS], t->rows, n * (size_t)t->dim * sizeof(float));
        memcpy(h + at[SB_OFF], t->off, b1 * sizeof(int32_t));
        memcpy(h + at[SB_IDX], t->idx, nnz * sizeof(int32_t));
        if (t->wts) memcpy(h + at[SB_WTS], t->wts, nnz * sizeof(float));
        const layer_t *l = &m->spec.layers[m->spec.tables[ti].layer];
        bag_rows_build(t->off, t->idx, t->wts, sb->batch, l->mean, t->n, (int32_t *)(h + at[SB_ROFF]),
                       (int32_t *)(h + at[SB_RBAG]), (float *)(h + at[SB_RW]));
        t->by_row = (bag_rows_t){(const int32_t *)(d + at[SB_ROFF]), (const int32_t *)(d + at[SB_RBAG]),
                                 (const float *)(d + at[SB_RW])};
        m->slots[ti] = (sparse_slot_t){ti,
                                       t->n,
                                       (const float *)(d + at[SB_ROWS]),
                                       (float *)(sb->d_grads + t->grads_at),
                                       (const int32_t *)(d + at[SB_OFF]),
                                       (const int32_t *)(d + at[SB_IDX]),
                                       t->wts ? (const float *)(d + at[SB_WTS]) : NULL,
                                       &t->by_row};
    }
    /* One copy; the forward pass waits for it on the device. */
    if (be->ops->to_device_async)
        sb->stage_ticket = be->ops->to_device_async(be, d, h, pos);
    else
        be->ops->to_device(be, d, h, pos);
}

void sparse_batch_fetch_grads(sparse_batch_t *sb, model_t *m) {
    if (m->be->host_memory || !sb->n_tables) return;
    sb_table_t *last = &sb->t[sb->n_tables - 1];
    m->be->ops->to_host(m->be, sb->h_grads, sb->d_grads,
                        last->grads_at + (size_t)last->n * (size_t)last->dim * sizeof(float));
    for (int ti = 0; ti < sb->n_tables; ti++) {
        sb_table_t *t = &sb->t[ti];
        memcpy(t->grads, sb->h_grads + t->grads_at, (size_t)t->n * (size_t)t->dim * sizeof(float));
    }
}

int sparse_batch_take_rows(sparse_batch_t *sb, int k, const wire_msg_t *m, char *err, size_t errlen) {
    size_t i = 0;
    for (int t = 0; t < sb->n_tables; t++) {
        sb_table_t *st = &sb->t[t];
        int b = st->shard_off[k], n = st->shard_off[k + 1] - b;
        if (n == 0) continue;
        const Tessera__TensorDesc *d = i < m->hdr->n_tensors ? m->hdr->tensors[i] : NULL;
        if (!d || d->id != (uint32_t)t || d->dtype != TESSERA__DTYPE__DTYPE_F32 ||
            d->shape[0] != (uint64_t)n || d->shape[1] != (uint64_t)st->dim) {
            snprintf(err, errlen, "shard %d sent rows that do not match the request (table %d)", k, t);
            return -TS_EPROTO;
        }
        memcpy(st->rows + (size_t)b * (size_t)st->dim, zmq_msg_data(&m->frames[i]), d->nbytes);
        sb->rows_pulled += (uint64_t)n;
        i++;
    }
    if (i != m->hdr->n_tensors) {
        snprintf(err, errlen, "shard %d sent %zu row tensors, expected %zu", k, m->hdr->n_tensors, i);
        return -TS_EPROTO;
    }
    return 0;
}
