#include "node_reduce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

int node_reduce_init(node_reduce_t *nr, const cluster_t *cl, const model_spec_t *spec, const shard_map_t *map,
                     char *err, size_t errlen) {
    memset(nr, 0, sizeof *nr);
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
    return 0;
}

void node_reduce_free(node_reduce_t *nr) {
    if (!nr || !nr->mine) return;
    MPI_Comm_free(&nr->node);
    free(nr->mine);
    free(nr->seg);
    free(nr->packed);
    free(nr->share);
    memset(nr, 0, sizeof *nr);
}

void node_reduce_grads(node_reduce_t *nr, float *grads) {
    for (int i = 0; i < nr->n_seg; i++)
        memcpy(nr->packed + nr->seg[i].packed, grads + nr->seg[i].flat, nr->seg[i].n * sizeof(float));
    MPI_CHECK(MPI_Reduce_scatter_block(nr->packed, nr->share, (int)nr->block, MPI_FLOAT, MPI_SUM, nr->node));
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

void node_reduce_params(node_reduce_t *nr, float *params) {
    size_t base = (size_t)nr->local * nr->block;
    for (int i = 0; i < nr->n_seg; i++)
        if (nr->seg[i].owner == nr->local)
            memcpy(nr->share + (nr->seg[i].packed - base), params + nr->seg[i].flat,
                   nr->seg[i].n * sizeof(float));
    MPI_CHECK(
        MPI_Allgather(nr->share, (int)nr->block, MPI_FLOAT, nr->packed, (int)nr->block, MPI_FLOAT, nr->node));
    for (int i = 0; i < nr->n_seg; i++)
        if (nr->seg[i].owner != nr->local)
            memcpy(params + nr->seg[i].flat, nr->packed + nr->seg[i].packed, nr->seg[i].n * sizeof(float));
}

void node_reduce_max(node_reduce_t *nr, int64_t *v, int n) {
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_MAX, nr->node));
}
