/* Gradient reduction inside a node before it crosses the network (job.node_reduce; BytePS's idea):
 * the node's W_n workers reduce-scatter their gradients so that local worker j holds the node's mean
 * gradient for the slices of shards k with k mod W_n = j, push only that share to those shards as one
 * pusher per node, and all-gather the parameters the shards answer. Shards see n_worker_nodes pushers,
 * each worker talks to S / W_n shards, and a node sends its gradient across the network once instead
 * of W_n times. MPI collectives over the node's workers (NCCL on GPUs is the next step). */
#ifndef TESSERA_NODE_REDUCE_H
#define TESSERA_NODE_REDUCE_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "model.h"
#include "shard_map.h"

typedef struct {
    size_t flat, packed, n; /* floats at `flat` in the model's buffer <-> at `packed` in the packed layout */
    int owner;              /* the local worker whose share holds it */
} nr_segment_t;

typedef struct {
    MPI_Comm node;
    int local, size;
    int *mine;    /* [n_shards]: this worker pushes to and pulls from shard k */
    size_t block; /* floats per local worker's share, padded to the largest */
    int n_seg;
    nr_segment_t *seg;
    float *packed, *share; /* [size * block], [block] */
} node_reduce_t;

/* Splits the workers by node (cl's node layout) and plans the packed layout of spec's dense slices on
 * map. Collective over cl->role_comm. 0, or -TS_EINVAL with a message when the nodes hold different
 * numbers of workers (the node means would then weigh workers unequally). */
int node_reduce_init(node_reduce_t *nr, const cluster_t *cl, const model_spec_t *spec, const shard_map_t *map,
                     char *err, size_t errlen);
void node_reduce_free(node_reduce_t *nr);

/* grads (the model's flat layout, host memory): afterwards its slices of this worker's shards hold the
 * node's mean gradient (the rest is stale). Collective over the node. */
void node_reduce_grads(node_reduce_t *nr, float *grads);
/* params holds this worker's shards' slices (just pulled); afterwards every slice, from the node's
 * workers. Collective over the node. */
void node_reduce_params(node_reduce_t *nr, float *params);
/* v[0..n) becomes the maximum over the node's workers. Collective over the node. */
void node_reduce_max(node_reduce_t *nr, int64_t *v, int n);

#endif
