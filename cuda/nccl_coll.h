/* NCCL collectives over the GPUs of one node (cuda/nccl.cu), for job.node_reduce on GPU workers: a
 * plain C interface, so that C code can call it without CUDA's headers. Built only when CUDA and NCCL
 * are both found (TESSERA_HAVE_NCCL); worker/node_reduce_dev.c is the one place that asks.
 *
 * Everything runs on the communicator's own stream. Pointers are device memory unless said otherwise.
 * After a successful create, a CUDA or NCCL failure is fatal (logged with the call, file and line, then
 * abort()), as in the CUDA backend's ops and the MPI path's MPI_CHECK: the node's other workers would
 * otherwise wait in the collective for one that left. */
#ifndef TESSERA_NCCL_COLL_H
#define TESSERA_NCCL_COLL_H

#include <mpi.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nccl_coll nccl_coll_t;

/* Opens a NCCL communicator over the ranks of `node` (rank r of `node` is NCCL rank r) on the current
 * CUDA device, which must differ between the ranks (the CUDA backend picks it; create this after the
 * backend), and a zeroed device buffer of `buf_floats` floats. Collective over `node`: every rank gets a
 * communicator, or every rank gets NULL with a message in `err`. */
nccl_coll_t *nccl_coll_create(MPI_Comm node, size_t buf_floats, char *err, size_t errlen);
/* Collective over the node (NCCL finalizes the communicator). nccl_coll_free(NULL) is a no-op. */
void nccl_coll_free(nccl_coll_t *c);

/* The device buffer of create's `buf_floats` floats, owned by c. */
float *nccl_coll_buffer(nccl_coll_t *c);
/* Queues a copy of n floats; either side may be host or device memory. Complete after nccl_coll_sync. */
void nccl_coll_copy(nccl_coll_t *c, float *dst, const float *src, size_t n);
/* Waits for everything queued on c's stream. */
void nccl_coll_sync(nccl_coll_t *c);

/* recv[0..count) = the sum over the node's ranks of their send[r * count .. (r + 1) * count), r this
 * rank; in place when recv == send + r * count. Complete when it returns. Collective over the node. */
void nccl_coll_reduce_scatter(nccl_coll_t *c, const float *send, float *recv, size_t count);
/* recv[q * count .. (q + 1) * count) = rank q's send[0..count) for every rank q; in place when send ==
 * recv + r * count. Complete when it returns. Collective over the node. */
void nccl_coll_all_gather(nccl_coll_t *c, const float *send, float *recv, size_t count);

#ifdef __cplusplus
}
#endif

#endif
