/* tessera-worker: trains on its partition of the data and syncs with the parameter-server shards. */
#include "check.h"
#include "cluster.h"
#include "program.h"
#include "train.h"

int main(int argc, char **argv) {
    program_t prog;
    program_start(&prog, ROLE_WORKER, &argc, &argv);
    char err[1024] = "";
    program_check_all(0, "setup");
    cluster_t cl;
    int rc = cluster_bootstrap(&cl, ROLE_WORKER, NULL, prog.cfg.interface, err, sizeof err);
    if (rc) log_error("bootstrap failed: %s", err);
    program_check_all(rc != 0, "bootstrap");
    rc = worker_train(&prog.cfg, &cl, prog.run_dir, prog.resume_dir);
    cluster_free(&cl);
    return program_finish(rc ? 1 : 0);
}
