/* The worker's training loop. */
#ifndef TESSERA_TRAIN_H
#define TESSERA_TRAIN_H

#include "cluster.h"
#include "config.h"

/* Trains this worker's partition to the end of the job (or until a stop signal's checkpoint),
 * reporting to the scheduler; starts from the checkpoint `resume_dir` when not NULL. Collective over
 * the workers' communicator (evaluation). Returns 0, or a negative code after logging the reason. */
int worker_train(const job_config_t *cfg, const cluster_t *cl, const char *run_dir, const char *resume_dir);

#endif
