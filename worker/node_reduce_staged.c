/* job.node_reduce's device path for backend cpu-staged (model/backend_staged.c): the contracts of
 * cuda/nccl_coll.h carried out with MPI collectives over the node on the staged backend's memory, so
 * node_reduce.c's device path (packing the device gradient, the collectives in place, unpacking the
 * parameters) runs and is tested without GPUs. The sums are MPI_Reduce_scatter_block's, the host
 * path's, so both paths give the same bits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "node_reduce_dev.h"

typedef struct {
    MPI_Comm comm;
    int rank;
    float *buf, *tmp;
    size_t n;
} staged_coll_t;

static staged_coll_t *sc(struct nccl_coll *c) {
    return (staged_coll_t *)(void *)c;
}

static struct nccl_coll *staged_create(MPI_Comm node, size_t buf_floats, char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    staged_coll_t *c = XCALLOC(1, sizeof *c);
    MPI_Comm_dup(node, &c->comm);
    MPI_Comm_rank(c->comm, &c->rank);
    c->n = buf_floats;
    c->buf = XCALLOC(buf_floats ? buf_floats : 1, sizeof(float));
    c->tmp = XCALLOC(buf_floats ? buf_floats : 1, sizeof(float));
    return (struct nccl_coll *)(void *)c;
}

static void staged_free(struct nccl_coll *h) {
    staged_coll_t *c = sc(h);
    if (!c) return;
    MPI_Comm_free(&c->comm);
    free(c->buf);
    free(c->tmp);
    free(c);
}

static float *staged_buffer(struct nccl_coll *c) {
    return sc(c)->buf;
}

static void staged_copy(struct nccl_coll *c, float *dst, const float *src, size_t n) {
    (void)c;
    memmove(dst, src, n * sizeof(float));
}

static void staged_sync(struct nccl_coll *c) {
    (void)c;
}

/* In place (recv == send + rank * count), as NCCL allows: MPI's in-place form differs, so through tmp. */
static void staged_reduce_scatter(struct nccl_coll *h, const float *send, float *recv, size_t count) {
    staged_coll_t *c = sc(h);
    MPI_Reduce_scatter_block(send, c->tmp, (int)count, MPI_FLOAT, MPI_SUM, c->comm);
    memcpy(recv, c->tmp, count * sizeof(float));
}

static void staged_all_gather(struct nccl_coll *h, const float *send, float *recv, size_t count) {
    staged_coll_t *c = sc(h);
    if (send == recv + (size_t)c->rank * count)
        MPI_Allgather(MPI_IN_PLACE, 0, MPI_FLOAT, recv, (int)count, MPI_FLOAT, c->comm);
    else
        MPI_Allgather(send, (int)count, MPI_FLOAT, recv, (int)count, MPI_FLOAT, c->comm);
}

const node_reduce_dev_ops_t node_reduce_staged_ops = {
    .create = staged_create,
    .free = staged_free,
    .buffer = staged_buffer,
    .copy = staged_copy,
    .sync = staged_sync,
    .reduce_scatter = staged_reduce_scatter,
    .all_gather = staged_all_gather,
};
