/* tessera: the user's command. `tessera train` builds the mpirun command line for a job, prints it
 * (to copy into a batch script) and runs it. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.h"
#include "commands.h"
#include "config.h"

#ifndef TESSERA_EXAMPLES_DIR
#define TESSERA_EXAMPLES_DIR "examples"
#endif
#ifndef MPIEXEC_PATH
#define MPIEXEC_PATH "mpirun"
#endif

#define MAX_ARGS 512

static const char *const main_help =
    "tessera: train a model across an MPI cluster with a parameter server\n"
    "\n"
    "usage: tessera COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  train [JOB] [options] [section.key=value ...]\n"
    "                 launch a training job with mpirun (see `tessera train --help`)\n"
    "  serve --checkpoint DIR [options]\n"
    "                 serve a checkpoint directory's models (see `tessera serve --help`)\n"
    "  status --endpoint E [--wait-ready S]\n"
    "                 a server's versions, replicas and counters as JSON\n"
    "  predict --endpoint E --input FILE [options]\n"
    "                 send inputs (IDX, CSV or JSON lines) and print predictions\n"
    "  loadtest --endpoint E [options]\n"
    "                 measure a server's throughput and latency percentiles\n"
    "  datagen ctr --rows N --out DIR [options]\n"
    "                 write a synthetic Criteo-format CTR dataset from a planted model\n"
    "  ckpt inspect DIR\n"
    "                 list the checkpoints of a run and the tensors of the newest\n"
    "  version        print the version\n"
    "  help           this text\n"
    "\n"
    "Programs started by `train`: tessera-scheduler (1), tessera-ps (S shards), tessera-worker (W).\n";

static const char *const train_help =
    "usage: tessera train [JOB] [options] [section.key=value ...]\n"
    "\n"
    "Launches 1 scheduler, S parameter-server shards and W workers with mpirun, printing the\n"
    "command line first so it can be copied into a batch script. Without JOB it runs the default\n"
    "job, examples/fashion_mlp (a 784-256-128-10 MLP on Fashion-MNIST).\n"
    "\n"
    "  JOB                  a job file (INI); a name such as fashion_mlp is looked up in the\n"
    "                       examples directory, and .ini may be left off\n"
    "  --servers S, -s S    parameter-server shards (default 2)\n"
    "  --workers W, -w W    workers (default 2)\n"
    "  --run-dir DIR        where summary.json, metrics.csv and params.bin go\n"
    "                       (default runs/JOBNAME-YYYYMMDD-HHMMSS)\n"
    "  --hostfile FILE      passed to mpirun (several nodes)\n"
    "  --mpirun PATH        the mpirun to use (default $TESSERA_MPIRUN, else " MPIEXEC_PATH ")\n"
    "  --mpirun-arg ARG     an extra mpirun argument; repeat for several\n"
    "  --checkpoint-every N write a checkpoint every N steps (checkpoint.every_steps;\n"
    "                       also checkpoint.every_seconds, checkpoint.keep = 3)\n"
    "  --resume auto|DIR    start from a checkpoint: auto = the newest complete one in\n"
    "                       RUN_DIR/checkpoints (none: from the beginning); DIR = a step\n"
    "                       directory, a checkpoints directory or a run directory\n"
    "  --max-restarts N     after a failure, relaunch and resume from the newest checkpoint,\n"
    "                       up to N times (needs --run-dir)\n"
    "  --term-grace S       seconds mpirun lets ranks finish a stop checkpoint after a\n"
    "                       SIGTERM that reached it too (batch systems; default 1, Open\n"
    "                       MPI's); longer also delays the cleanup after a rank dies\n"
    "  --serve              after training, keep the shards and serve the trained model from\n"
    "                       them (no reload) until SIGTERM/SIGINT; see tessera serve --help\n"
    "  --listen E           the serving endpoint with --serve (default tcp://127.0.0.1:5555)\n"
    "  --dry-run            print the command line and exit\n"
    "  section.key=value    override a job-file setting, e.g. job.epochs=3 job.staleness=2\n"
    "                       optimizer.lr=0.01 data.dir=/path (staleness: 0 = BSP, k = SSP,\n"
    "                       inf = ASP)\n"
    "\n"
    "Signals: SIGTERM or SIGUSR1 make the job checkpoint and stop with exit status 85 (\"please\n"
    "requeue\"; what Slurm's --signal and time limit send); SIGUSR2 asks for a checkpoint.\n"
    "Exit status: 0 when the job finished, 85 after a stop checkpoint, else mpirun's.\n"
    "Environment: TESSERA_LOG_LEVEL=debug|info|warn|error is passed to every rank.\n";

/* The directory holding this executable (and the tessera-* programs). */
static int exe_dir(char *out, size_t n) {
    char path[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", path, sizeof path - 1);
    if (len <= 0) return -1;
    path[len] = '\0';
    snprintf(out, n, "%s", dirname(path));
    return 0;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Resolves JOB: a path, a path without .ini, or a name in the examples directory. */
static int resolve_job(const char *job, char *out, size_t n) {
    const char *dir = getenv("TESSERA_EXAMPLES_DIR") ? getenv("TESSERA_EXAMPLES_DIR") : TESSERA_EXAMPLES_DIR;
    const char *base = strrchr(job, '/') ? strrchr(job, '/') + 1 : job;
    char cand[4][PATH_MAX];
    snprintf(cand[0], PATH_MAX, "%s", job);
    snprintf(cand[1], PATH_MAX, "%s.ini", job);
    snprintf(cand[2], PATH_MAX, "%s/%s", dir, base);
    snprintf(cand[3], PATH_MAX, "%s/%s.ini", dir, base);
    for (int i = 0; i < 4; i++)
        if (file_exists(cand[i])) {
            if (realpath(cand[i], out)) return 0;
            size_t len = strlen(cand[i]);
            if (len >= n) return -1;
            memcpy(out, cand[i], len + 1);
            return 0;
        }
    return -1;
}

static int parse_count(const char *opt, const char *v, int *out) {
    char *end = NULL;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < 1 || x > 100000) {
        fprintf(stderr, "tessera train: %s needs a positive integer, got '%s'\n", opt, v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

/* Prints argv as a shell command line, quoting what needs it. */
static void print_command(FILE *f, char **argv) {
    for (int i = 0; argv[i]; i++) {
        const char *a = argv[i];
        int plain = *a != '\0';
        for (const char *p = a; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%", *p))
                plain = 0;
        if (plain)
            fprintf(f, "%s%s", i ? " " : "", a);
        else {
            fprintf(f, "%s'", i ? " " : "");
            for (const char *p = a; *p; p++) {
                if (*p == '\'')
                    fputs("'\\''", f);
                else
                    fputc(*p, f);
            }
            fputc('\'', f);
        }
    }
    fputc('\n', f);
}

static void print_summary(const char *run_dir) {
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/summary.json", run_dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tessera: the job finished but %s is missing\n", path);
        return;
    }
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(j, "test_accuracy");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(j, "train_examples_per_sec");
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(j, "epochs");
    const cJSON *wall = cJSON_GetObjectItemCaseSensitive(j, "wall_s");
    const cJSON *auc = cJSON_GetObjectItemCaseSensitive(j, "test_auc");
    const cJSON *ll = cJSON_GetObjectItemCaseSensitive(j, "test_logloss");
    if (cJSON_IsNumber(auc) && cJSON_IsNumber(ll))
        printf("tessera: finished: test_auc=%.4f test_logloss=%.4f\n", auc->valuedouble, ll->valuedouble);
    if (cJSON_IsNumber(acc) && cJSON_IsNumber(eps) && cJSON_IsNumber(ep) && cJSON_IsNumber(wall))
        printf("tessera: finished: test_accuracy=%.4f epochs=%d train_examples_per_sec=%.0f wall_s=%.1f\n"
               "tessera: summary: %s\n",
               acc->valuedouble, ep->valueint, eps->valuedouble, wall->valuedouble, path);
    else
        fprintf(stderr, "tessera: cannot read %s\n", path);
    cJSON_Delete(j);
}

typedef struct {
    const char *job, *run_dir, *hostfile, *mpirun, *resume;
    const char *extra[64], *overrides[130];
    int n_extra, n_over, servers, workers, dry, max_restarts;
    char checkpoint_override[64];
    char term_grace[16];
    char listen_override[300];
} train_opts_t;

static int parse_train(int argc, char **argv, train_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->mpirun =
        getenv("TESSERA_MPIRUN") && getenv("TESSERA_MPIRUN")[0] ? getenv("TESSERA_MPIRUN") : MPIEXEC_PATH;
    o->servers = o->workers = 2;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(train_help, stdout);
            return 1;
        } else if (!strcmp(a, "--servers") || !strcmp(a, "-s")) {
            if (parse_count(a, v, &o->servers)) return -1;
            i++;
        } else if (!strcmp(a, "--workers") || !strcmp(a, "-w")) {
            if (parse_count(a, v, &o->workers)) return -1;
            i++;
        } else if (!strcmp(a, "--checkpoint-every")) {
            int every;
            if (parse_count(a, v, &every)) return -1;
            snprintf(o->checkpoint_override, sizeof o->checkpoint_override, "checkpoint.every_steps=%d",
                     every);
            o->overrides[o->n_over++] = o->checkpoint_override;
            i++;
        } else if (!strcmp(a, "--term-grace")) {
            int g;
            if (parse_count(a, v, &g)) return -1;
            snprintf(o->term_grace, sizeof o->term_grace, "%d", g);
            i++;
        } else if (!strcmp(a, "--max-restarts")) {
            char *end = NULL;
            long x = v ? strtol(v, &end, 10) : -1;
            if (!v || !end || *end || x < 0 || x > 10000) {
                fprintf(stderr, "tessera train: --max-restarts needs a number >= 0, got '%s'\n", v ? v : "");
                return -1;
            }
            o->max_restarts = (int)x;
            i++;
        } else if (!strcmp(a, "--run-dir") || !strcmp(a, "--hostfile") || !strcmp(a, "--mpirun") ||
                   !strcmp(a, "--mpirun-arg") || !strcmp(a, "--resume")) {
            if (!v) {
                fprintf(stderr, "tessera train: %s needs a value\n", a);
                return -1;
            }
            if (!strcmp(a, "--run-dir"))
                o->run_dir = v;
            else if (!strcmp(a, "--hostfile"))
                o->hostfile = v;
            else if (!strcmp(a, "--mpirun"))
                o->mpirun = v;
            else if (!strcmp(a, "--resume"))
                o->resume = v;
            else if (o->n_extra < 64)
                o->extra[o->n_extra++] = v;
            i++;
        } else if (!strcmp(a, "--serve")) {
            o->overrides[o->n_over++] = "serve.enabled=1";
        } else if (!strcmp(a, "--listen")) {
            if (!v) {
                fprintf(stderr, "tessera train: --listen needs an endpoint\n");
                return -1;
            }
            snprintf(o->listen_override, sizeof o->listen_override, "serve.listen=%s", v);
            o->overrides[o->n_over++] = o->listen_override;
            i++;
        } else if (!strcmp(a, "--dry-run")) {
            o->dry = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "tessera train: unknown option '%s' (see tessera train --help)\n", a);
            return -1;
        } else if (strchr(a, '=')) {
            if (o->n_over >= 128) {
                fprintf(stderr, "tessera train: too many overrides\n");
                return -1;
            }
            o->overrides[o->n_over++] = a;
        } else if (!o->job) {
            o->job = a;
        } else {
            fprintf(stderr, "tessera train: unexpected argument '%s' (one JOB only)\n", a);
            return -1;
        }
    }
    return 0;
}

/* Resolves --resume: `auto` is the newest complete checkpoint of the run directory (none: start
 * fresh); a step directory is used as it is; a run directory or checkpoint root gives its newest
 * complete checkpoint. Incomplete or corrupt checkpoints are skipped with a warning. Returns 0 with
 * `out` set (empty = start fresh), or -1 after printing why. */
static int resolve_resume(const char *resume, const char *root, char *out, size_t n) {
    char err[1024], path[PATH_MAX + 32];
    out[0] = '\0';
    if (!strcmp(resume, "auto")) {
        if (ckpt_find_latest(root, out, n, err, sizeof err)) {
            out[0] = '\0';
            ckpt_entry_t *v;
            int count, complete = 0;
            if (ckpt_list(root, &v, &count) == 0) {
                for (int i = 0; i < count; i++)
                    complete += v[i].complete;
                free(v);
            }
            if (complete) { /* committed checkpoints that cannot be read: do not silently start over */
                fprintf(stderr,
                        "tessera train: %d checkpoints under %s, none usable (see the warnings above); "
                        "move them away to start over, or name one with --resume DIR\n",
                        complete, root);
                return -1;
            }
            fprintf(stderr, "tessera: no complete checkpoint under %s: starting from the beginning\n", root);
        }
        return 0;
    }
    snprintf(path, sizeof path, "%s/manifest.h5", resume);
    if (file_exists(path)) {
        if (ckpt_validate(resume, err, sizeof err)) {
            fprintf(stderr, "tessera train: cannot resume from %s: %s\n", resume, err);
            return -1;
        }
        snprintf(out, n, "%s", resume);
        return 0;
    }
    snprintf(path, sizeof path, "%s/checkpoints", resume);
    struct stat st;
    const char *r = stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? path : resume;
    if (ckpt_find_latest(r, out, n, err, sizeof err)) {
        fprintf(stderr, "tessera train: cannot resume from %s: %s\n", resume, err);
        return -1;
    }
    return 0;
}

static volatile sig_atomic_t forward_sig, stop_asked;
static void on_train_signal(int sig) {
    forward_sig = sig;
    if (sig != SIGUSR2) stop_asked = 1;
}

/* Runs argv (mpirun) and waits. SIGTERM and SIGUSR1 become SIGUSR1 for mpirun, which passes it to
 * every rank: the job checkpoints and stops (exit 85) instead of dying; SIGUSR2 asks for a
 * checkpoint. Returns the exit status, or 128 + signal. */
static int run_mpirun(char **args) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("tessera: fork");
        return 1;
    }
    if (pid == 0) {
        execvp(args[0], args);
        fprintf(stderr, "tessera: cannot run %s: %s (is Open MPI installed? ./scripts/install-deps.sh)\n",
                args[0], strerror(errno));
        _exit(127);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_train_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    /* Ctrl-C reaches mpirun through the terminal's process group; mpirun forwards it to the ranks. */
    signal(SIGINT, SIG_IGN);
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, 0);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) break;
        if (forward_sig) {
            int sig = forward_sig == SIGUSR2 ? SIGUSR2 : SIGUSR1;
            fprintf(stderr, "tessera: %s received: asking the job to %s\n", strsignal(forward_sig),
                    sig == SIGUSR2 ? "checkpoint" : "checkpoint and stop");
            forward_sig = 0;
            kill(pid, sig);
        }
    }
    signal(SIGINT, SIG_DFL);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Whether the newest complete checkpoint under `root` was taken to stop the job, at or after `since`
 * (when SIGTERM reaches mpirun too, its exit status says "failed" though the ranks stopped cleanly). */
static int stopped_since(const char *root, time_t since) {
    char dir[PATH_MAX], err[1024];
    ckpt_manifest_t m;
    if (ckpt_find_latest(root, dir, sizeof dir, err, sizeof err) ||
        ckpt_read_manifest(dir, &m, err, sizeof err))
        return 0;
    return m.stopped && m.unix_time >= (int64_t)since;
}

static const char *describe_status(int rc, char *buf, size_t n) {
    if (rc > 128)
        snprintf(buf, n, "killed by signal %d (%s)", rc - 128, strsignal(rc - 128));
    else
        snprintf(buf, n, "mpirun exit status %d (a rank failed or was killed)", rc);
    return buf;
}

static int cmd_train(int argc, char **argv) {
    train_opts_t o;
    int prc = parse_train(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 2;
    char job_path[PATH_MAX];
    if (resolve_job(o.job ? o.job : "fashion_mlp", job_path, sizeof job_path)) {
        fprintf(stderr, "tessera train: job '%s' not found (looked for it as a file, with .ini, and in %s)\n",
                o.job ? o.job : "fashion_mlp", TESSERA_EXAMPLES_DIR);
        return 2;
    }
    /* Validate here, before starting any process, so mistakes cost nothing. */
    static job_config_t cfg;
    char err[1024];
    if (config_load_all(&cfg, job_path, o.n_over, (char **)o.overrides, err, sizeof err)) {
        fprintf(stderr, "tessera train: invalid job: %s\n", err);
        return 2;
    }
    if (((o.resume && !strcmp(o.resume, "auto")) || o.max_restarts > 0) && !o.run_dir) {
        fprintf(stderr, "tessera train: --resume auto and --max-restarts need --run-dir DIR (where the "
                        "checkpoints are)\n");
        return 2;
    }
    char default_run[PATH_MAX];
    const char *run_dir = o.run_dir;
    if (!run_dir) {
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        snprintf(default_run, sizeof default_run, "runs/%s-%04d%02d%02d-%02d%02d%02d", cfg.name,
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        run_dir = default_run;
    }
    char bindir[PATH_MAX], prog[3][PATH_MAX + 32];
    if (exe_dir(bindir, sizeof bindir)) {
        fprintf(stderr, "tessera: cannot find my own directory\n");
        return 1;
    }
    static const char *names[3] = {"tessera-scheduler", "tessera-ps", "tessera-worker"};
    for (int r = 0; r < 3; r++) {
        snprintf(prog[r], sizeof prog[r], "%s/%s", bindir, names[r]);
        if (access(prog[r], X_OK)) {
            fprintf(stderr, "tessera: %s is missing or not executable (build with cmake --build build)\n",
                    prog[r]);
            return 1;
        }
    }
    char root[PATH_MAX];
    ckpt_root(run_dir, &cfg, root, sizeof root);

    int rc = 0;
    for (int attempt = 0;; attempt++) {
        char resume_dir[PATH_MAX] = "";
        const char *resume = attempt > 0 ? "auto" : o.resume;
        if (resume && resolve_resume(resume, root, resume_dir, sizeof resume_dir)) return 2;
        /* A restart before this run committed anything starts again from where the user said. */
        if (attempt > 0 && !resume_dir[0] && o.resume && strcmp(o.resume, "auto") &&
            resolve_resume(o.resume, root, resume_dir, sizeof resume_dir))
            return 2;
        if (!o.dry) { /* never prune, overwrite or resume from a timeline this run leaves behind */
            int64_t keep = -1;
            ckpt_manifest_t m;
            char rdir[PATH_MAX], rroot[PATH_MAX], why[1024];
            int have_root = realpath(root, rroot) != NULL; /* no directory yet: nothing to set aside */
            size_t rlen = have_root ? strlen(rroot) : 0;
            if (have_root && resume_dir[0] && realpath(resume_dir, rdir) && !strncmp(rdir, rroot, rlen) &&
                rdir[rlen] == '/' && !ckpt_read_manifest(resume_dir, &m, why, sizeof why))
                keep = m.step;
            char moved_to[PATH_MAX];
            int moved = have_root ? ckpt_set_aside(rroot, keep, moved_to, sizeof moved_to) : 0;
            if (moved > 0)
                fprintf(stderr, "tessera: moved %d checkpoint(s) %s of this run directory to %s\n", moved,
                        keep >= 0 ? "newer than the one resumed" : "of an earlier start", moved_to);
            else if (moved < 0)
                fprintf(stderr, "tessera: warning: cannot set aside old checkpoints under %s: %s\n", root,
                        strerror(errno));
        }
        char *args[MAX_ARGS];
        int n = 0;
        char counts[3][16];
        args[n++] = (char *)o.mpirun;
        if (geteuid() == 0) args[n++] = "--allow-run-as-root";
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        if (!o.hostfile && 1 + o.servers + o.workers > cores) {
            args[n++] = "--oversubscribe";
            args[n++] = "--bind-to";
            args[n++] = "none";
        }
        /* Open MPI 4.1's orted (the daemon on every node but mpirun's) shares its hwloc topology
         * through a segment mapped at the "biggest" hole of its address space; with address-space
         * randomisation that write segfaults in about 1 launch in 14 (Debian 12's 4.1.4: 7 of 100
         * two-node launches through tests/integration/netns_lib.sh failed, 0 of 450 with this), and
         * the job never starts. Each rank then reads the topology itself, which costs milliseconds. */
        args[n++] = "--mca";
        args[n++] = "rtc_hwloc_vmhole";
        args[n++] = "none";
        if (o.hostfile) {
            args[n++] = "--hostfile";
            args[n++] = (char *)o.hostfile;
        }
        if (getenv("TESSERA_LOG_LEVEL")) {
            args[n++] = "-x";
            args[n++] = "TESSERA_LOG_LEVEL";
        }
        /* A batch system's SIGTERM also reaches mpirun, which passes it on and SIGKILLs the ranks after
         * 1 s; --term-grace gives them time to finish a stop checkpoint. It also delays the cleanup
         * after a rank dies, so it is off by default. */
        if (o.term_grace[0]) {
            args[n++] = "--mca";
            args[n++] = "odls_base_sigkill_timeout";
            args[n++] = o.term_grace;
        }
        for (int i = 0; i < o.n_extra; i++)
            args[n++] = (char *)o.extra[i];
        snprintf(counts[0], sizeof counts[0], "1");
        snprintf(counts[1], sizeof counts[1], "%d", o.servers);
        snprintf(counts[2], sizeof counts[2], "%d", o.workers);
        for (int r = 0; r < 3; r++) {
            if (r) args[n++] = ":";
            args[n++] = "-np";
            args[n++] = counts[r];
            args[n++] = prog[r];
            args[n++] = job_path;
            args[n++] = "--run-dir";
            args[n++] = (char *)run_dir;
            if (resume_dir[0]) {
                args[n++] = "--resume";
                args[n++] = resume_dir;
            }
            for (int i = 0; i < o.n_over; i++)
                args[n++] = (char *)o.overrides[i];
        }
        args[n] = NULL;
        fprintf(stderr, "tessera: running: ");
        print_command(stderr, args);
        if (o.dry) return 0;
        time_t launched = time(NULL);
        rc = run_mpirun(args);
        if (rc != 0 && rc != CKPT_EXIT_REQUEUE && stop_asked && stopped_since(root, launched))
            rc = CKPT_EXIT_REQUEUE;
        if (rc == 0) {
            print_summary(run_dir);
            return 0;
        }
        if (rc == CKPT_EXIT_REQUEUE) {
            fprintf(stderr,
                    "tessera: the job checkpointed and stopped as asked (exit status %d: requeue it, "
                    "or run again with --resume auto)\n",
                    rc);
            return rc;
        }
        char why[128];
        describe_status(rc, why, sizeof why);
        if (stop_asked || attempt >= o.max_restarts) {
            fprintf(stderr, "tessera: the job failed (%s); see the log above%s\n", why,
                    o.max_restarts ? "; no restarts left" : "");
            return rc;
        }
        fprintf(stderr, "tessera: restart %d of %d after failure: %s; resuming from the newest checkpoint\n",
                attempt + 1, o.max_restarts, why);
    }
}

/* tessera ckpt inspect DIR: lists the checkpoints under DIR (a run directory, a checkpoint root or
 * a step directory) and the tensors of the newest complete one. */
static int cmd_ckpt(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[0], "inspect") || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: tessera ckpt inspect DIR\n"
                        "  DIR: a run directory, its checkpoints/ directory, or one step-N directory\n");
        return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
    }
    return ckpt_inspect(argv[1], stdout);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        fputs(main_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("tessera %s\n", TESSERA_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(argv[1], "ckpt")) return cmd_ckpt(argc - 2, argv + 2);
    if (!strcmp(argv[1], "serve")) return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(argv[1], "status")) return cmd_status(argc - 2, argv + 2);
    if (!strcmp(argv[1], "predict")) return cmd_predict(argc - 2, argv + 2);
    if (!strcmp(argv[1], "loadtest")) return cmd_loadtest(argc - 2, argv + 2);
    if (!strcmp(argv[1], "datagen")) return cmd_datagen(argc - 2, argv + 2);
    fprintf(stderr, "tessera: unknown command '%s' (see tessera --help)\n", argv[1]);
    return 2;
}
