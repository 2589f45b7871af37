/* Checkpoints in HDF5. Layout under the checkpoint root (RUN_DIR/checkpoints by default):
 *
 *   step-000000468/shard-0.h5 ...   one file per shard: a group per tensor it holds rows of, with
 *                                   datasets `param` and the optimizer slots, attributes
 *                                   logical_shape, row_begin, row_end, optimizer_steps
 *   step-000000468/worker-0.h5 ...  one file per worker: data-loader position (attributes)
 *   step-000000468/manifest.h5      written last, by the scheduler: a checkpoint without it does not
 *                                   exist
 *   latest                          "step-000000468", replaced atomically after the manifest
 *
 * Every file is written to NAME.tmp and renamed, so a crash never leaves a partial file under its
 * final name. Files are plain HDF5 that h5py opens. */
#ifndef TESSERA_CKPT_H
#define TESSERA_CKPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

/* Exit status of a job stopped by SIGUSR1/SIGTERM after writing a checkpoint: please requeue. */
#define CKPT_EXIT_REQUEUE 85

typedef struct {
    int64_t step; /* the clock of the cut: every update of clocks < step is in */
    int n_shards, n_workers;
    int64_t unix_time;
    int stopped; /* taken because the job was asked to stop */
    char version[32];
    char optimizer[16]; /* the optimizer whose state the shard files hold */
} ckpt_manifest_t;

/* A tensor's slice in memory, as a shard writes it. */
typedef struct {
    const char *name;
    uint64_t rows, cols; /* logical shape */
    uint64_t row_begin, row_end;
    const float *slot[3]; /* param, then the optimizer slots (NULL past the last) */
    long steps;           /* optimizer steps applied */
} ckpt_slice_t;

/* One sparse table's rows held by a shard, as a checkpoint stores them: group tables/NAME of the
 * shard file, datasets ids (uint64 [n]), param and the optimizer slots (float32 [n, dim]), steps
 * (int64 [n], each row's optimizer steps); attributes dim, rows (0: a dynamic table), optimizer.
 * Rows are in no particular order; a row's shard is a function of (table, id, shard count). */
typedef struct {
    const char *name;
    int dim;
    uint64_t rows;      /* the table's declared size; 0 = ids are any uint64 */
    char optimizer[16]; /* the table's own optimizer */
    uint64_t n;         /* rows held */
    uint64_t *ids;      /* [n] */
    float *slot[3];     /* [n, dim] each: param, then the optimizer slots (NULL past the last) */
    int64_t *steps;     /* [n] */
} ckpt_table_t;

/* Frees the arrays of a table read by ckpt_read_table (not `name`). NULL is a no-op. */
void ckpt_table_free(ckpt_table_t *t);

/* A worker's position in its data. */
typedef struct {
    int64_t clock;
    int epoch;
    int64_t position; /* steps into the epoch */
    uint64_t examples;
    double train_seconds;
} ckpt_worker_state_t;

/* Names of the optimizer slots of `opt_type` (sgd: none; momentum: momentum_buffer; adagrad: sum;
 * adam/adamw: exp_avg, exp_avg_sq, as PyTorch names them). Returns how many. */
int ckpt_slot_names(const char *opt_type, const char *names[2]);

/* The checkpoint root of a run: [checkpoint] dir, or RUN_DIR/checkpoints. */
void ckpt_root(const char *run_dir, const job_config_t *cfg, char *out, size_t n);
/* ROOT/step-NNNNNNNNN, the directory of checkpoint `step`. */
void ckpt_step_dir(const char *root, int64_t step, char *out, size_t n);

/* Writes shard `shard`'s slices to STEP_DIR/shard-K.h5 (through a .tmp file, fsync'd); *bytes gets the
 * tensor bytes written and *direct_bytes (either may be NULL) those that went with O_DIRECT
 * (checkpoint.direct_io: it needs the slots' data 4 KiB-aligned). Returns 0 or -TS_EIO with a message.
 * Safe to call from a background thread (HDF5 is used by one thread at a time in a process). */
int ckpt_write_shard(const char *step_dir, int shard, int n_shards, int64_t step, const job_config_t *cfg,
                     const ckpt_slice_t *slices, int n_slices, const ckpt_table_t *tables, int n_tables,
                     uint64_t *bytes, uint64_t *direct_bytes, char *err, size_t errlen);

/* Reads the rows of table `name` held in STEP_DIR/shard-FILE.h5 into *out (arrays malloc'd: free with
 * ckpt_table_free; out->name is set to `name`). The file must hold the table with `dim` floats per row
 * and the same optimizer (`optimizer`); of its state slots only the first `max_slots` are read (0:
 * parameters only, as serving wants). 0, or -TS_EIO / -TS_EINVAL with a message naming the file and
 * the table. */
int ckpt_read_table(const char *step_dir, int file, const char *name, int dim, const char *optimizer,
                    int max_slots, ckpt_table_t *out, char *err, size_t errlen);

/* Writes / reads STEP_DIR/worker-W.h5 (a worker's position). 0 or -TS_EIO with a message naming
 * the file. */
int ckpt_write_worker(const char *step_dir, int worker, const ckpt_worker_state_t *st, char *err,
                      size_t errlen);
int ckpt_read_worker(const char *step_dir, int worker, ckpt_worker_state_t *st, char *err, size_t errlen);

/* Writes STEP_DIR/manifest.h5 (the commit point), then ROOT/latest. */
int ckpt_write_manifest(const char *root, const ckpt_manifest_t *m, const job_config_t *cfg, char *err,
                        size_t errlen);
int ckpt_read_manifest(const char *step_dir, ckpt_manifest_t *m, char *err, size_t errlen);

/* Reads the job a checkpoint was written by (the manifest's `job` attribute, with its overrides). */
int ckpt_read_job(const char *step_dir, job_config_t *cfg, char *err, size_t errlen);

/* Reads rows [row_begin, row_end) of slot `slot` (0 = param) of tensor `name` into `out` from the
 * shard files of a checkpoint written by `n_files` shards, whatever their row ranges: restoring
 * with another shard count works. *steps gets the optimizer step count. 0, or -TS_EIO / -TS_EINVAL
 * naming the file and tensor when rows are missing or shapes disagree. */
int ckpt_read_rows(const char *step_dir, int n_files, const char *name, uint64_t cols, int slot,
                   uint64_t row_begin, uint64_t row_end, float *out, long *steps, char *err, size_t errlen);

/* Checks that a checkpoint is complete and readable: the manifest, every shard file and every worker
 * file open and agree on the step. 0 or -TS_EIO with the first problem. */
int ckpt_validate(const char *step_dir, char *err, size_t errlen);

typedef struct {
    int64_t step;
    int complete;
    int64_t unix_time;
    uint64_t bytes;
    char dir[4096];
} ckpt_entry_t;

/* The step-* directories under `root`, newest first; *out is malloc'd (free it). 0 or -TS_EIO. */
int ckpt_list(const char *root, ckpt_entry_t **out, int *n);

/* The newest complete checkpoint that validates, into `out`. Incomplete and corrupt ones are skipped
 * with a warning naming the problem. 0, or -TS_EINVAL when there is none. */
int ckpt_find_latest(const char *root, char *out, size_t n, char *err, size_t errlen);

/* Moves the step directories under `root` newer than `keep_step` (all of them when keep_step < 0)
 * into ROOT/abandoned-TIME/, and points `latest` at keep_step (or removes it): a run that starts
 * afresh or rewinds never prunes, overwrites or resumes from the timeline it left. Returns how many
 * were moved, or -TS_EIO. */
int ckpt_set_aside(const char *root, int64_t keep_step, char *moved_to, size_t n);

/* Deletes all but the newest `keep` complete checkpoints, and incomplete ones older than the newest
 * complete one. Never deletes the newest complete checkpoint. */
void ckpt_prune(const char *root, int keep);

/* Prints the checkpoints under `dir` (a run directory, a checkpoint root or a step directory) with
 * step, time, state and size, then the tensors of the newest complete one (or of `dir` itself when
 * it is a step directory): logical shape, and each shard's rows and slots. Returns 0, or 1 when
 * there is nothing to show. */
int ckpt_inspect(const char *dir, FILE *out);

#endif
