/* Overlapping the exchange with the shards and compute (net.push_bucket_mb). As model_run's backward
 * pass makes gradients final, from the last tensor back, they go to the shards in PUSH_PARTs of at least
 * the bucket size while the pass goes on; the step's PUSH_PULL then carries the rest. On a device
 * backend with asynchronous copies, a bucket is first copied to the pinned host buffer on the copy
 * stream while later kernels run, and sent once its copy has landed; the updated parameters go back to
 * the device shard by shard as their replies arrive, and the next forward pass waits for them on the
 * device, not the host. Not used with job.node_reduce, which reduces the whole gradient first. */
#ifndef TESSERA_OVERLAP_H
#define TESSERA_OVERLAP_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "ps_client.h"

#define OVERLAP_MAX_BUCKETS 64 /* copying at once; more hand-offs wait for the oldest first */

typedef struct {
    model_t *m;
    ps_client_t *pc;
    float *grads_host, *params_host; /* what the shards read and write (m's own memory on a host backend) */
    size_t bucket_bytes;             /* 0: off */
    int async;                       /* the backend copies asynchronously (device memory) */
    int64_t clock;
    int handed;                       /* tensors [handed, n_tensors) are sent, or copying to be sent */
    int copying[OVERLAP_MAX_BUCKETS]; /* FIFO of buckets being copied: the first tensor of each */
    uint64_t ticket[OVERLAP_MAX_BUCKETS];
    int head, count;
    uint64_t params_ticket; /* the newest parameter copy to the device */
    /* net.grad_dtype = bf16 on a device backend with to_bf16: gradients are rounded on the device into
     * dev16 and copied, at half the bytes, into stage16 (pinned), which is the PS client's stage */
    uint16_t *dev16, *stage16;
    /* net.param_dtype = bf16 on a device backend with from_bf16: parameters come from the shards as
     * bfloat16 into pstage16 (pinned; the PS client's params16), cross at half the bytes into pdev16 and
     * are widened there */
    uint16_t *pdev16, *pstage16;
    int rc;
    char err[256];
} overlap_t;

/* Sets `o` up for model `m` and its PS client; hooks itself into both when bucket_mb > 0 (and, for
 * parameter copies, when the backend copies asynchronously). With `node_reduce` it does neither: the
 * node reduces the whole gradient before any push, and all-gathers parameters after the replies. */
void overlap_init(overlap_t *o, model_t *m, ps_client_t *pc, float *grads_host, float *params_host,
                  double bucket_mb, int node_reduce);

/* Releases what overlap_init allocated (the bfloat16 buffers), before the PS client is freed. */
void overlap_free(overlap_t *o);

/* Before a training step's model_run at `clock`. */
void overlap_begin(overlap_t *o, int64_t clock);

/* After model_run: sends the buckets still copying, then leaves in grads_host everything the step's
 * push_pull sends (copying the rest from the device, if staged). 0 or the first send error. */
int overlap_finish(overlap_t *o, char *err, size_t errlen);

/* Whether the parameters push_pull wrote have been queued to the device already (no full copy needed). */
int overlap_params_on_device(const overlap_t *o);

/* Parts in a step with every tensor trained: the number of PUSH_PARTs each step makes. */
int overlap_parts_per_step(const overlap_t *o);

#endif
