#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "check.h"
#include "data.h"

/* Reads exactly n bytes; 0 or -TS_EIO with a message. */
static int read_exact(gzFile f, void *buf, size_t n, const char *path, const char *what, char *err,
                      size_t errlen) {
    size_t done = 0;
    while (done < n) {
        unsigned chunk = (n - done) > (1u << 30) ? (1u << 30) : (unsigned)(n - done);
        int got = gzread(f, (char *)buf + done, chunk);
        if (got <= 0) {
            int zerr = 0;
            const char *msg = gzerror(f, &zerr);
            snprintf(err, errlen, "%s: truncated or unreadable while reading %s (%zu of %zu bytes): %s", path,
                     what, done, n, zerr ? msg : "unexpected end of file");
            return -TS_EIO;
        }
        done += (size_t)got;
    }
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Opens an IDX file and reads its header: `ndims` dimensions of unsigned bytes. */
static gzFile idx_open(const char *path, int ndims, uint32_t *dims, char *err, size_t errlen) {
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno ? errno : ENOENT));
        return NULL;
    }
    gzbuffer(f, 1 << 20);
    uint8_t head[4 + 4 * 3];
    if (read_exact(f, head, 4 + 4 * (size_t)ndims, path, "the IDX header", err, errlen)) goto fail;
    if (head[0] || head[1] || head[2] != 0x08 || head[3] != ndims) {
        snprintf(err, errlen,
                 "%s: not an IDX file of unsigned bytes with %d dimensions (magic %02x%02x%02x%02x)", path,
                 ndims, head[0], head[1], head[2], head[3]);
        goto fail;
    }
    for (int i = 0; i < ndims; i++)
        dims[i] = be32(head + 4 + 4 * i);
    return f;
fail:
    gzclose(f);
    return NULL;
}

int idx_load(dataset_t *d, const char *images_path, const char *labels_path, long limit, int classes,
             char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    uint32_t idims[3], ldims[1];
    uint8_t *labels = NULL;
    gzFile fi = idx_open(images_path, 3, idims, err, errlen);
    if (!fi) return -TS_EIO;
    gzFile fl = idx_open(labels_path, 1, ldims, err, errlen);
    if (!fl) {
        gzclose(fi);
        return -TS_EIO;
    }
    int rc = -TS_EINVAL;
    if (idims[0] != ldims[0]) {
        snprintf(err, errlen, "%s has %u images but %s has %u labels", images_path, idims[0], labels_path,
                 ldims[0]);
        goto out;
    }
    if (idims[1] == 0 || idims[2] == 0 || (uint64_t)idims[1] * idims[2] > (1u << 24)) {
        snprintf(err, errlen, "%s: implausible image size %ux%u", images_path, idims[1], idims[2]);
        goto out;
    }
    d->n = idims[0];
    if (limit > 0 && (size_t)limit < d->n) d->n = (size_t)limit;
    d->dim = (int)(idims[1] * idims[2]);
    d->x = XMALLOC(d->n * (size_t)d->dim);
    d->y = XMALLOC(d->n * sizeof *d->y);
    labels = XMALLOC(d->n);
    rc = read_exact(fi, d->x, d->n * (size_t)d->dim, images_path, "images", err, errlen);
    if (!rc) rc = read_exact(fl, labels, d->n, labels_path, "labels", err, errlen);
    for (size_t i = 0; !rc && i < d->n; i++) {
        if (labels[i] >= classes) {
            snprintf(err, errlen, "%s: label %u of example %zu is not below the model's %d classes",
                     labels_path, labels[i], i, classes);
            rc = -TS_EINVAL;
        }
        d->y[i] = labels[i];
    }
out:
    free(labels);
    gzclose(fi);
    gzclose(fl);
    if (rc) dataset_free(d);
    return rc;
}

void dataset_free(dataset_t *d) {
    if (!d) return;
    free(d->x);
    free(d->y);
    memset(d, 0, sizeof *d);
}

void dataset_gather(const dataset_t *d, const uint32_t *idx, size_t count, float mean, float std,
                    float *x_out, int32_t *y_out) {
    float lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = ((float)v / 255.0f - mean) / std;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *src = d->x + (size_t)idx[i] * (size_t)d->dim;
        float *dst = x_out + i * (size_t)d->dim;
        for (int j = 0; j < d->dim; j++)
            dst[j] = lut[src[j]];
        y_out[i] = d->y[idx[i]];
    }
}
