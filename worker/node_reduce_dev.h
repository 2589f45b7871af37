/* The device side of job.node_reduce, for workers whose backend keeps the model in GPU memory: the NCCL
 * collectives of cuda/nccl_coll.h, reached through this table so that node_reduce.c stays plain C and
 * builds without CUDA. The functions and their contracts are cuda/nccl_coll.h's. */
#ifndef TESSERA_NODE_REDUCE_DEV_H
#define TESSERA_NODE_REDUCE_DEV_H

#include <mpi.h>
#include <stddef.h>

struct nccl_coll;

typedef struct {
    struct nccl_coll *(*create)(MPI_Comm node, size_t buf_floats, char *err, size_t errlen);
    void (*free)(struct nccl_coll *c);
    float *(*buffer)(struct nccl_coll *c);
    void (*copy)(struct nccl_coll *c, float *dst, const float *src, size_t n);
    void (*sync)(struct nccl_coll *c);
    void (*reduce_scatter)(struct nccl_coll *c, const float *send, float *recv, size_t count);
    void (*all_gather)(struct nccl_coll *c, const float *send, float *recv, size_t count);
} node_reduce_dev_ops_t;

/* The table, or NULL in builds without NCCL (the GPU workers then reduce through MPI in host memory). */
const node_reduce_dev_ops_t *node_reduce_dev_ops(void);

/* The same contracts with MPI collectives, for backend cpu-staged (worker/node_reduce_staged.c): the
 * device path tested without GPUs. */
extern const node_reduce_dev_ops_t node_reduce_staged_ops;

#endif
