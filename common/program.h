/* What every Tessera program does first: MPI, logging, arguments, the job file. */
#ifndef TESSERA_PROGRAM_H
#define TESSERA_PROGRAM_H

#include "cluster.h"
#include "config.h"

#include <signal.h>

typedef struct {
    const char *job_path;
    const char *run_dir;
    const char *resume_dir; /* --resume: the checkpoint (step directory) to start from, or NULL */
    job_config_t cfg;
} program_t;

/* Set by signal handlers that program_start installs: SIGUSR1 and SIGTERM ask the job to checkpoint
 * and stop (what Slurm sends before a time limit or preemption); SIGUSR2 asks for a checkpoint. */
extern volatile sig_atomic_t program_stop_requested;
extern volatile sig_atomic_t program_checkpoint_requested;

/* Initialises MPI and logging, parses `PROG JOB [--run-dir DIR] [--resume STEP_DIR] [section.key=value ...]`
 * and loads
 * the job. On bad arguments or a bad job file every rank exits with status 2 after rank 0 has
 * printed the reason (all ranks parse the same job, so they agree). */
void program_start(program_t *p, role_t role, int *argc, char ***argv);

/* Every rank reports whether it failed; if any did, all finalize MPI and exit(1).
 * A collective over MPI_COMM_WORLD: every role's main runs the same world collectives in the same
 * order, exactly program_check_all("setup"), cluster_bootstrap, program_check_all("bootstrap"), and
 * none after that (later failures call MPI_Abort). */
void program_check_all(int failed, const char *what);

/* MPI_Finalize and the exit status. */
int program_finish(int status);

#endif
