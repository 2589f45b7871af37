/* A serving shard: holds its row block of every tensor of one or more model versions (read-only)
 * and answers the router: LOAD a checkpoint as a version (in the background), UNLOAD it, PULL a
 * version's slices (the router caches small models), SPARSE_PULL rows of its tables, and INFER (x W_k^T for
 * its rows W_k of a weight too large to cache). See scheduler/router.h for the other side. */
#ifndef TESSERA_PS_SERVE_H
#define TESSERA_PS_SERVE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "sparse_table.h"

typedef struct serve_shard serve_shard_t;

typedef struct {
    int shard, n_shards;
    size_t max_message_bytes;
    int threads;                      /* BLAS threads for INFER */
    volatile sig_atomic_t *stop_flag; /* set by a signal handler (optional) */
} serve_shard_config_t;

/* A row block of one tensor, as a training shard hands it over. */
typedef struct {
    int tensor;
    uint64_t row_begin, rows, cols;
    float *p; /* malloc'd; ownership passes to the serving shard */
} serve_slice_t;

/* Creates a serving shard answering on `router` (a bound ROUTER socket, borrowed). */
serve_shard_t *serve_shard_create(const serve_shard_config_t *cfg, void *router, char *err, size_t errlen);

/* Serves `job`'s parameters from a training shard as `version` without reloading: takes ownership of
 * the slices' buffers and of the tables (tables[t] is set to NULL; on error the caller still frees
 * what is left). 0 or -TS_EINVAL. */
int serve_shard_adopt(serve_shard_t *s, uint64_t version, const job_config_t *job, serve_slice_t *slices,
                      int n_slices, sparse_table_t **tables, int n_tables, char *err, size_t errlen);

/* Serves until SHUTDOWN or the stop flag. 0, or -TS_EIO when the socket fails. */
int serve_shard_run(serve_shard_t *s);
void serve_shard_free(serve_shard_t *s);

#endif
