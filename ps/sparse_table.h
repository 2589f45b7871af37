/* A shard's store for one sparse (embedding) table: the rows whose ids hash to this shard, created on
 * first touch (dynamic tables) or all at start (pre-sized tables), updated lazily by the table's
 * optimizer (only rows that received gradients), under the shard's memory budget. Not thread-safe: the
 * caller serialises all calls on a table (and on tables sharing a budget). */
#ifndef TESSERA_PS_SPARSE_TABLE_H
#define TESSERA_PS_SPARSE_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "optim.h"

/* Bytes a shard may hold (parameters, optimizer state and index), shared by its dense slices and all
 * its sparse tables. limit_bytes 0 = no limit. */
typedef struct {
    uint64_t limit_bytes;
    uint64_t used_bytes;
} mem_budget_t;

typedef struct {
    const char *name; /* for messages; borrowed, must outlive the table */
    uint32_t table;   /* the table's index in the model: part of the placement hash and the init stream */
    int dim;          /* floats per row */
    uint64_t
        rows; /* 0: ids are any uint64, rows created on first touch; N: ids < N only, all created at start */
    float bound;   /* initial values U(-bound, bound) */
    uint64_t seed; /* the job's seed */
    optim_t opt;   /* the table's optimizer; optim_slots(&opt) state slots per element */
    int shard, n_shards;
} sparse_table_cfg_t;

typedef struct sparse_table sparse_table_t;

/* The shard that owns row `id` of table `table`: XXH64 of the 12 bytes (table as uint32 LE, id as
 * uint64 LE) with seed 0, mod n_shards (>= 1). Stable across versions: checkpoints and clients rely on it. */
int sparse_shard_of(uint32_t table, uint64_t id, int n_shards);

/* Bytes one row costs against the budget: dim floats of parameters and of each of `slots` state slots,
 * the step counter (8), and its index share: id (8), accumulator slot (4) and hash-map slots (32: one
 * 16-byte slot at the map's typical load of 1/2). */
uint64_t sparse_row_bytes(int dim, int slots);

/* Creates the table (copies cfg; cfg->name is borrowed). `budget` (NULL = unlimited) is borrowed and must
 * outlive the table: rows are charged to it as they are created and sparse_table_free gives them back.
 * A pre-sized table (rows = N) counts the ids < N this shard owns, charges the budget for all of them,
 * and creates and initialises them now, in increasing id order; when they do not fit it fails with a
 * message naming the table, the bytes it needs on this shard, the budget and what is already used.
 * Returns NULL with the message on failure, errno = ENOMEM (budget or allocation) or EINVAL (bad cfg):
 * the code a pointer return cannot carry. */
sparse_table_t *sparse_table_create(const sparse_table_cfg_t *cfg, mem_budget_t *budget, char *err,
                                    size_t errlen);
/* Frees the table and returns its bytes to the budget. NULL is a no-op. */
void sparse_table_free(sparse_table_t *t);
/* Returns the table's bytes to its budget and leaves it without one (unlimited), so the table may
 * outlive the budget (a training shard handing its tables to serving). */
void sparse_table_release_budget(sparse_table_t *t);

/* The initial values of row `id`: init_uniform(out, dim, seed_derive(seed, 0x7e5e7a00u + table, id), 0, 0,
 * bound) (common/util.h): a function of (seed, table, id) only, so any shard count gives the same rows. */
void sparse_row_init(const sparse_table_cfg_t *cfg, uint64_t id, float *out);

/* Finds the rows of ids[0..n) and writes their indices into idx[0..n). With `create`, a missing row of a
 * dynamic table is created with its initial values (charging the budget). Returns 0, or on the first bad
 * id an error with a message naming the table and the id: an id >= rows of a pre-sized table
 * (-TS_EINVAL); an id this shard does not own (-TS_EINVAL); a missing row without `create` (-TS_EINVAL);
 * the budget exhausted (-TS_ENOMEM, message: table, budget, used, the row bytes); allocation failure
 * (-TS_ENOMEM). Rows created before an error stay; idx is written up to the bad id. Indices are stable
 * for the table's life (0 .. size-1 in creation order). */
int sparse_table_lookup(sparse_table_t *t, const uint64_t *ids, size_t n, int create, uint32_t *idx,
                        char *err, size_t errlen);

/* Copies the parameters of rows idx[0..n) into out[n, dim]. */
void sparse_table_gather(const sparse_table_t *t, const uint32_t *idx, size_t n, float *out);

/* Adds g[n, dim] into this step's gradient of rows idx[0..n) (the first add of a row copies). Calls are
 * summed in call order, so a caller feeding workers in a fixed order gets reproducible sums. The
 * accumulator (not charged to the budget) grows as needed; running out of memory for it aborts. */
void sparse_table_accumulate(sparse_table_t *t, const uint32_t *idx, size_t n, const float *g);

/* One lazy optimizer step: every row accumulated since the last apply is updated with its gradient
 * times gscale (optim_apply over its dim floats, with the row's own 1-based step count, incremented) in
 * the order the rows were first accumulated; the accumulator is then empty. Returns rows updated. */
size_t sparse_table_apply(sparse_table_t *t, float gscale);

/* Rows held, and access to row i (0 <= i < size) for checkpoints: its id, parameters, state slots (NULL
 * when unused) and step count. The pointers are into the table and valid until the next row is created. */
size_t sparse_table_size(const sparse_table_t *t);
void sparse_table_row(const sparse_table_t *t, size_t i, uint64_t *id, float **p, float **s0, float **s1,
                      long *steps);

/* Restore: inserts (or overwrites) row `id` with the given values (s0/s1 may be NULL = zeros; ignored
 * when the optimizer has no such slot), charging the budget for a new row. Same errors as lookup with
 * create (a pre-sized table holds all its rows already, so put only overwrites there). */
int sparse_table_put(sparse_table_t *t, uint64_t id, const float *p, const float *s0, const float *s1,
                     long steps, char *err, size_t errlen);

/* Floats per row. */
int sparse_table_dim(const sparse_table_t *t);

/* The rows of ids[0..n) into out[n, dim] without creating any: rows not held (never touched) get their
 * initial values, as a row created now would. 0, or -TS_EINVAL with lookup's message for an id out of
 * range of a pre-sized table or owned by another shard. */
int sparse_table_peek(sparse_table_t *t, const uint64_t *ids, size_t n, float *out, char *err, size_t errlen);

/* Restores the table's rows from checkpoint STEP_DIR written by `n_files` shards (ckpt.h, tables/NAME):
 * with the same shard count only this shard's file is read; otherwise every file is, and the rows this
 * shard owns now are kept. `optimizer` is the one the checkpoint's rows were trained with (their state
 * slots are kept when the table's optimizer has them). *kept (may be NULL) gets the rows put. 0, or
 * an error naming the file (-TS_EIO / -TS_EINVAL) or the budget (-TS_ENOMEM). */
int sparse_table_restore(sparse_table_t *t, const char *step_dir, int n_files, const char *optimizer,
                         size_t *kept, char *err, size_t errlen);

#endif
