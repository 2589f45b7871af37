/* The sparse part of one batch on a worker: for every table, the batch's unique ids (grouped by the
 * shard that owns them, so each shard's share is one contiguous range to send and receive in place),
 * the pulled rows, the row gradients, and each example's bag as indices into the unique ids. */
#ifndef TESSERA_SPARSE_BATCH_H
#define TESSERA_SPARSE_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "data_ctr.h"
#include "id_map.h"
#include "model.h"
#include "wire.h"

typedef struct {
    int slot, dim;
    int n;          /* unique ids in this batch */
    uint64_t *ids;  /* [n], shard k's at [shard_off[k], shard_off[k + 1]) */
    int *shard_off; /* [S + 1] */
    float *rows;    /* [n, dim]: pulled from the shards */
    float *grads;   /* [n, dim]: the backward pass's deduplicated gradients */
    int32_t *off;   /* [batch + 1] */
    int32_t *idx;   /* [off[batch]] */
    float *wts;     /* [off[batch]] or NULL */
    size_t cap, cap_nnz;
    /* device copies for a backend without host memory (sparse_batch_bind), grown as needed, with the
     * bags by row (made on the host) that give the device's backward pass the CPU's summation order */
    float *d_rows, *d_grads, *d_wts, *d_rw;
    int32_t *d_off, *d_idx, *d_roff, *d_rbag;
    size_t d_cap, d_cap_nnz, d_cap_off;
    int32_t *r_off, *r_bag;
    float *r_w;
    bag_rows_t by_row; /* device pointers */
} sb_table_t;

typedef struct {
    int n_tables, n_shards;
    sb_table_t *t;
    id_map_t map; /* the dedup hash: id -> first-seen unique index */
    size_t scratch_cap;
    int32_t *tmp;   /* first-seen unique index of each bag entry */
    int32_t *order; /* first-seen index -> position grouped by shard */
    uint64_t rows_pulled, rows_pushed;
    backend_t *be; /* the device backend the d_ buffers belong to (borrowed), or NULL */
    int batch;     /* examples in the batch last built */
} sparse_batch_t;

/* Sets up the tables of `spec` for batches of up to max_batch examples over n_shards shards. */
void sparse_batch_init(sparse_batch_t *sb, const model_spec_t *spec, int n_shards, int max_batch);
void sparse_batch_free(sparse_batch_t *sb);

/* Builds every table's unique ids and bags for examples ex[0..batch) of `d`. */
void sparse_batch_build(sparse_batch_t *sb, const ctr_dataset_t *d, const uint32_t *ex, int batch);

/* Points the model's sparse slots at this batch: in place on a host-memory backend (CPU); otherwise
 * the rows and bags are copied to device buffers kept in sb (freed by sparse_batch_free). */
void sparse_batch_bind(sparse_batch_t *sb, model_t *m);
/* After a training pass on a device backend, copies the row gradients back into sb's grads (what a
 * push sends). Nothing to do on a host-memory backend. */
void sparse_batch_fetch_grads(sparse_batch_t *sb, model_t *m);

/* Copies the rows of shard k's SPARSE_ROWS reply `m` (one tensor per table with ids on shard k, in
 * table order) into every table's rows. 0, or -TS_EPROTO with a message when the reply does not match
 * the request. */
int sparse_batch_take_rows(sparse_batch_t *sb, int k, const wire_msg_t *m, char *err, size_t errlen);

#endif
