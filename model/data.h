/* Datasets: IDX files (MNIST, Fashion-MNIST), gzip-compressed or plain, read with zlib. */
#ifndef TESSERA_DATA_H
#define TESSERA_DATA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t n;   /* examples */
    int dim;    /* features per example */
    uint8_t *x; /* n * dim */
    int32_t *y; /* n */
} dataset_t;

/* Loads up to `limit` examples (0 = all) of an IDX image file and its label file. Every label must be
 * below `classes`. Returns 0, or -TS_EIO / -TS_EINVAL with a message naming the file and the problem. */
int idx_load(dataset_t *d, const char *images_path, const char *labels_path, long limit, int classes,
             char *err, size_t errlen);
void dataset_free(dataset_t *d);

/* Writes examples idx[0..count) as floats ((v / 255) - mean) / std into x_out[count, dim] and their
 * labels into y_out. */
void dataset_gather(const dataset_t *d, const uint32_t *idx, size_t count, float mean, float std,
                    float *x_out, int32_t *y_out);

#endif
