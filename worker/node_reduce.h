/* Gradient reduction inside a node before it crosses the network (job.node_reduce; BytePS's idea):
 * the node's W_n workers reduce-scatter their gradients so that local worker j holds the node's mean
 * gradient for the slices of shards k with k mod W_n = j, push only that share to those shards as one
 * pusher per node, and all-gather the parameters the shards answer. Shards see n_worker_nodes pushers,
 * each worker talks to S / W_n shards, and a node sends its gradient across the network once instead
 * of W_n times. MPI collectives over the node's workers in host memory; on GPU workers in builds with
 * NCCL, the reduce-scatter and the all-gather run between the node's GPUs on the model's device buffers
 * (node_reduce_dev.h), and only each worker's share crosses to the host. */
#ifndef TESSERA_NODE_REDUCE_H
#define TESSERA_NODE_REDUCE_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "model.h"
#include "node_reduce_dev.h"
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
    /* The device path: 1 when the node's GPUs reduce the model's device buffers through NCCL. */
    int device;
    const node_reduce_dev_ops_t *dev;
    struct nccl_coll *coll;
    backend_t *be;             /* borrowed: synced before NCCL touches its memory */
    float *d_packed;           /* coll's buffer, [size * block] */
    float *d_params, *d_grads; /* the model's, borrowed */
} node_reduce_t;

/* Splits the workers by node (cl's node layout) and plans the packed layout of model's dense slices on
 * map. With a backend without host memory (CUDA) in a build with NCCL, also opens the node's NCCL
 * communicator on the backend's device and sets nr->device; it falls back to the host path, with a
 * warning, when the build has no NCCL or the communicator cannot be opened. model is borrowed until
 * node_reduce_free. Collective over cl->role_comm. 0, or -TS_EINVAL with a message when the nodes hold
 * different numbers of workers (the node means would then weigh workers unequally). */
int node_reduce_init(node_reduce_t *nr, const cluster_t *cl, const model_t *model, const shard_map_t *map,
                     char *err, size_t errlen);
/* Collective over the node. */
void node_reduce_free(node_reduce_t *nr);

/* grads (the model's flat layout, host memory): afterwards its slices of this worker's shards hold the
 * node's mean gradient (the rest is stale). On the device path the gradient is read from the model's
 * device buffer instead, and grads need hold nothing before. Collective over the node. */
void node_reduce_grads(node_reduce_t *nr, float *grads);
/* params holds this worker's shards' slices (just pulled); afterwards every slice, from the node's
 * workers. On the device path every slice goes to the model's device buffer instead (params keeps the
 * rest stale). Collective over the node. */
void node_reduce_params(node_reduce_t *nr, float *params);
/* v[0..n) becomes the maximum over the node's workers. Collective over the node. */
void node_reduce_max(node_reduce_t *nr, int64_t *v, int n);

#endif
