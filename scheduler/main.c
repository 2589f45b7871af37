/* tessera-scheduler: the control plane of a job. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "ckpt.h"
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
    /* Find out now, not at the first checkpoint, if checkpoints cannot be written. */
    char root[4096], probe[4200];
    ckpt_root(prog.run_dir, &prog.cfg, root, sizeof root);
    snprintf(probe, sizeof probe, "%s/.writable", root);
    if (!rc && (mkdir_p(root) || write_file_atomic(probe, "ok\n", 3) || unlink(probe))) {
        int checkpoints = prog.cfg.ckpt_every_steps > 0 || prog.cfg.ckpt_every_seconds > 0;
        if (checkpoints) {
            log_error("cannot write checkpoints to %s: %s", root, strerror(errno));
            rc = -TS_EIO;
        } else {
            log_warn("cannot write to the checkpoint directory %s (%s): a checkpoint asked for by a signal "
                     "will fail",
                     root, strerror(errno));
        }
    }
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
