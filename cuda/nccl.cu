/* NCCL collectives over the GPUs of one node (the interface is cuda/nccl_coll.h). One communicator, one
 * stream and one device buffer per worker. The CUDA backend's stream is private to backend_cuda.cu, so
 * the two streams meet only at explicit synchronisations: callers sync the backend before handing its
 * memory here, and every collective waits for its stream before it returns (correctness first). */
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"
#include "nccl_coll.h"

extern "C" {
#include "check.h"
}

struct nccl_coll {
    ncclComm_t comm;
    cudaStream_t stream;
    float *buf;
};

/* What rank 0 sends the others: whether it made a unique id, and the id. */
typedef struct {
    int ok;
    ncclUniqueId id;
} nccl_boot_t;

/* 1 when `ok` on every rank of `node`. */
static int node_all(MPI_Comm node, int ok) {
    int all = 0;
    MPI_CHECK(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, node));
    return all;
}

/* The stream and the zeroed buffer: 0, or -1 with a message. */
static int open_local(nccl_coll_t *c, size_t buf_floats, char *err, size_t errlen) {
    size_t bytes = (buf_floats ? buf_floats : 1) * sizeof(float);
    if (CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), err, errlen)) return -1;
    if (CUDA_TRY(cudaMalloc((void **)&c->buf, bytes), err, errlen)) return -1;
    return CUDA_TRY(cudaMemsetAsync(c->buf, 0, bytes, c->stream), err, errlen) ||
                   CUDA_TRY(cudaStreamSynchronize(c->stream), err, errlen)
               ? -1
               : 0;
}

static void close_local(nccl_coll_t *c) {
    if (!c) return;
    if (c->buf) cudaFree(c->buf);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

/* Every step that can fail on one rank alone is followed by an agreement over the node, so no rank
 * enters ncclCommInitRank (which waits for all of them) unless every rank will. */
extern "C" nccl_coll_t *nccl_coll_create(MPI_Comm node, size_t buf_floats, char *err, size_t errlen) {
    int rank = 0, size = 0;
    MPI_CHECK(MPI_Comm_rank(node, &rank));
    MPI_CHECK(MPI_Comm_size(node, &size));
    char why[512] = "";
    nccl_coll_t *c = (nccl_coll_t *)calloc(1, sizeof *c);
    int ok = c != NULL;
    if (!c) snprintf(why, sizeof why, "nccl: out of host memory");
    if (ok) ok = !open_local(c, buf_floats, why, sizeof why);
    nccl_boot_t boot;
    memset(&boot, 0, sizeof boot);
    if (rank == 0) boot.ok = ok && !NCCL_TRY(ncclGetUniqueId(&boot.id), why, sizeof why);
    MPI_CHECK(MPI_Bcast(&boot, (int)sizeof boot, MPI_BYTE, 0, node));
    if (!node_all(node, ok && boot.ok)) {
        snprintf(err, errlen, "%s", why[0] ? why : "nccl: another worker of this node could not set up");
        close_local(c);
        return NULL;
    }
    ok = !NCCL_TRY(ncclCommInitRank(&c->comm, size, boot.id, rank), why, sizeof why);
    if (!node_all(node, ok)) {
        snprintf(err, errlen, "%s",
                 ok ? "nccl: another worker of this node could not open the communicator" : why);
        if (ok) ncclCommAbort(c->comm); /* local, unlike finalize: the others have no communicator */
        close_local(c);
        return NULL;
    }
    return c;
}

extern "C" void nccl_coll_free(nccl_coll_t *c) {
    if (!c) return;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    NCCL_CHECK(ncclCommFinalize(c->comm)); /* blocking communicator: returns when the node is done */
    NCCL_CHECK(ncclCommDestroy(c->comm));
    CUDA_CHECK(cudaFree(c->buf));
    CUDA_CHECK(cudaStreamDestroy(c->stream));
    free(c);
}

extern "C" float *nccl_coll_buffer(nccl_coll_t *c) {
    return c->buf;
}

extern "C" void nccl_coll_copy(nccl_coll_t *c, float *dst, const float *src, size_t n) {
    if (n) CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDefault, c->stream));
}

extern "C" void nccl_coll_sync(nccl_coll_t *c) {
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

extern "C" void nccl_coll_reduce_scatter(nccl_coll_t *c, const float *send, float *recv, size_t count) {
    NCCL_CHECK(ncclReduceScatter(send, recv, count, ncclFloat, ncclSum, c->comm, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

extern "C" void nccl_coll_all_gather(nccl_coll_t *c, const float *send, float *recv, size_t count) {
    NCCL_CHECK(ncclAllGather(send, recv, count, ncclFloat, c->comm, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}
