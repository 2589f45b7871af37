/* tessera serve: starts S x R serving shards and the router as local processes, supervises them (a
 * replica that dies is restarted and rejoins), and stops them on SIGTERM or SIGINT.
 * tessera status: asks a router for its status, optionally waiting until it is ready. */
#include <errno.h>
#include <fcntl.h>
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

#include "commands.h"
#include "config.h"
#include "tessera_client.h"
#include "util.h"

#define MAX_PROCS 257
#define ARG_LEN   (PATH_MAX + 128)

static const char serve_help[] =
    "usage: tessera serve --checkpoint DIR [options] [serve.key=value ...]\n"
    "\n"
    "Loads the checkpoints under DIR into S serving shards (each with R replicas) and starts the\n"
    "router that clients talk to (tessera predict, tessera loadtest, the C and Python clients).\n"
    "Every complete checkpoint is a model version; new ones appearing in DIR are loaded beside the\n"
    "serving one and swapped in when fully loaded. A replica that dies is restarted and rejoins.\n"
    "\n"
    "  --checkpoint DIR   a run directory, its checkpoints/ directory, or one step-N directory\n"
    "                     (which pins that version)\n"
    "  --servers S, -s S  serving shards (default 2)\n"
    "  --replicas R       replicas of each shard (default 1)\n"
    "  --listen E         the router's endpoint (default tcp://127.0.0.1:5555)\n"
    "  --model NAME       the served model's name (default: the job's [job] name)\n"
    "  --run-dir DIR      logs of the router and shards (default runs/serve-YYYYMMDD-HHMMSS)\n"
    "  --threads T        BLAS threads of the router and each shard (default 1)\n"
    "  serve.key=value    versions=latest|latest:K|N,M  max_batch=64  max_delay_us=0\n"
    "                     max_queue=1024  deadline_ms=10000  cache_mb=1024  poll_s=1\n"
    "                     max_request_mb=64  replica_timeout_ms=300\n"
    "\n"
    "Stop with SIGTERM or Ctrl-C. Exit status 0 after a clean stop.\n";

typedef struct {
    pid_t pid;
    char *argv[24];
    char log[ARG_LEN];
    const char *what;
    int shard, replica;
    double started;
    int quick_deaths; /* consecutive deaths within 2 s of starting */
    int restarts;
} proc_t;

static volatile sig_atomic_t stop_sig;
static void on_stop(int sig) {
    stop_sig = sig;
}

static pid_t spawn(proc_t *p) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (p->log[0]) {
            int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        signal(SIGINT, SIG_IGN); /* Ctrl-C reaches the whole group: let `serve` stop them in order */
        execv(p->argv[0], p->argv);
        fprintf(stderr, "tessera serve: cannot run %s: %s\n", p->argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    p->started = now_s();
    return pid;
}

static const char *exit_reason(int st, char *buf, size_t n) {
    if (WIFSIGNALED(st))
        snprintf(buf, n, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, n, "exit status %d", WEXITSTATUS(st));
    return buf;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The checkpoint root to watch, and the version to pin when DIR is one step directory. */
static int resolve_checkpoint(const char *dir, char *root, size_t n, long long *pin) {
    char probe[PATH_MAX];
    *pin = 0;
    if (!is_dir(dir)) {
        fprintf(stderr, "tessera serve: --checkpoint %s: no such directory\n", dir);
        return -1;
    }
    snprintf(probe, sizeof probe, "%s/manifest.h5", dir);
    if (access(probe, F_OK) == 0) {
        char copy[PATH_MAX];
        snprintf(copy, sizeof copy, "%s", dir);
        const char *base = basename(copy);
        if (sscanf(base, "step-%lld", pin) != 1) {
            fprintf(stderr, "tessera serve: %s has a manifest but is not named step-N\n", dir);
            return -1;
        }
        snprintf(copy, sizeof copy, "%s", dir);
        snprintf(root, n, "%s", dirname(copy));
        return 0;
    }
    snprintf(probe, sizeof probe, "%s/checkpoints", dir);
    snprintf(root, n, "%s", is_dir(probe) ? probe : dir);
    return 0;
}

int cmd_serve(int argc, char **argv) {
    const char *ckpt = NULL, *listen = "tcp://127.0.0.1:5555", *model = NULL, *run_dir = NULL;
    long shards = 2, replicas = 1, threads = 1;
    const char *overrides[64];
    int n_over = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(serve_help, stdout);
            return 0;
        } else if (!strcmp(a, "--checkpoint") && v) {
            ckpt = argv[++i];
        } else if ((!strcmp(a, "--servers") || !strcmp(a, "-s")) && v) {
            if (cli_parse_long("tessera serve", a, argv[++i], 1, 256, &shards)) return 2;
        } else if (!strcmp(a, "--replicas") && v) {
            if (cli_parse_long("tessera serve", a, argv[++i], 1, 256, &replicas)) return 2;
        } else if (!strcmp(a, "--listen") && v) {
            listen = argv[++i];
        } else if (!strcmp(a, "--model") && v) {
            model = argv[++i];
        } else if (!strcmp(a, "--run-dir") && v) {
            run_dir = argv[++i];
        } else if (!strcmp(a, "--threads") && v) {
            if (cli_parse_long("tessera serve", a, argv[++i], 1, 1024, &threads)) return 2;
        } else if (!strncmp(a, "serve.", 6) && strchr(a, '=') && n_over < 64) {
            overrides[n_over++] = a;
        } else {
            fprintf(stderr, "tessera serve: unexpected argument '%s'\n\n%s", a, serve_help);
            return 2;
        }
    }
    if (!ckpt || shards * replicas + 1 > MAX_PROCS) {
        fprintf(stderr, "tessera serve: %s\n\n%s",
                !ckpt ? "--checkpoint DIR is required" : "--servers x --replicas must be at most 256",
                serve_help);
        return 2;
    }
    /* Check the settings here, where a mistake can be reported plainly. */
    job_config_t *probe = calloc(1, sizeof *probe);
    config_defaults(probe);
    char err[1024];
    for (int i = 0; i < n_over; i++)
        if (config_apply_override(probe, overrides[i], err, sizeof err)) {
            fprintf(stderr, "tessera serve: %s\n", err);
            free(probe);
            return 2;
        }
    if (config_check_serve(probe, err, sizeof err)) {
        fprintf(stderr, "tessera serve: %s\n", err);
        free(probe);
        return 2;
    }
    free(probe);
    char root[PATH_MAX], rd[PATH_MAX], exe[PATH_MAX], bindir[PATH_MAX / 2];
    long long pin = 0;
    if (resolve_checkpoint(ckpt, root, sizeof root, &pin)) return 2;
    if (!run_dir) {
        char stamp[32];
        time_t t = time(NULL);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&t));
        snprintf(rd, sizeof rd, "runs/serve-%s", stamp);
        run_dir = rd;
    }
    if (strlen(run_dir) > PATH_MAX - 64) {
        fprintf(stderr, "tessera serve: --run-dir path too long\n");
        return 2;
    }
    if (mkdir_p(run_dir)) {
        fprintf(stderr, "tessera serve: cannot create %s: %s\n", run_dir, strerror(errno));
        return 1;
    }
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) {
        fprintf(stderr, "tessera serve: cannot find my own executable\n");
        return 1;
    }
    exe[len] = '\0';
    snprintf(bindir, sizeof bindir, "%s", dirname(exe));

    /* Shards listen on Unix sockets in a private directory (short paths: ipc:// allows ~100 bytes). */
    char sockdir[64];
    snprintf(sockdir, sizeof sockdir, "/tmp/tessera-serve-%d", (int)getpid());
    if (mkdir_p(sockdir)) {
        fprintf(stderr, "tessera serve: cannot create %s: %s\n", sockdir, strerror(errno));
        return 1;
    }
    int n = shards * replicas;
    proc_t *procs = calloc((size_t)n + 1, sizeof *procs);
    static char strs[MAX_PROCS][6][ARG_LEN];
    size_t eplen = (size_t)n * 80 + 1;
    char *endpoints = calloc(1, eplen);
    char tbuf[16], sbuf[16];
    snprintf(tbuf, sizeof tbuf, "%ld", threads);
    snprintf(sbuf, sizeof sbuf, "%ld", shards);
    for (int i = 0; i < n; i++) {
        proc_t *p = &procs[i];
        p->shard = i / replicas;
        p->replica = i % replicas;
        p->what = "shard";
        snprintf(strs[i][0], ARG_LEN, "%s/tessera-ps", bindir);
        snprintf(strs[i][1], ARG_LEN, "ipc://%s/shard-%d-%d.sock", sockdir, p->shard, p->replica);
        snprintf(strs[i][2], ARG_LEN, "%d", p->shard);
        snprintf(p->log, sizeof p->log, "%s/shard-%d-%d.log", run_dir, p->shard, p->replica);
        char *args[] = {strs[i][0], "--serve", "--listen",  strs[i][1], "--shard", strs[i][2],
                        "--shards", sbuf,      "--threads", tbuf,       NULL};
        memcpy(p->argv, args, sizeof args);
        size_t used = strlen(endpoints);
        snprintf(endpoints + used, eplen - used, "%s%s", i ? "," : "", strs[i][1]);
    }
    proc_t *router = &procs[n];
    router->what = "router";
    snprintf(strs[n][0], ARG_LEN, "%s/tessera-router", bindir);
    snprintf(strs[n][1], ARG_LEN, "serve.listen=%s", listen);
    snprintf(strs[n][2], ARG_LEN, "serve.threads=%ld", threads);
    snprintf(strs[n][3], ARG_LEN, "serve.versions=%lld", pin);
    snprintf(strs[n][4], ARG_LEN, "%ld", replicas);
    int a = 0;
    router->argv[a++] = strs[n][0];
    router->argv[a++] = "--shards";
    router->argv[a++] = sbuf;
    router->argv[a++] = "--replicas";
    router->argv[a++] = strs[n][4];
    router->argv[a++] = "--shard-endpoints";
    router->argv[a++] = endpoints;
    router->argv[a++] = "--checkpoint";
    router->argv[a++] = root;
    router->argv[a++] = strs[n][1];
    router->argv[a++] = strs[n][2];
    if (pin) router->argv[a++] = strs[n][3];
    if (model) {
        router->argv[a++] = "--model";
        router->argv[a++] = (char *)model;
    }
    for (int i = 0; i < n_over && a < 22; i++)
        router->argv[a++] = (char *)overrides[i];
    router->argv[a] = NULL;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 0; i <= n; i++)
        if (spawn(&procs[i]) < 0) {
            fprintf(stderr, "tessera serve: fork failed: %s\n", strerror(errno));
            stop_sig = SIGTERM;
        }
    fprintf(
        stderr,
        "tessera serve: %ld shard(s) x %ld replica(s) serving %s%s%s on %s; logs in %s (router on stderr)\n",
        shards, replicas, root, pin ? " pinned to step " : "", pin ? strs[n][3] + 15 : "", listen, run_dir);

    int status = 0;
    while (!stop_sig) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid <= 0) {
            /* restart what is due */
            for (int i = 0; i <= n; i++) {
                proc_t *p = &procs[i];
                if (p->pid == 0 && now_s() >= p->started) {
                    if (spawn(p) > 0) p->restarts++;
                }
            }
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        for (int i = 0; i <= n; i++) {
            proc_t *p = &procs[i];
            if (p->pid != pid) continue;
            char why[64];
            double lived = now_s() - p->started;
            p->quick_deaths = lived < 2.0 ? p->quick_deaths + 1 : 0;
            p->pid = 0;
            if (p->quick_deaths >= 5) {
                fprintf(stderr, "tessera serve: %s %d.%d keeps failing (%s); giving up (log: %s)\n", p->what,
                        p->shard, p->replica, exit_reason(st, why, sizeof why),
                        p->log[0] ? p->log : "stderr");
                if (p == router) {
                    stop_sig = SIGTERM;
                    status = 1;
                }
                p->started = 1e300; /* never again */
                break;
            }
            double delay = 0.2 * (1 << p->quick_deaths);
            fprintf(stderr, "tessera serve: %s %d.%d %s; restarting in %.1f s\n", p->what, p->shard,
                    p->replica, exit_reason(st, why, sizeof why), delay);
            p->started = now_s() + delay;
        }
    }
    fprintf(stderr, "tessera serve: stopping\n");
    for (int i = n; i >= 0; i--)
        if (procs[i].pid > 0) kill(procs[i].pid, SIGTERM);
    double until = now_s() + 5;
    for (int left = 1; left && now_s() < until;) {
        left = 0;
        for (int i = 0; i <= n; i++)
            if (procs[i].pid > 0) {
                if (waitpid(procs[i].pid, NULL, WNOHANG) == procs[i].pid)
                    procs[i].pid = 0;
                else
                    left = 1;
            }
        struct timespec ts = {0, 20 * 1000 * 1000};
        if (left) nanosleep(&ts, NULL);
    }
    for (int i = 0; i <= n; i++)
        if (procs[i].pid > 0) {
            kill(procs[i].pid, SIGKILL);
            waitpid(procs[i].pid, NULL, 0);
        }
    for (int i = 0; i < n; i++)
        unlink(strs[i][1] + 6);
    rmdir(sockdir);
    free(endpoints);
    free(procs);
    return status;
}

static const char status_help[] =
    "usage: tessera status --endpoint E [--model M] [--wait-ready SECONDS]\n"
    "Prints the router's status as JSON (versions, replicas, counters). With --wait-ready, first waits\n"
    "until a version is available (exit 1 if none is within SECONDS).\n";

int cmd_status(int argc, char **argv) {
    const char *endpoint = NULL, *model = "";
    double wait = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(status_help, stdout);
            return 0;
        } else if (!strcmp(a, "--endpoint") && v) {
            endpoint = argv[++i];
        } else if (!strcmp(a, "--model") && v) {
            model = argv[++i];
        } else if (!strcmp(a, "--wait-ready") && v) {
            if (cli_parse_double("tessera status", a, argv[++i], 0, 86400, &wait)) return 2;
        } else {
            fprintf(stderr, "tessera status: unexpected argument '%s'\n%s", a, status_help);
            return 2;
        }
    }
    if (!endpoint) {
        fputs(status_help, stderr);
        return 2;
    }
    char err[512];
    tsc_client_t *c = tsc_connect(endpoint, err, sizeof err);
    if (!c) {
        fprintf(stderr, "tessera status: %s\n", err);
        return 1;
    }
    tsc_set_timeout(c, 1000);
    double until = now_s() + wait;
    int rc = tsc_ready(c, model);
    while (wait > 0 && rc != TSC_OK && now_s() < until) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        rc = tsc_ready(c, model);
    }
    if (wait > 0 && rc != TSC_OK) {
        fprintf(stderr, "tessera status: not ready after %.0f s: %s %s\n", wait, tsc_code_name(rc),
                tsc_error(c));
        tsc_close(c);
        return 1;
    }
    char *json = NULL;
    rc = tsc_status_json(c, model, &json);
    if (rc == TSC_OK) {
        printf("%s\n", json);
        free(json);
    } else {
        fprintf(stderr, "tessera status: %s %s\n", tsc_code_name(rc), tsc_error(c));
    }
    tsc_close(c);
    return rc == TSC_OK ? 0 : 1;
}
