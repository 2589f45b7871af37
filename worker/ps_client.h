/* The worker's side of the parameter server: one DEALER per shard, requests sent to all shards at
 * once and the replies gathered as they come. */
#ifndef TESSERA_PS_CLIENT_H
#define TESSERA_PS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "model.h"
#include "shard_map.h"
#include "sparse_batch.h"

typedef struct {
    uint64_t request_id;
    int t_lo, t_hi; /* its tensors */
} part_sent_t;

typedef struct {
    int n_shards;
    void **socks;
    const model_spec_t *spec; /* borrowed */
    const shard_map_t *map;   /* borrowed */
    int worker;
    double timeout_s;
    size_t max_message_bytes;
    uint64_t next_request;
    uint64_t *request_of;    /* per shard: the request awaiting its reply */
    int *parts_out;          /* per shard: PUSH_PARTs of the open clock not answered yet */
    part_sent_t *parts_sent; /* [shard * n_tensors + j]: those parts, oldest first */
    int parts_from;          /* tensors [parts_from, n_tensors) went in PUSH_PARTs this clock */
    int final_hi;            /* the push's reply may bring only tensors [0, final_hi) (BSP with parts) */
    float *part_params;      /* where part replies' parameters go */
    uint64_t bytes_sent, bytes_received; /* to and from the shards, by either path */
    /* net.local_exchange: shards k with local[k] mapped this worker's exchange region (ps_client_attach);
     * dense gradients in region_grads and parameters for region_params cross through it, and the
     * messages carry only their descriptors */
    int *local;
    float *region_params, *region_grads;
    /* Of those, shards k with local_dev[k] mapped the worker's device region instead (a GPU worker and a
     * shard stepping on a device, CUDA IPC): in_region slices are there, at the same offsets, and the
     * host region's copies of them are not written. */
    int *local_dev, n_local_dev;
    int sent_device_handle; /* the last ATTACH offered a device region */
    uint64_t bytes_local;   /* of bytes_sent and bytes_received, those that crossed through the region */
    /* net.param_dtype = bf16 on a device backend with from_bf16 (worker/overlap.c sets it): bfloat16
     * parameter slices are not widened here but kept in params16 (the flat layout, pinned), and
     * params_taken takes them to the device from there */
    uint16_t *params16;
    int taken_bf16; /* the slices params_taken is told of came as bfloat16 (into params16) */
    /* net.grad_dtype = bf16: dense gradients go out rounded to bfloat16, from `stage` (the model's
     * flat layout, [spec->n_floats]; allocated on first use) */
    int grad_bf16;
    int param_bf16; /* net.param_dtype = bf16: PARAMS replies to this worker come as bfloat16 */
    uint16_t *stage;
    int stage_filled; /* stage already holds the step's rounded gradients (worker/overlap.c rounds them on
                         the device and copies them there; it owns stage then) */
    /* Checkpoints: set ckpt_request (the clock to cut at) before a push to ask the shards for one;
     * ckpt_announced is set when a reply says the parameters are those of a checkpoint. */
    int64_t ckpt_request;
    int ckpt_request_stop;
    int64_t ckpt_announced, ckpt_missed; /* ckpt_missed: an earlier one not announced before */
    int ckpt_announced_stop;
    int stop_requested; /* set on pushes: this worker was asked to stop */
    int peer_stop;      /* a reply said another rank was asked to stop */
    int ckpt_asked;     /* set on pushes: this worker was asked for a checkpoint */
    int peer_ckpt;      /* a reply said another rank was asked for a checkpoint */
    int64_t ckpt_seen;  /* the newest checkpoint announced to this worker */
    int read_only;      /* the sparse pull being sent must not create rows */
    int full_precision; /* pulls ask for float32 even with net.param_dtype = bf16 */
    const int *only;    /* when not NULL: push_pull and pull talk to the shards k with only[k] */
    /* Optional: called once shard k's parameter slices of tensors [t_lo, t_hi) are in the host buffer
     * (a reply to a pull, push or part), so they can go on to the device while other replies come. */
    void (*params_taken)(void *ctx, int shard, int t_lo, int t_hi);
    void *params_taken_ctx;
} ps_client_t;

/* Connects to every shard. Returns 0 or -TS_EIO with a message. */
int ps_client_init(ps_client_t *c, void *zctx, char (*endpoints)[CLUSTER_ENDPOINT_LEN], int n_shards,
                   const model_spec_t *spec, const shard_map_t *map, int worker, double timeout_s,
                   size_t max_message_bytes, char *err, size_t errlen);
void ps_client_free(ps_client_t *c);

/* Local exchange: asks every shard to map the exchange region at `path` (`bytes`, holding `params` and
 * `grads`, the buffers push_pull and pull are then given); those on this host do. With device_handle
 * (BACKEND_IPC_HANDLE bytes, or NULL): the worker's device region of the same layout, which shards
 * stepping on a device map instead. Sets *n_attached (either kind); each refusal's reason goes to the
 * log (debug). 0, or the same errors as the others. */
int ps_client_attach(ps_client_t *c, const char *path, size_t bytes, float *params, float *grads,
                     const unsigned char *device_handle, int *n_attached, char *err, size_t errlen);

/* Sends the gradients of iteration `clock` (host memory, the model's flat layout; sent zero-copy, so
 * it must not change until this returns), with the row gradients of `sb` when not NULL, and writes the
 * parameters for clock + 1 into `params`. Tensors already sent by push_part are left out. Returns 0,
 * -TS_ETIMEDOUT, -TS_EREMOTE (a shard answered with an error) or -TS_EPROTO, with a message. */
int ps_client_push_pull(ps_client_t *c, int64_t clock, const float *grads, const sparse_batch_t *sb,
                        float *params, char *err, size_t errlen);

/* Overlapping the push with the backward pass: sends the gradients of tensors [t_begin, parts_from) of
 * iteration `clock` to every shard holding some of them as PUSH_PARTs, without waiting (zero-copy:
 * `grads` must not change until push_pull of the clock returns), and leaves them out of that push.
 * Parts go in backward order (t_begin falls). In BSP a shard answers a part with its slices' update
 * once every worker's part is in, written into `params` when the reply is read (during any later call
 * that waits for this shard, push_pull at the latest), so the pull of the last layers overlaps the rest
 * of the step; the push's own reply then brings the rest. Not with `only` (job.node_reduce). 0 or
 * -TS_EIO. */
int ps_client_push_part(ps_client_t *c, int64_t clock, const float *grads, float *params, int t_begin,
                        char *err, size_t errlen);

/* Pulls the rows of every table's unique ids in `sb` from the shards that own them into sb's rows.
 * With `read_only`, rows a shard does not hold yet come back with their initial values and are not
 * created (evaluation). Same returns. */
int ps_client_sparse_pull(ps_client_t *c, sparse_batch_t *sb, int read_only, char *err, size_t errlen);

/* Writes the parameters for `clock` into `params`. Same returns. */
int ps_client_pull(ps_client_t *c, int64_t clock, float *params, char *err, size_t errlen);

/* SSP/ASP, worker 0 only: fences every shard (KIND_CUT_QUERY with grace `grace`) and sets *cut to the
 * furthest fence: a checkpoint of that clock, asked for by this worker's next push (which lifts the
 * fences), lies where no worker is yet. Same returns. */
int ps_client_cut_query(ps_client_t *c, int64_t grace, int64_t *cut, char *err, size_t errlen);

/* Model-parallel linear layers (tensor t is a remote weight W [out, in], rows on the shards):
 * layer_fwd writes y[batch, out] = x W^T, one LAYER_FWD to each shard with rows of W; layer_bwd hands
 * x and dy[batch, out] to those shards, who keep dW for this worker's step `clock` (its PUSH_PULL of
 * that clock then applies it), and, unless dx is NULL, writes dx[batch, in] = dy W summed in shard
 * order. x, dy host memory. Same returns as the others. */
int ps_client_layer_fwd(ps_client_t *c, int64_t clock, int t, const float *x, int batch, float *y, char *err,
                        size_t errlen);
int ps_client_layer_bwd(ps_client_t *c, int64_t clock, int t, const float *x, const float *dy, int batch,
                        float *dx, char *err, size_t errlen);

#endif
