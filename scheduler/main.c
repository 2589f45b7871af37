/* tessera-scheduler: the control plane of a job. */
#include <errno.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "cluster.h"
#include "program.h"
#include "scheduler.h"
#include "util.h"

int main(int argc, char **argv) {
    program_t prog;
    program_start(&prog, ROLE_SCHEDULER, &argc, &argv);
    char err[1024] = "";
    int rc = mkdir_p(prog.run_dir);
    if (rc) log_error("cannot create run directory %s: %s", prog.run_dir, strerror(errno));
    program_check_all(rc != 0, "setup");

    void *zctx = zmq_ctx_new();
    void *router = zmq_socket(zctx, ZMQ_ROUTER);
    int linger = 1000;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    cluster_t cl;
    rc = cluster_bootstrap(&cl, ROLE_SCHEDULER, router, prog.cfg.interface, err, sizeof err);
    if (rc) log_error("bootstrap failed: %s", err);
    program_check_all(rc != 0, "bootstrap");

    rc = scheduler_run(&prog.cfg, &cl, zctx, router, prog.run_dir, prog.resume_dir);
    zmq_close(router);
    zmq_ctx_term(zctx);
    cluster_free(&cl);
    return program_finish(rc < 0 ? 1 : rc);
}
