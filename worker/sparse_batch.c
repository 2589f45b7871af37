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

static void free_device(sparse_batch_t *sb, sb_table_t *t) {
    backend_t *be = sb->be;
    if (!be) return;
    be->ops->free(be, t->d_rows);
    be->ops->free(be, t->d_grads);
    be->ops->free(be, t->d_wts);
    be->ops->free(be, t->d_off);
    be->ops->free(be, t->d_idx);
    be->ops->free(be, t->d_roff);
    be->ops->free(be, t->d_rbag);
    be->ops->free(be, t->d_rw);
    t->d_rows = t->d_grads = t->d_wts = t->d_rw = NULL;
    t->d_off = t->d_idx = t->d_roff = t->d_rbag = NULL;
    t->d_cap = t->d_cap_nnz = t->d_cap_off = 0;
}

void sparse_batch_free(sparse_batch_t *sb) {
    if (!sb || !sb->t) return;
    for (int i = 0; i < sb->n_tables; i++) {
        sb_table_t *t = &sb->t[i];
        free_device(sb, t);
        free(t->ids);
        free(t->shard_off);
        free(t->rows);
        free(t->grads);
        free(t->off);
        free(t->idx);
        free(t->wts);
        free(t->r_off);
        free(t->r_bag);
        free(t->r_w);
    }
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
static void reserve_device(sparse_batch_t *sb, sb_table_t *t, size_t n, size_t nnz, size_t batch) {
    backend_t *be = sb->be;
    if (!t->d_rows || n > t->d_cap) { /* allocated on first use even when this batch has no rows */
        be->ops->free(be, t->d_rows);
        be->ops->free(be, t->d_grads);
        be->ops->free(be, t->d_roff);
        t->d_cap = n + n / 2 + 64;
        t->d_rows = be->ops->alloc(be, t->d_cap * (size_t)t->dim * sizeof(float));
        t->d_grads = be->ops->alloc(be, t->d_cap * (size_t)t->dim * sizeof(float));
        t->d_roff = be->ops->alloc(be, (t->d_cap + 1) * sizeof(int32_t));
        free(t->r_off); /* the host side of the bags by row grows with the device side */
        t->r_off = XMALLOC((t->d_cap + 1) * sizeof(int32_t));
    }
    if (!t->d_idx || nnz > t->d_cap_nnz) {
        be->ops->free(be, t->d_idx);
        be->ops->free(be, t->d_wts);
        be->ops->free(be, t->d_rbag);
        be->ops->free(be, t->d_rw);
        t->d_cap_nnz = nnz + nnz / 2 + 64;
        t->d_idx = be->ops->alloc(be, t->d_cap_nnz * sizeof(int32_t));
        t->d_wts = be->ops->alloc(be, t->d_cap_nnz * sizeof(float));
        t->d_rbag = be->ops->alloc(be, t->d_cap_nnz * sizeof(int32_t));
        t->d_rw = be->ops->alloc(be, t->d_cap_nnz * sizeof(float));
        free(t->r_bag);
        free(t->r_w);
        t->r_bag = XMALLOC(t->d_cap_nnz * sizeof(int32_t));
        t->r_w = XMALLOC(t->d_cap_nnz * sizeof(float));
    }
    if (!t->d_off || batch + 1 > t->d_cap_off) {
        be->ops->free(be, t->d_off);
        t->d_cap_off = batch + 1;
        t->d_off = be->ops->alloc(be, t->d_cap_off * sizeof(int32_t));
    }
    if (!t->d_rows || !t->d_grads || !t->d_idx || !t->d_wts || !t->d_off || !t->d_roff || !t->d_rbag ||
        !t->d_rw) {
        fprintf(stderr, "sparse_batch: out of device memory for %zu rows of a table\n", n);
        abort(); /* the layer API has no error path; a batch's rows are small next to the model */
    }
}

void sparse_batch_bind(sparse_batch_t *sb, model_t *m) {
    backend_t *be = m->be;
    for (int ti = 0; ti < sb->n_tables; ti++) {
        sb_table_t *t = &sb->t[ti];
        if (be->host_memory) {
            m->slots[ti] = (sparse_slot_t){ti, t->n, t->rows, t->grads, t->off, t->idx, t->wts, NULL};
            continue;
        }
        sb->be = be;
        size_t nnz = (size_t)t->off[sb->batch], row = (size_t)t->dim * sizeof(float);
        reserve_device(sb, t, (size_t)t->n, nnz, (size_t)sb->batch);
        be->ops->to_device(be, t->d_rows, t->rows, (size_t)t->n * row);
        be->ops->to_device(be, t->d_off, t->off, ((size_t)sb->batch + 1) * sizeof(int32_t));
        be->ops->to_device(be, t->d_idx, t->idx, nnz * sizeof(int32_t));
        if (t->wts) be->ops->to_device(be, t->d_wts, t->wts, nnz * sizeof(float));
        const layer_t *l = &m->spec.layers[m->spec.tables[ti].layer];
        bag_rows_build(t->off, t->idx, t->wts, sb->batch, l->mean, t->n, t->r_off, t->r_bag, t->r_w);
        be->ops->to_device(be, t->d_roff, t->r_off, ((size_t)t->n + 1) * sizeof(int32_t));
        be->ops->to_device(be, t->d_rbag, t->r_bag, nnz * sizeof(int32_t));
        be->ops->to_device(be, t->d_rw, t->r_w, nnz * sizeof(float));
        t->by_row = (bag_rows_t){t->d_roff, t->d_rbag, t->d_rw};
        m->slots[ti] = (sparse_slot_t){
            ti, t->n, t->d_rows, t->d_grads, t->d_off, t->d_idx, t->wts ? t->d_wts : NULL, &t->by_row};
    }
}

void sparse_batch_fetch_grads(sparse_batch_t *sb, model_t *m) {
    if (m->be->host_memory) return;
    for (int ti = 0; ti < sb->n_tables; ti++) {
        sb_table_t *t = &sb->t[ti];
        m->be->ops->to_host(m->be, t->grads, t->d_grads, (size_t)t->n * (size_t)t->dim * sizeof(float));
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
