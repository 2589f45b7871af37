/* The scheduler's control plane for a training job: membership, progress, metrics and the summary,
 * and stopping the shards when every worker is done. */
#ifndef TESSERA_SCHEDULER_H
#define TESSERA_SCHEDULER_H

#include "cluster.h"
#include "config.h"

/* Serves on `router` (bound by the bootstrap) until all workers report DONE and no checkpoint is
 * half written, then stops the shards and writes RUN_DIR/summary.json; RUN_DIR/metrics.csv gets a
 * row per epoch (appended to when resuming from `resume_dir`). Commits checkpoints as their parts
 * arrive. Returns 0, CKPT_EXIT_REQUEUE when the job stopped on a signal after a checkpoint, or a
 * negative code after logging the reason. */
int scheduler_run(const job_config_t *cfg, const cluster_t *cl, void *zctx, void *router, const char *run_dir,
                  const char *resume_dir);

#endif
