#include "node_reduce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Opens the device path when the backend and the build allow it; otherwise leaves the host path. */
static void device_init(node_reduce_t *nr, const cluster_t *cl, const model_t *model) {
    if (model->be->host_memory) return;
    /* NCCL needs CUDA memory; the staged test backend gets the same path over MPI. */
    int staged = !strcmp(model->be->ops->name, "cpu-staged");
    if (!staged && strcmp(model->be->ops->name, "cuda")) return;
    if (getenv("TESSERA_TEST_NO_NCCL")) { /* tests: the fallback a node without NCCL takes */
        log_warn("node_reduce: TESSERA_TEST_NO_NCCL is set; node %d reduces through MPI in host memory",
                 cl->node_index);
        return;
    }
    nr->dev = staged ? &node_reduce_staged_ops : node_reduce_dev_ops();
    if (!nr->dev) {
        log_warn("node_reduce: this build has no NCCL; the GPU workers of node %d reduce through MPI in host "
                 "memory",
                 cl->node_index);
        return;
    }
    char why[512];
    nr->coll = nr->dev->create(nr->node, (size_t)nr->size * nr->block, why, sizeof why);
    if (!nr->coll) {
        log_warn("node_reduce: no NCCL communicator (%s); the GPU workers of node %d reduce through MPI in "
                 "host memory",
                 why, cl->node_index);
        return;
    }
    nr->device = 1;
    nr->be = model->be;
    nr->d_packed = nr->dev->buffer(nr->coll);
    nr->d_params = model->params;
    nr->d_grads = model->grads;
    log_info("node_reduce via %s node=%d local=%d of=%d share_floats=%zu", staged ? "mpi-staged" : "nccl",
             cl->node_index, nr->local, nr->size, nr->block);
}

int node_reduce_init(node_reduce_t *nr, const cluster_t *cl, const model_t *model, const shard_map_t *map,
                     char *err, size_t errlen) {
    memset(nr, 0, sizeof *nr);
    const model_spec_t *spec = &model->spec;
    int sizes[2] = {cl->node_size, -cl->node_size}, ext[2];
    MPI_CHECK(MPI_Allreduce(sizes, ext, 2, MPI_INT, MPI_MAX, cl->role_comm));
    if (ext[0] != -ext[1]) {
        snprintf(err, errlen,
                 "job.node_reduce needs the same number of workers on every node; nodes have %d to %d",
                 -ext[1], ext[0]);
        return -TS_EINVAL;
    }
    MPI_CHECK(MPI_Comm_split(cl->role_comm, cl->node_index, cl->node_local, &nr->node));
    nr->local = cl->node_local;
    nr->size = cl->node_size;
    int S = map->n_shards;
    nr->mine = XCALLOC((size_t)S, sizeof *nr->mine);
    nr->seg = XCALLOC((size_t)S * (size_t)(spec->n_tensors ? spec->n_tensors : 1), sizeof *nr->seg);
    size_t *fill = XCALLOC((size_t)nr->size, sizeof *fill);
    /* Local worker j's share: the slices of shards j, j + W_n, ..., shard by shard, tensor by tensor
     * (the order a push sends them in). */
    for (int j = 0; j < nr->size; j++)
        for (int k = j; k < S; k += nr->size)
            for (int t = 0; t < spec->n_tensors; t++) {
                row_range_t r = shard_map_range(map, t, k);
                const tensor_info_t *ti = &spec->tensors[t];
                if (r.row_end == r.row_begin || ti->remote) continue;
                size_t n = (size_t)((r.row_end - r.row_begin) * ti->cols);
                nr->seg[nr->n_seg++] = (nr_segment_t){ti->offset + r.row_begin * ti->cols, fill[j], n, j};
                fill[j] += n;
            }
    for (int j = 0; j < nr->size; j++)
        if (fill[j] > nr->block) nr->block = fill[j];
    for (int i = 0; i < nr->n_seg; i++)
        nr->seg[i].packed += (size_t)nr->seg[i].owner * nr->block;
    for (int k = nr->local; k < S; k += nr->size)
        nr->mine[k] = 1;
    free(fill);
    size_t b = nr->block ? nr->block : 1;
    nr->packed = XCALLOC((size_t)nr->size * b, sizeof *nr->packed); /* padding stays zero */
    nr->share = XCALLOC(b, sizeof *nr->share);
    device_init(nr, cl, model);
    return 0;
}

void node_reduce_free(node_reduce_t *nr) {
    if (!nr || !nr->mine) return;
    if (nr->coll) nr->dev->free(nr->coll);
    MPI_Comm_free(&nr->node);
    free(nr->mine);
    free(nr->seg);
    free(nr->packed);
    free(nr->share);
    memset(nr, 0, sizeof *nr);
}

/* share = the node's summed gradient of this worker's share, through the node's GPUs: the model's
 * device gradient is packed into the device buffer, reduce-scattered in place, and the share copied out. */
static void reduce_grads_device(node_reduce_t *nr) {
    nr->be->ops->sync(nr->be); /* the backward pass has written d_grads */
    for (int i = 0; i < nr->n_seg; i++)
        nr->dev->copy(nr->coll, nr->d_packed + nr->seg[i].packed, nr->d_grads + nr->seg[i].flat,
                      nr->seg[i].n);
    float *mine = nr->d_packed + (size_t)nr->local * nr->block;
    nr->dev->reduce_scatter(nr->coll, nr->d_packed, mine, nr->block);
    nr->dev->copy(nr->coll, nr->share, mine, nr->block);
    nr->dev->sync(nr->coll);
}

void node_reduce_grads(node_reduce_t *nr, float *grads) {
    if (nr->device) {
        reduce_grads_device(nr);
    } else {
        for (int i = 0; i < nr->n_seg; i++)
            memcpy(nr->packed + nr->seg[i].packed, grads + nr->seg[i].flat, nr->seg[i].n * sizeof(float));
        MPI_CHECK(
            MPI_Reduce_scatter_block(nr->packed, nr->share, (int)nr->block, MPI_FLOAT, MPI_SUM, nr->node));
    }
    float scale = 1.0f / (float)nr->size; /* the node's mean; the shards average the nodes' */
    size_t base = (size_t)nr->local * nr->block;
    for (int i = 0; i < nr->n_seg; i++) {
        const nr_segment_t *s = &nr->seg[i];
        if (s->owner != nr->local) continue;
        const float *src = nr->share + (s->packed - base);
        for (size_t e = 0; e < s->n; e++)
            grads[s->flat + e] = src[e] * scale;
    }
}

/* The model's device parameters = every worker's share, through the node's GPUs: this worker's share
 * goes to its place in the device buffer, is all-gathered in place, and every segment is unpacked. */
static void gather_params_device(node_reduce_t *nr) {
    nr->be->ops->sync(nr->be); /* nothing queued on the backend still reads d_params */
    float *mine = nr->d_packed + (size_t)nr->local * nr->block;
    nr->dev->copy(nr->coll, mine, nr->share, nr->block);
    nr->dev->all_gather(nr->coll, mine, nr->d_packed, nr->block);
    for (int i = 0; i < nr->n_seg; i++)
        nr->dev->copy(nr->coll, nr->d_params + nr->seg[i].flat, nr->d_packed + nr->seg[i].packed,
                      nr->seg[i].n);
    nr->dev->sync(nr->coll);
}

void node_reduce_params(node_reduce_t *nr, float *params) {
    size_t base = (size_t)nr->local * nr->block;
    for (int i = 0; i < nr->n_seg; i++)
        if (nr->seg[i].owner == nr->local)
            memcpy(nr->share + (nr->seg[i].packed - base), params + nr->seg[i].flat,
                   nr->seg[i].n * sizeof(float));
    if (nr->device) {
        gather_params_device(nr);
        return;
    }
    MPI_CHECK(
        MPI_Allgather(nr->share, (int)nr->block, MPI_FLOAT, nr->packed, (int)nr->block, MPI_FLOAT, nr->node));
    for (int i = 0; i < nr->n_seg; i++)
        if (nr->seg[i].owner != nr->local)
            memcpy(params + nr->seg[i].flat, nr->packed + nr->seg[i].packed, nr->seg[i].n * sizeof(float));
}

void node_reduce_max(node_reduce_t *nr, int64_t *v, int n) {
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_MAX, nr->node));
}
