#include "program.h"

#include <limits.h>
#include <malloc.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "log.h"

volatile sig_atomic_t program_stop_requested;
volatile sig_atomic_t program_checkpoint_requested;

static void on_signal(int sig) {
    if (sig == SIGUSR2)
        program_checkpoint_requested = 1;
    else
        program_stop_requested = 1;
}

/* Shards and workers receive tensors of tens of MB, and ZeroMQ mallocs every incoming message. glibc
 * serves such blocks (over 32 MB always, smaller ones often) with a fresh mmap that faults in and zeroes
 * one 4 KiB page at a time and is unmapped again on free: receiving a 40 MB slice cost more in page
 * faults than in copying. From the heap, never trimmed, the same blocks are reused step after step
 * (wide_mlp: 382 -> 542 examples/s; messages over 64 MB, received on ZeroMQ's I/O thread, still get
 * an mmap). The worker trims once when training starts (setup's temporaries). A user's malloc settings
 * (GLIBC_TUNABLES glibc.malloc.*, MALLOC_*_ variables) are left alone. */
static void malloc_for_messages(void) {
    const char *t = getenv("GLIBC_TUNABLES");
    if ((t && strstr(t, "glibc.malloc.")) || getenv("MALLOC_MMAP_MAX_") || getenv("MALLOC_TRIM_THRESHOLD_") ||
        getenv("MALLOC_MMAP_THRESHOLD_"))
        return;
    if (!mallopt(M_MMAP_MAX, 0) || !mallopt(M_TRIM_THRESHOLD, INT_MAX))
        fprintf(stderr, "tessera: mallopt refused; large messages will be slower\n");
}

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s JOB [--run-dir DIR] [--resume STEP_DIR] [section.key=value ...]\n"
            "Started by mpirun (see `tessera train --help`), one rank per process:\n"
            "  mpirun -np 1 tessera-scheduler JOB : -np S tessera-ps JOB : -np W tessera-worker JOB\n",
            prog);
}

void program_start(program_t *p, role_t role, int *argc, char ***argv) {
    memset(p, 0, sizeof *p);
    if (role == ROLE_PS || role == ROLE_WORKER) malloc_for_messages(); /* before MPI allocates */
    MPI_CHECK(MPI_Init(argc, argv));
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    log_init_from_env();
    log_set_identity(role_name(role), rank);

    int n = *argc;
    char **a = *argv;
    char **overrides = XCALLOC((size_t)n, sizeof *overrides);
    int n_over = 0, bad = 0;
    for (int i = 1; i < n && !bad; i++) {
        if (!strcmp(a[i], "--run-dir") && i + 1 < n)
            p->run_dir = a[++i];
        else if (!strcmp(a[i], "--resume") && i + 1 < n)
            p->resume_dir = a[++i];
        else if (!strcmp(a[i], "-h") || !strcmp(a[i], "--help"))
            bad = 1;
        else if (a[i][0] == '-')
            bad = 1;
        else if (!p->job_path && !strchr(a[i], '='))
            p->job_path = a[i];
        else
            overrides[n_over++] = a[i];
    }
    char err[1024] = "";
    int rc = bad || !p->job_path;
    if (rc)
        snprintf(err, sizeof err, "bad arguments");
    else
        rc = config_load_all(&p->cfg, p->job_path, n_over, overrides, err, sizeof err);
    free(overrides);
    if (rc) {
        if (rank == 0) {
            if (bad || !p->job_path)
                usage(a[0]);
            else
                log_error("invalid job: %s", err);
        }
        MPI_Finalize();
        exit(2);
    }
    if (!p->run_dir) p->run_dir = ".";
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void program_check_all(int failed, const char *what) {
    int any = 0;
    MPI_CHECK(MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (any) {
        if (!failed) log_error("stopping: another rank failed during %s", what);
        MPI_Finalize();
        exit(1);
    }
}

int program_finish(int status) {
    MPI_Finalize();
    return status;
}
