/* tessera-router: the serving router on its own (tessera serve starts it), without MPI. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "config.h"
#include "log.h"
#include "router.h"
#include "util.h"

static const char usage[] =
    "usage: tessera-router --shards S [--replicas R] --shard-endpoints E,E,... [--checkpoint ROOT]\n"
    "                      [--model NAME] [serve.key=value ...]\n"
    "  --shard-endpoints  S*R endpoints, shard by shard: shard 0 replica 0, shard 0 replica 1, ...\n"
    "  --checkpoint ROOT  the checkpoint directory whose complete checkpoints are the versions\n"
    "  serve.key=value    [serve] settings: listen, versions, max_batch, max_delay_us, max_queue,\n"
    "                     deadline_ms, cache_mb, poll_s, max_request_mb, replica_timeout_ms, threads\n";

static volatile sig_atomic_t stop;
static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    log_init_from_env();
    log_set_identity("router", 0);
    job_config_t *opts = XCALLOC(1, sizeof *opts);
    config_defaults(opts);
    long shards = 0, replicas = 1;
    const char *endpoints = NULL, *root = NULL, *model = NULL;
    char err[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--shards") && v) {
            if (cli_parse_long("tessera-router", a, argv[++i], 1, 65536, &shards)) return 2;
        } else if (!strcmp(a, "--replicas") && v) {
            if (cli_parse_long("tessera-router", a, argv[++i], 1, 256, &replicas)) return 2;
        } else if (!strcmp(a, "--shard-endpoints") && v) {
            endpoints = argv[++i];
        } else if (!strcmp(a, "--checkpoint") && v) {
            root = argv[++i];
        } else if (!strcmp(a, "--model") && v) {
            model = argv[++i];
        } else if (strchr(a, '=') && !strncmp(a, "serve.", 6)) {
            if (config_apply_override(opts, a, err, sizeof err)) {
                fprintf(stderr, "tessera-router: %s\n", err);
                return 2;
            }
        } else {
            fprintf(stderr, "tessera-router: unexpected argument '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (shards < 1 || !endpoints) {
        fputs(usage, stderr);
        return 2;
    }
    if (config_check_serve(opts, err, sizeof err)) {
        fprintf(stderr, "tessera-router: %s\n", err);
        return 2;
    }
    int n = (int)(shards * replicas);
    char **eps = XCALLOC((size_t)n, sizeof *eps);
    char *list = strdup(endpoints);
    int k = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (k == n) {
            k++;
            break;
        }
        eps[k++] = tok;
    }
    if (k != n) {
        fprintf(stderr,
                "tessera-router: --shard-endpoints has %s endpoints; %ld shards x %ld replicas need %d\n",
                k > n ? "too many" : "too few", shards, replicas, n);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    void *zctx = zmq_ctx_new();
    router_config_t rc = {.opts = opts,
                          .n_shards = (int)shards,
                          .n_replicas = (int)replicas,
                          .shard_endpoints = eps,
                          .ckpt_root = root,
                          .model_name = model,
                          .role = "router",
                          .shutdown_shards = 0,
                          .stop_flag = &stop};
    int status = router_run(&rc, zctx);
    zmq_ctx_term(zctx);
    free(list);
    free(eps);
    free(opts);
    return status ? 1 : 0;
}
