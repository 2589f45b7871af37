#include "node_rows.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

void node_rows_init(node_rows_t *r, const sparse_batch_t *sb, int n_shards) {
    memset(r, 0, sizeof *r);
    r->out.n_tables = sb->n_tables;
    r->out.n_shards = n_shards;
    r->out.t = XCALLOC((size_t)(sb->n_tables ? sb->n_tables : 1), sizeof *r->out.t);
    r->cap = XCALLOC((size_t)(sb->n_tables ? sb->n_tables : 1), sizeof *r->cap);
    for (int t = 0; t < sb->n_tables; t++) {
        r->out.t[t].dim = sb->t[t].dim;
        r->out.t[t].slot = sb->t[t].slot;
        r->out.t[t].shard_off = XCALLOC((size_t)n_shards + 1, sizeof *r->out.t[t].shard_off);
    }
}

void node_rows_free(node_rows_t *r) {
    if (!r || !r->out.t) return;
    for (int t = 0; t < r->out.n_tables; t++) {
        free(r->out.t[t].ids);
        free(r->out.t[t].grads);
        free(r->out.t[t].shard_off);
    }
    free(r->out.t);
    free(r->cap);
    free(r->send);
    free(r->recv);
    id_map_free(&r->map);
    memset(r, 0, sizeof *r);
}

static void *grow(void *p, size_t *cap, size_t want) {
    if (want <= *cap) return p;
    free(p);
    *cap = want + want / 2 + 256;
    return XMALLOC(*cap);
}

/* One (shard, table) chunk of the exchange: n, then n ids, then n * dim floats. */
static size_t chunk_bytes(uint64_t n, int dim) {
    return sizeof(uint64_t) + n * (sizeof(uint64_t) + (size_t)dim * sizeof(float));
}

const sparse_batch_t *node_rows_merge(node_rows_t *r, const node_reduce_t *nr, const sparse_batch_t *sb) {
    int L = nr->size, S = r->out.n_shards, T = sb->n_tables;
    int scount[L], sdispl[L], rcount[L], rdispl[L];
    /* Pack, destination by destination: shards j, j + L, ... of owner j, table by table. */
    size_t total = 0;
    for (int j = 0; j < L; j++)
        for (int k = j; k < S; k += L)
            for (int t = 0; t < T; t++)
                total +=
                    chunk_bytes((uint64_t)(sb->t[t].shard_off[k + 1] - sb->t[t].shard_off[k]), sb->t[t].dim);
    r->send = grow(r->send, &r->send_cap, total ? total : 1);
    char *p = r->send;
    for (int j = 0; j < L; j++) {
        sdispl[j] = (int)(p - r->send);
        for (int k = j; k < S; k += L)
            for (int t = 0; t < T; t++) {
                const sb_table_t *st = &sb->t[t];
                uint64_t b = (uint64_t)st->shard_off[k], n = (uint64_t)st->shard_off[k + 1] - b;
                memcpy(p, &n, sizeof n);
                p += sizeof n;
                memcpy(p, st->ids + b, n * sizeof(uint64_t));
                p += n * sizeof(uint64_t);
                memcpy(p, st->grads + b * (size_t)st->dim, n * (size_t)st->dim * sizeof(float));
                p += n * (size_t)st->dim * sizeof(float);
            }
        scount[j] = (int)(p - r->send) - sdispl[j];
    }
    MPI_CHECK(MPI_Alltoall(scount, 1, MPI_INT, rcount, 1, MPI_INT, nr->node));
    size_t rtotal = 0;
    for (int j = 0; j < L; j++) {
        rdispl[j] = (int)rtotal;
        rtotal += (size_t)rcount[j];
    }
    r->recv = grow(r->recv, &r->recv_cap, rtotal ? rtotal : 1);
    MPI_CHECK(MPI_Alltoallv(r->send, scount, sdispl, MPI_BYTE, r->recv, rcount, rdispl, MPI_BYTE, nr->node));

    /* Where each source's chunk of (my shard k, table t) starts: sources send my shards in order. */
    int mine = 0;
    for (int k = nr->local; k < S; k += L)
        mine++;
    size_t n_chunks = (size_t)mine * (size_t)T;
    const char **chunk = XMALLOC(((size_t)L * n_chunks + 1) * sizeof *chunk);
    for (int s = 0; s < L; s++) {
        const char *q = r->recv + rdispl[s];
        for (size_t c = 0; c < n_chunks; c++) {
            chunk[(size_t)s * n_chunks + c] = q;
            uint64_t n;
            memcpy(&n, q, sizeof n);
            q += chunk_bytes(n, sb->t[c % (size_t)T].dim);
        }
    }
    /* Merge table by table, shard by shard, summing each id's rows in source (local worker) order. */
    float scale = 1.0f / (float)L;
    for (int t = 0; t < T; t++) {
        sb_table_t *o = &r->out.t[t];
        size_t dim = (size_t)o->dim, rows = 0, want = 0;
        for (int s = 0; s < L; s++)
            for (int m = 0; m < mine; m++) {
                uint64_t n;
                memcpy(&n, chunk[(size_t)s * n_chunks + (size_t)m * (size_t)T + (size_t)t], sizeof n);
                want += n;
            }
        if (want > r->cap[t]) {
            free(o->ids);
            free(o->grads);
            r->cap[t] = want + want / 2 + 64;
            o->ids = XMALLOC(r->cap[t] * sizeof *o->ids);
            o->grads = XMALLOC(r->cap[t] * dim * sizeof *o->grads);
        }
        id_map_reserve(&r->map, want);
        for (int k = 0; k <= S; k++)
            o->shard_off[k] = 0;
        int m = 0;
        for (int k = 0; k < S; k++) {
            o->shard_off[k] = (int)rows;
            if (k % L != nr->local) continue;
            id_map_clear(&r->map);
            for (int s = 0; s < L; s++) {
                const char *q = chunk[(size_t)s * n_chunks + (size_t)m * (size_t)T + (size_t)t];
                uint64_t n;
                memcpy(&n, q, sizeof n);
                const char *ids = q + sizeof n, *g = ids + n * sizeof(uint64_t);
                for (uint64_t i = 0; i < n; i++) {
                    uint64_t id;
                    memcpy(&id, ids + i * sizeof id, sizeof id);
                    int fresh;
                    int32_t row = id_map_get_or_put(&r->map, id, (int32_t)rows, &fresh);
                    float *dst = o->grads + (size_t)row * dim;
                    if (fresh) { /* first time: copy */
                        o->ids[rows++] = id;
                        memcpy(dst, g + i * dim * sizeof(float), dim * sizeof(float));
                        continue;
                    }
                    const char *src = g + i * dim * sizeof(float);
                    for (size_t e = 0; e < dim; e++) {
                        float v;
                        memcpy(&v, src + e * sizeof v, sizeof v);
                        dst[e] += v;
                    }
                }
            }
            for (size_t i = (size_t)o->shard_off[k] * dim; i < rows * dim; i++)
                o->grads[i] *= scale; /* the node's mean; the shards average the nodes' */
            m++;
        }
        o->shard_off[S] = (int)rows;
        o->n = (int)rows;
    }
    free(chunk);
    return &r->out;
}
