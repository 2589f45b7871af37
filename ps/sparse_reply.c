#include "sparse_reply.h"

#include <stdio.h>
#include <stdlib.h>

#include "check.h"

int sparse_ids_check(const Tessera__TensorDesc *d, size_t i, int n_tables, char *err, size_t errlen) {
    if (d->dtype != TESSERA__DTYPE__DTYPE_U64 || d->shape[1] != 1 || d->id >= (uint32_t)n_tables) {
        snprintf(err, errlen, "tensor %zu: expected the row ids (U64 [n, 1]) of one of the model's %d tables",
                 i, n_tables);
        return -TS_EINVAL;
    }
    return 0;
}

static void free_rows(void *data, void *hint) {
    (void)hint;
    free(data);
}

long sparse_pull_answer(void *sock, wire_msg_t *m, sparse_table_t **tables, int n_tables, int create,
                        uint64_t version, char *err, size_t errlen) {
    const Tessera__Header *h = m->hdr;
    size_t n = h->n_tensors;
    if (!n_tables) {
        snprintf(err, errlen, "this model has no sparse tables");
        return -TS_EINVAL;
    }
    Tessera__TensorDesc descs[n ? n : 1], *dptr[n ? n : 1];
    uint64_t shapes[2 * (n ? n : 1)];
    wire_buf_t bufs[n ? n : 1];
    size_t made = 0;
    long rows = 0;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const Tessera__TensorDesc *d = h->tensors[i];
        if ((rc = sparse_ids_check(d, i, n_tables, err, errlen))) break;
        if (wire_align_frame(&m->frames[i])) {
            snprintf(err, errlen, "out of memory");
            rc = -TS_ENOMEM;
            break;
        }
        sparse_table_t *t = tables[d->id];
        size_t k = (size_t)d->shape[0];
        int dim = sparse_table_dim(t);
        const uint64_t *ids = zmq_msg_data(&m->frames[i]);
        float *out = XMALLOC((k ? k : 1) * (size_t)dim * sizeof(float));
        if (create) {
            uint32_t *idx = XMALLOC((k ? k : 1) * sizeof *idx);
            rc = sparse_table_lookup(t, ids, k, 1, idx, err, errlen);
            if (!rc) sparse_table_gather(t, idx, k, out);
            free(idx);
        } else {
            rc = sparse_table_peek(t, ids, k, out, err, errlen);
        }
        wire_desc_init(&descs[i], &shapes[2 * i], d->id, NULL, 0, k, (uint64_t)dim);
        dptr[i] = &descs[i];
        bufs[i] = (wire_buf_t){out, descs[i].nbytes, free_rows, NULL};
        made++;
        rows += (long)k;
    }
    if (rc) {
        for (size_t i = 0; i < made; i++)
            free((void *)bufs[i].data);
        return rc;
    }
    Tessera__Header r;
    wire_header_init(&r, TESSERA__KIND__KIND_SPARSE_ROWS);
    r.request_id = h->request_id;
    r.model_version = version;
    r.n_tensors = n;
    r.tensors = dptr;
    wire_send(sock, &m->identity, &r, bufs, n);
    return rows;
}
