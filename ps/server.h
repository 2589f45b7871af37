/* A parameter-server shard: holds its row block of every dense tensor with the optimizer state,
 * applies gradients, and answers pulls under the job's consistency model (BSP, SSP, ASP). */
#ifndef TESSERA_PS_SERVER_H
#define TESSERA_PS_SERVER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "model.h"
#include "optim.h"
#include "serve.h"
#include "shard_map.h"

typedef struct ps_server ps_server_t;

typedef struct {
    const model_spec_t *spec; /* borrowed; must outlive the server */
    const shard_map_t *map;   /* borrowed */
    int shard;
    int n_workers;
    int staleness;      /* 0 BSP, k SSP, CFG_STALENESS_INF ASP */
    int params_bf16;    /* workers get their parameters rounded to bfloat16 (net.param_dtype = bf16) */
    const char *device; /* ps.device: the backend that steps the dense slices (NULL or "cpu": here) */
    optim_t opt;
    uint64_t seed;
    uint64_t memory_bytes; /* budget for parameters, optimizer state and sparse rows (0 = no limit) */
    size_t max_message_bytes;
    double heartbeat_s; /* to the scheduler, when `sched` is given */
    /* Checkpoints (optional): written under ckpt_root; completion reported to sched_endpoint over a
     * socket of zctx. job is borrowed and stored in each file. */
    const job_config_t *job;
    const char *ckpt_root;
    void *zctx;
    const char *sched_endpoint;
    const char *resume_dir; /* restore from this checkpoint (step directory) instead of initialising */
    volatile sig_atomic_t *stop_flag; /* set by this process's signal handler (optional) */
    volatile sig_atomic_t *ckpt_flag; /* likewise, for a checkpoint on demand (optional) */
} ps_config_t;

/* Sets the per-frame size limit on `router`: call before binding it, since ZeroMQ copies socket
 * options into the listener at bind time. A peer that sends a larger frame is disconnected. */
int ps_server_prepare_socket(void *router, size_t max_message_bytes);

/* Creates a shard serving on `router` (a bound ROUTER socket, borrowed) and, when `sched` is not
 * NULL, sending heartbeats on it (a DEALER connected to the scheduler, borrowed). Parameters start
 * at their deterministic initial values. Returns NULL with a message on failure. */
ps_server_t *ps_server_create(const ps_config_t *cfg, void *router, void *sched, char *err, size_t errlen);

/* Serves until a SHUTDOWN request arrives. Malformed or invalid requests are answered with an error
 * and never stop the loop. Returns 0, or -TS_EIO when the socket itself fails. */
int ps_server_run(ps_server_t *s);

void ps_server_free(ps_server_t *s);

/* The version the scheduler asked this shard to serve (KIND_SERVE) when ps_server_run returned, or 0
 * when it was told to shut down. */
uint64_t ps_server_serve_version(const ps_server_t *s);

/* Hands the parameter slices over (to serve_shard_adopt) without copying; *out is malloc'd. Returns
 * how many. The server keeps its optimizer state until freed. */
int ps_server_take_slices(ps_server_t *s, serve_slice_t **out);
/* Hands the sparse tables to the caller (*out malloc'd, the tables are the caller's to free); the
 * server keeps none. Returns how many. */
int ps_server_take_tables(ps_server_t *s, sparse_table_t ***out);

#endif
