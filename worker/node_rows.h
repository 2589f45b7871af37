/* Row gradients under job.node_reduce: the node's workers send their deduplicated row gradients for
 * shard k to k's owner (local worker k mod W_n), which sums them per id in local-worker order, takes
 * the node's mean and pushes them with its dense share, as one pusher per node. (Row pulls stay per
 * worker: each worker pulls its own batch's rows.) */
#ifndef TESSERA_NODE_ROWS_H
#define TESSERA_NODE_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "id_map.h"
#include "node_reduce.h"
#include "sparse_batch.h"

typedef struct {
    sparse_batch_t out; /* the merged rows of this worker's shards (ids, grads, shard_off, dim) */
    size_t *cap;        /* per table: rows out.t[t] has room for */
    char *send, *recv;  /* exchange buffers */
    size_t send_cap, recv_cap;
    id_map_t map; /* the merge's id -> row */
} node_rows_t;

/* Sets up for batches shaped like sb's tables on n_shards shards. */
void node_rows_init(node_rows_t *r, const sparse_batch_t *sb, int n_shards);
void node_rows_free(node_rows_t *r);

/* Collective over the node: exchanges every worker's row gradients of sb (ids and grads grouped by
 * shard) and returns the merged rows of this worker's shards, the node's mean (valid until the next
 * call). */
const sparse_batch_t *node_rows_merge(node_rows_t *r, const node_reduce_t *nr, const sparse_batch_t *sb);

#endif
