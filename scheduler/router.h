/* The serving router: the front door of serving mode (the scheduler's role there). Clients send
 * PREDICT, STATUS, LIVE and READY over ZeroMQ (docs/serving-protocol.md); the router queues requests
 * (bounded), batches them dynamically (max batch, max delay), runs the model and replies.
 *
 * Versions: every complete checkpoint under the watched directory that the policy wants
 * ([serve] versions = latest, latest:K or a list of steps) is loaded by every shard replica beside
 * the serving ones; it becomes available, and the default for unpinned requests, only once every
 * shard holds it and the router has its cached parameters; older versions then retire and unload.
 *
 * Placement: a version whose dense parameters fit [serve] cache_mb is evaluated at the router from a
 * cached copy (pulled from the shards once): no network hop per request. A larger one keeps its
 * linear weights on the shards: each such layer is evaluated by fanning the batch out to one replica
 * of every shard (each returns x W_k^T for its row block) and concatenating; biases and the other
 * layers run at the router. Replicas are pinged; a silent or failing one is failed over, and one that
 * comes back is reloaded and rejoins. */
#ifndef TESSERA_ROUTER_H
#define TESSERA_ROUTER_H

#include <signal.h>
#include <stdint.h>

#include "config.h"

typedef struct {
    const job_config_t *opts; /* the [serve] settings */
    int n_shards, n_replicas;
    char **shard_endpoints; /* [shard * n_replicas + replica] */
    const char *ckpt_root;  /* watched for versions; NULL: serve initial_version only */
    const char *model_name; /* NULL: [serve] model, else the first version's [job] name */
    /* A version already on the shards (tessera train --serve), or 0. */
    uint64_t initial_version;
    const job_config_t *initial_job;
    const char *role;    /* the role SHUTDOWN requests carry: "router" or "scheduler" */
    int shutdown_shards; /* send SHUTDOWN to every shard when stopping */
    volatile sig_atomic_t *stop_flag;
} router_config_t;

/* Binds opts->serve_listen and serves until the stop flag is set. 0, or -TS_EIO / -TS_EINVAL with
 * the reason logged. */
int router_run(const router_config_t *cfg, void *zctx);

#endif
