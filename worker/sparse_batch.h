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

enum { SB_ROWS, SB_OFF, SB_IDX, SB_WTS, SB_ROFF, SB_RBAG, SB_RW, SB_SEGMENTS };

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
    /* On a backend without host memory: where this batch's rows, bags (off, idx, wts) and bags by row
     * (roff, rbag, rw) start in the staging area, and its row gradients in the gradient area (bytes) */
    size_t at[SB_SEGMENTS], grads_at;
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
    backend_t *be; /* the device backend the staging areas belong to (borrowed), or NULL */
    int batch;     /* examples in the batch last built */
    /* A device backend gets every table's rows and bags in one copy: packed in h_stage (pinned host
     * memory), copied to d_stage; the row gradients come back the same way (d_grads to h_grads). */
    char *h_stage, *d_stage, *h_grads, *d_grads;
    size_t stage_cap, grads_cap;
    uint64_t stage_ticket; /* the asynchronous copy of h_stage still in flight (0: none) */
} sparse_batch_t;

/* Sets up the tables of `spec` for batches of up to max_batch examples over n_shards shards. */
void sparse_batch_init(sparse_batch_t *sb, const model_spec_t *spec, int n_shards, int max_batch);
void sparse_batch_free(sparse_batch_t *sb);

/* Builds every table's unique ids and bags for examples ex[0..batch) of `d`. */
void sparse_batch_build(sparse_batch_t *sb, const ctr_dataset_t *d, const uint32_t *ex, int batch);

/* Points the model's sparse slots at this batch: in place on a host-memory backend (CPU); otherwise
 * the rows, bags and bags by row of every table go to the device in one copy, into buffers kept in sb
 * (freed by sparse_batch_free). */
void sparse_batch_bind(sparse_batch_t *sb, model_t *m);
/* After a training pass on a device backend, copies the row gradients back into sb's grads (what a
 * push sends). Nothing to do on a host-memory backend. */
void sparse_batch_fetch_grads(sparse_batch_t *sb, model_t *m);

/* Copies the rows of shard k's SPARSE_ROWS reply `m` (one tensor per table with ids on shard k, in
 * table order) into every table's rows. 0, or -TS_EPROTO with a message when the reply does not match
 * the request. */
int sparse_batch_take_rows(sparse_batch_t *sb, int k, const wire_msg_t *m, char *err, size_t errlen);

#endif
