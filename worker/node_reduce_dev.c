/* The one place that knows whether this build has NCCL (TESSERA_HAVE_NCCL, set by CMake when CUDA and
 * NCCL are both found). */
#include "node_reduce_dev.h"

#ifdef TESSERA_HAVE_NCCL
#include "nccl_coll.h"

static const node_reduce_dev_ops_t nccl_ops = {
    .create = nccl_coll_create,
    .free = nccl_coll_free,
    .buffer = nccl_coll_buffer,
    .copy = nccl_coll_copy,
    .sync = nccl_coll_sync,
    .reduce_scatter = nccl_coll_reduce_scatter,
    .all_gather = nccl_coll_all_gather,
};

const node_reduce_dev_ops_t *node_reduce_dev_ops(void) {
    return &nccl_ops;
}
#else
const node_reduce_dev_ops_t *node_reduce_dev_ops(void) {
    return NULL;
}
#endif
