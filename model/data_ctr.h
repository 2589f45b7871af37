/* CTR datasets: Criteo-style TSV (label, integer columns, hex categoricals) and libsvm/svmlight text,
 * gzip-compressed or plain, read with zlib into dense features plus one bag of ids per slot. */
#ifndef TESSERA_DATA_CTR_H
#define TESSERA_DATA_CTR_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t n;             /* examples */
    int n_dense, n_slots; /* dense features and categorical slots per example */
    float *dense;         /* [n, n_dense] */
    int32_t *label;       /* [n], 0 or 1 */
    uint64_t *
        bag_off; /* [n * n_slots + 1]: bag (i, s) holds ids[bag_off[i*n_slots+s] .. bag_off[i*n_slots+s+1]) */
    uint64_t *ids;  /* all bags' ids */
    float *wts;     /* one weight per id, or NULL when every weight is 1 (criteo) */
    uint64_t *line; /* [n]: the 1-based line of the file each example came from */
    char path[512]; /* the file, for messages */
    size_t skipped; /* malformed lines skipped (skip_bad) */
    size_t n_read;  /* valid examples in the file (all parts; n of them are this part's) */
} ctr_dataset_t;

typedef struct {
    const char *format; /* "criteo" or "libsvm" */
    int n_dense;  /* criteo: integer columns (13 in real Criteo); libsvm: indices 1..n_dense are dense values
                   */
    int n_slots;  /* criteo: categorical columns (26 in real Criteo); libsvm: must be 1 */
    int skip_bad; /* 1: a malformed line is skipped and counted (the first 5 logged with log_warn as
                     PATH:LINE: why); 0: it is an error */
    long limit;   /* read at most this many examples (0 = all) */
    /* Keep only part `part` of `n_parts` (n_parts > 1): the valid examples whose index in the file is
     * part mod n_parts, so each of n_parts workers holds its own share in memory. Every line is still
     * read and checked. 0 or 1: keep all. */
    int part, n_parts;
} ctr_read_opts_t;

/* Longest line accepted, without its newline; a longer one is an error even with skip_bad. */
#define CTR_MAX_LINE (1 << 20)

/* Reads a whole file (plain or gzip, through zlib's gzopen so both work) into *d, which the caller
 * frees with ctr_dataset_free (also after an error: *d is then empty).
 * Criteo: per line, TAB-separated: label (0 or 1), n_dense integers (dense value log(1 + max(x, 0))),
 * n_slots hex categoricals of at most 16 digits (one id each); an empty integer is 0, an empty
 * categorical an empty bag. libsvm: `label idx:val ...` (label > 0 is 1; idx >= 1; val finite; a
 * `# comment` may end the line); indices 1..n_dense set dense[idx - 1], larger ones add id idx with
 * weight val to slot 0. Blank lines are malformed. A file without examples is an error.
 * Returns 0, or -TS_EIO (cannot open or read), -TS_EINVAL (bad options or data) or -TS_ENOMEM, with
 * err = "PATH:LINE: what is wrong" (e.g. "data/train.tsv:17: expected 40 tab-separated fields (label,
 * 13 integer, 26 categorical), got 39"). */
int ctr_load(ctr_dataset_t *d, const char *path, const ctr_read_opts_t *o, char *err, size_t errlen);
void ctr_dataset_free(ctr_dataset_t *d); /* NULL-safe, zeroes */

#endif
