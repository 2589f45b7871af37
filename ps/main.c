/* tessera-ps: one parameter-server shard. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "ckpt.h"
#include "cluster.h"
#include "model.h"
#include "program.h"
#include "serve.h"
#include "server.h"
#include "shard_map.h"
#include "util.h"

static volatile sig_atomic_t serve_stop;
static void on_serve_signal(int sig) {
    (void)sig;
    serve_stop = 1;
}

static const char serve_usage[] =
    "usage: tessera-ps --serve --listen ENDPOINT --shard K --shards S [--threads T] [--max-message-mb M]\n"
    "A serving shard outside MPI (tessera serve starts these): binds ENDPOINT and answers the router.\n";

/* tessera-ps --serve: a serving shard on its own, without MPI, started by `tessera serve`. */
static int serve_main(int argc, char **argv) {
    const char *listen = NULL;
    long shard = -1, shards = 0, threads = 1, max_mb = 1024;
    const char *me = "tessera-ps --serve";
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--listen") && v) {
            listen = argv[++i];
        } else if (!strcmp(a, "--shard") && v) {
            bad = cli_parse_long(me, a, argv[++i], 0, 65535, &shard);
        } else if (!strcmp(a, "--shards") && v) {
            bad = cli_parse_long(me, a, argv[++i], 1, 65536, &shards);
        } else if (!strcmp(a, "--threads") && v) {
            bad = cli_parse_long(me, a, argv[++i], 1, 1024, &threads);
        } else if (!strcmp(a, "--max-message-mb") && v) {
            bad = cli_parse_long(me, a, argv[++i], 1, 1 << 20, &max_mb);
        } else {
            fprintf(stderr, "tessera-ps: unexpected argument '%s'\n%s", a, serve_usage);
            return 2;
        }
        if (bad) return 2;
    }
    if (!listen || shard < 0 || shard >= shards) {
        fprintf(stderr, "%s", serve_usage);
        return 2;
    }
    log_init_from_env();
    log_set_identity("ps", (int)shard);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_serve_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    void *zctx = zmq_ctx_new();
    void *router = zmq_socket(zctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    char err[1024];
    if (ps_server_prepare_socket(router, (size_t)max_mb << 20) || zmq_bind(router, listen)) {
        log_error("cannot listen on %s: %s", listen, zmq_strerror(zmq_errno()));
        return 1;
    }
    serve_shard_config_t sc = {.shard = (int)shard,
                               .n_shards = (int)shards,
                               .max_message_bytes = (size_t)max_mb << 20,
                               .threads = (int)threads,
                               .stop_flag = &serve_stop};
    serve_shard_t *ss = serve_shard_create(&sc, router, err, sizeof err);
    if (!ss) {
        log_error("cannot start serving shard: %s", err);
        return 1;
    }
    log_info("serving shard listening shard=%ld of=%ld endpoint=%s", shard, shards, listen);
    int rc = serve_shard_run(ss);
    serve_shard_free(ss);
    zmq_close(router);
    zmq_ctx_term(zctx);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--serve")) return serve_main(argc, argv);
    program_t prog;
    program_start(&prog, ROLE_PS, &argc, &argv);
    const job_config_t *cfg = &prog.cfg;
    char err[1024] = "";

    model_spec_t spec;
    int rc = model_spec_init(&spec, cfg, err, sizeof err);
    if (rc) log_error("invalid model: %s", err);

    void *zctx = zmq_ctx_new();
    void *router = zctx ? zmq_socket(zctx, ZMQ_ROUTER) : NULL;
    if (!rc && !router) {
        log_error("cannot create a ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
        rc = -TS_EIO;
    }
    if (!rc) {
        int router_linger = 2000; /* let the last replies out, but never hang on a vanished peer */
        zmq_setsockopt(router, ZMQ_LINGER, &router_linger, sizeof router_linger);
        /* No legitimate frame is larger than the largest tensor: a peer sending more is cut off. */
        size_t frame_limit = 0;
        for (int t = 0; t < spec.n_tensors; t++) {
            size_t b = (size_t)(spec.tensors[t].rows * spec.tensors[t].cols) * sizeof(float);
            if (b > frame_limit) frame_limit = b;
        }
        frame_limit += 1 << 20;
        /* Row ids and gradients, and a model-parallel layer's activations, grow with the batch (and
         * evaluation batches are larger than training's), not with any tensor: such models get the
         * configured message limit. */
        if (spec.n_tables || spec.n_remote || frame_limit > (size_t)cfg->max_message_mb << 20)
            frame_limit = (size_t)cfg->max_message_mb << 20;
        rc = ps_server_prepare_socket(router, frame_limit);
    }
    program_check_all(rc != 0, "setup");

    cluster_t cl;
    rc = cluster_bootstrap(&cl, ROLE_PS, router, cfg->interface, err, sizeof err);
    if (rc) log_error("bootstrap failed: %s", err);
    program_check_all(rc != 0, "bootstrap");

    if (!strcmp(cfg->ps_device, "cuda")) cluster_pick_device(&cl); /* one GPU per shard of a node */
    uint64_t *rows = XCALLOC((size_t)spec.n_tensors, sizeof *rows);
    for (int t = 0; t < spec.n_tensors; t++)
        rows[t] = spec.tensors[t].rows;
    shard_map_t map;
    if (shard_map_init(&map, rows, spec.n_tensors, cl.n_ps)) {
        log_error("cannot build the shard map for %d shards", cl.n_ps);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    free(rows);

    void *sched = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sched, ZMQ_LINGER, &linger, sizeof linger);
    ZMQ_CHECK(zmq_connect(sched, cl.sched_endpoint));

    optim_t opt;
    optim_from_config(&opt, cfg);
    char ckpt_dir[4096];
    ckpt_root(prog.run_dir, cfg, ckpt_dir, sizeof ckpt_dir);
    ps_config_t pc = {.spec = &spec,
                      .map = &map,
                      .shard = cl.index,
                      .n_workers = cfg->node_reduce ? cl.n_worker_nodes : cl.n_workers, /* pushers */
                      .staleness = cfg->staleness,
                      .params_bf16 = !strcmp(cfg->param_dtype, "bf16"),
                      .device = cfg->ps_device,
                      .opt = opt,
                      .seed = cfg->seed,
                      .memory_bytes = (uint64_t)(cfg->memory_mb * 1048576.0),
                      .max_message_bytes = (size_t)cfg->max_message_mb << 20,
                      .heartbeat_s = 1.0,
                      .job = cfg,
                      .ckpt_root = ckpt_dir,
                      .zctx = zctx,
                      .sched_endpoint = cl.sched_endpoint,
                      .resume_dir = prog.resume_dir,
                      .stop_flag = &program_stop_requested,
                      .ckpt_flag = &program_checkpoint_requested};
    ps_server_t *srv = ps_server_create(&pc, router, sched, err, sizeof err);
    if (!srv) {
        log_error("cannot start shard: %s", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    log_info("shard serving shard=%d of=%d workers=%d staleness=%d optimizer=%s device=%s endpoint=%s",
             cl.index, cl.n_ps, cl.n_workers, cfg->staleness, cfg->opt_type, cfg->ps_device,
             cl.self_endpoint);
    rc = ps_server_run(srv);
    uint64_t version = rc ? 0 : ps_server_serve_version(srv);
    if (version) {
        /* tessera train --serve: the trained parameters become serving version `version`, in place. */
        serve_slice_t *slices = NULL;
        int n = ps_server_take_slices(srv, &slices);
        sparse_table_t **tables = NULL;
        int nt = ps_server_take_tables(srv, &tables);
        ps_server_free(srv);
        srv = NULL;
        serve_shard_config_t sc = {.shard = cl.index,
                                   .n_shards = cl.n_ps,
                                   .max_message_bytes = (size_t)cfg->max_message_mb << 20,
                                   .threads = cfg->serve_threads,
                                   .stop_flag = &program_stop_requested};
        serve_shard_t *ss = serve_shard_create(&sc, router, err, sizeof err);
        if (!ss || serve_shard_adopt(ss, version, cfg, slices, n, tables, nt, err, sizeof err)) {
            log_error("cannot serve the trained parameters: %s", err);
            rc = -TS_EINVAL;
        } else {
            log_info("shard serving the trained parameters version=%llu endpoint=%s",
                     (unsigned long long)version, cl.self_endpoint);
            rc = serve_shard_run(ss);
        }
        for (int i = 0; i < n; i++)
            free(slices[i].p);
        free(slices);
        for (int t = 0; t < nt; t++)
            sparse_table_free(tables[t]);
        free(tables);
        serve_shard_free(ss);
    }

    ps_server_free(srv);
    zmq_close(sched);
    zmq_close(router);
    zmq_ctx_term(zctx);
    shard_map_free(&map);
    model_spec_free(&spec);
    cluster_free(&cl);
    return program_finish(rc ? 1 : 0);
}
