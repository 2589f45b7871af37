#include "train.h"

#include <errno.h>
#include <malloc.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <zmq.h>

#include "backend.h"
#include "check.h"
#include "ckpt.h"
#include "data.h"
#include "data_ctr.h"
#include "metrics.h"
#include "model.h"
#include "node_reduce.h"
#include "node_rows.h"
#include "overlap.h"
#include "program.h"
#include "ps_client.h"
#include "sparse_batch.h"
#include "util.h"
#include "wire.h"
#include "xregion.h"

#define EVAL_BATCH 1000

typedef struct {
    const job_config_t *cfg;
    const cluster_t *cl;
    void *zctx, *sched;
    int outstanding;          /* scheduler requests not yet acknowledged */
    int sched_stop;           /* the scheduler was asked to stop the job */
    int sched_ckpt;           /* the scheduler was asked for a checkpoint */
    const int64_t *ckpt_seen; /* the newest checkpoint announced to this worker (the PS client's) */
    uint64_t next_request;
} worker_t;

static int sched_send(worker_t *w, Tessera__Kind kind, Tessera__Report *rep) {
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.request_id = ++w->next_request;
    h.sender = w->cl->index;
    h.role = "worker";
    h.report = rep;
    w->outstanding++;
    return wire_send(w->sched, NULL, &h, NULL, 0);
}

/* Collects the scheduler's acknowledgements; with `block`, all of them (or until the timeout). */
static void sched_drain(worker_t *w, int block) {
    double deadline = now_s() + w->cfg->timeout_s;
    while (w->outstanding > 0) {
        zmq_pollitem_t it = {w->sched, 0, ZMQ_POLLIN, 0};
        long ms = block ? (long)((deadline - now_s()) * 1000) : 0;
        if (block && ms <= 0) {
            log_warn("scheduler did not acknowledge %d reports", w->outstanding);
            return;
        }
        if (zmq_poll(&it, 1, ms) <= 0) {
            if (!block) return;
            continue;
        }
        wire_msg_t m;
        Tessera__ErrorCode code;
        char err[256];
        if (wire_recv(w->sched, 0, 1 << 20, &m, &code, err, sizeof err) == 0 && m.hdr->stop_requested)
            w->sched_stop = 1;
        if (m.hdr && m.hdr->checkpoint_requested &&
            (!w->ckpt_seen || m.hdr->last_checkpoint >= *w->ckpt_seen))
            w->sched_ckpt = 1; /* one from before the newest checkpoint this worker knows of was served */
        if (m.hdr && m.hdr->kind == TESSERA__KIND__KIND_ERROR)
            log_warn("scheduler error=%s detail=\"%s\"", wire_error_name(m.hdr->error_code),
                     m.hdr->error_message);
        wire_msg_free(&m);
        w->outstanding--;
    }
}

/* A job's data: IDX images, or CTR rows (dense features and categorical bags). */
typedef struct {
    int tabular;
    dataset_t idx;
    ctr_dataset_t ctr;
    size_t n;
    int dim;
} data_t;

static void data_free(data_t *d) {
    dataset_free(&d->idx);
    ctr_dataset_free(&d->ctr);
}

/* Writes examples ex[0..count) as model inputs into x and y and, for CTR data, their bags into sb. */
static void data_gather(const data_t *d, const job_config_t *cfg, const uint32_t *ex, size_t count, float *x,
                        int32_t *y, sparse_batch_t *sb) {
    if (!d->tabular) {
        dataset_gather(&d->idx, ex, count, (float)cfg->mean, (float)cfg->std, x, y);
        return;
    }
    const ctr_dataset_t *c = &d->ctr;
    for (size_t b = 0; b < count; b++) {
        memcpy(x + b * (size_t)c->n_dense, c->dense + (size_t)ex[b] * (size_t)c->n_dense,
               (size_t)c->n_dense * sizeof(float));
        y[b] = c->label[ex[b]];
    }
    if (sb->n_tables) sparse_batch_build(sb, c, ex, (int)count);
}

/* Model-parallel layers reach their weight's shards through the PS client, at the worker's clock; the
 * first failure is kept here and reported after the pass. */
typedef struct {
    ps_client_t *pc;
    const int64_t *clock;
    int rc;
    char err[512];
} remote_ctx_t;

static void remote_fwd(const layer_remote_t *r, layer_t *l, const float *x, float *y, int batch) {
    remote_ctx_t *c = r->ctx;
    if (!c->rc)
        c->rc = ps_client_layer_fwd(c->pc, *c->clock, l->tensor[0], x, batch, y, c->err, sizeof c->err);
}

static void remote_bwd(const layer_remote_t *r, layer_t *l, const float *x, const float *dy, float *dx,
                       int batch) {
    remote_ctx_t *c = r->ctx;
    if (!c->rc)
        c->rc = ps_client_layer_bwd(c->pc, *c->clock, l->tensor[0], x, dy, batch, dx, c->err, sizeof c->err);
}

/* net.local_exchange = auto: the worker's parameters and gradients live in an exchange region that
 * shards on its host map (ps_client_attach): the model's own buffers on a backend with host memory, the
 * pinned staging buffers on a device backend. Not with job.node_reduce (the node's collectives move
 * the bytes) or bfloat16 on the wire (rounding is for the network). Returns 1 with *params and *grads
 * in `xr`, or 0 (the reason at debug level). */
static int local_region(xregion_t *xr, const job_config_t *cfg, model_t *m, int node_reduce, float **params,
                        float **grads) {
    char why[256] = "";
    size_t n = m->spec.n_floats;
    if (strcmp(cfg->local_exchange, "auto"))
        snprintf(why, sizeof why, "net.local_exchange = %s", cfg->local_exchange);
    else if (node_reduce)
        snprintf(why, sizeof why, "job.node_reduce moves the bytes");
    else if (strcmp(cfg->grad_dtype, "f32") || strcmp(cfg->param_dtype, "f32"))
        snprintf(why, sizeof why, "bfloat16 on the wire");
    else if (xregion_create(xr, xregion_bytes(n), why, sizeof why))
        log_warn("local exchange off: %s", why); /* auto, and it could not be had */
    if (!xr->base) {
        log_debug("local exchange off: %s", why);
        return 0;
    }
    *params = xr->base;
    *grads = *params + xregion_grads_offset(n);
    backend_t *be = m->be;
    if (be->host_memory)
        model_use_flat(m, *params, *grads);
    else if (be->ops->register_host && !(xr->pinned = !be->ops->register_host(be, xr->base, xr->bytes)))
        log_warn(
            "the exchange region (%.1f MB) could not be pinned: device copies go through pageable memory",
            (double)xr->bytes / 1e6);
    return 1;
}

/* A device worker whose shards step on a device (ps.device): its parameters and gradients move into one
 * device allocation of the exchange region's layout, exported (CUDA IPC) so that shards on this machine
 * that can map it read the gradients and write the parameters there, with no copy through the host.
 * Returns the allocation (handle filled in), or NULL: shards then use the host region. */
static float *device_region(const xregion_t *xr, const job_config_t *cfg, model_t *m,
                            unsigned char handle[BACKEND_IPC_HANDLE]) {
    backend_t *be = m->be;
    if (!xr->base || be->host_memory || !be->ops->ipc_export || !strcmp(cfg->ps_device, "cpu")) return NULL;
    float *d = be->ops->alloc(be, xr->bytes);
    if (!d || be->ops->ipc_export(be, d, handle)) {
        log_warn("the device region (%.1f MB) could not be %s: the shards' device copies go through the host",
                 (double)xr->bytes / 1e6, d ? "exported" : "allocated");
        if (d) be->ops->free(be, d);
        return NULL;
    }
    model_use_flat(m, d, d + xregion_grads_offset(m->spec.n_floats));
    return d;
}

static void local_region_free(xregion_t *xr, backend_t *be, float *dev) {
    if (dev) be->ops->free(be, dev);
    if (!xr->base) return;
    if (xr->pinned) be->ops->unregister_host(be, xr->base);
    xregion_close(xr);
}

/* Parameters the shards wrote into `host` go to the device: all of them, or only those of shards that
 * did not write the device region themselves. */
static void stage_params(backend_t *be, const ps_client_t *pc, float *dev, const float *host, size_t n) {
    if (!pc->n_local_dev) {
        be->ops->to_device(be, dev, host, n * sizeof(float));
        return;
    }
    const model_spec_t *s = pc->spec;
    for (int k = 0; k < pc->n_shards; k++)
        for (int t = 0; !pc->local_dev[k] && t < s->n_tensors; t++) {
            row_range_t r = shard_map_range(pc->map, t, k);
            if (r.row_end == r.row_begin || s->tensors[t].remote) continue;
            size_t at = s->tensors[t].offset + (size_t)(r.row_begin * s->tensors[t].cols);
            size_t bytes = (size_t)((r.row_end - r.row_begin) * s->tensors[t].cols) * sizeof(float);
            be->ops->to_device(be, dev + at, host + at, bytes);
        }
}

/* One step's exchange with the shards. With job.node_reduce the node's workers first agree on the
 * flags a push carries, reduce the gradient (each keeps its shards' share), push and pull only that
 * share, agree on what the replies said, and all-gather the parameters; a failure anywhere on the node
 * fails every worker of it, so none waits in a collective for one that left. */
static int push_pull(ps_client_t *pc, node_reduce_t *nr, node_rows_t *rows, int64_t clock, float *grads,
                     sparse_batch_t *sb, float *params, char *err, size_t errlen) {
    if (!nr->mine) return ps_client_push_pull(pc, clock, grads, sb, params, err, errlen);
    int64_t f[4] = {pc->ckpt_request, pc->ckpt_request_stop, pc->stop_requested, pc->ckpt_asked};
    node_reduce_max(nr, f, 4);
    pc->ckpt_request = f[0];
    pc->ckpt_request_stop = (int)f[1];
    pc->stop_requested = (int)f[2];
    pc->ckpt_asked = (int)f[3];
    node_reduce_grads(nr, grads);
    const sparse_batch_t *mine = sb->n_tables ? node_rows_merge(rows, nr, sb) : sb;
    int rc = ps_client_push_pull(pc, clock, grads, mine, params, err, errlen);
    int64_t g[6] = {pc->ckpt_announced, pc->ckpt_announced_stop, pc->peer_stop, pc->peer_ckpt, rc != 0,
                    pc->ckpt_missed};
    node_reduce_max(nr, g, 6);
    pc->ckpt_missed = g[5];
    pc->ckpt_announced = g[0];
    pc->ckpt_announced_stop = (int)g[1];
    pc->peer_stop = (int)g[2];
    pc->peer_ckpt = (int)g[3];
    if (g[4]) {
        if (!rc) snprintf(err, errlen, "another worker of this node failed its exchange with the shards");
        return rc ? rc : -TS_EREMOTE;
    }
    node_reduce_params(nr, params);
    return 0;
}

/* A whole pull (the first; SSP/ASP's last), shared out the same way. */
static int whole_pull(ps_client_t *pc, node_reduce_t *nr, int64_t clock, float *params, char *err,
                      size_t errlen) {
    int rc = ps_client_pull(pc, clock, params, err, errlen);
    if (!nr->mine) return rc;
    int64_t failed = rc != 0;
    node_reduce_max(nr, &failed, 1);
    if (failed) {
        if (!rc) snprintf(err, errlen, "another worker of this node failed its pull");
        return rc ? rc : -TS_EREMOTE;
    }
    node_reduce_params(nr, params);
    return 0;
}

/* Runs one batch, already gathered: pulls its rows (read_only for evaluation), then forward and, when
 * `train`, backward. 0 or the pull's (or a model-parallel layer's) error. */
static int run_batch(model_t *m, ps_client_t *pc, sparse_batch_t *sb, const float *x, const int32_t *y, int n,
                     int train, double *loss, long *correct, char *err, size_t errlen) {
    if (sb->n_tables) {
        int rc = ps_client_sparse_pull(pc, sb, !train, err, errlen);
        if (rc) return rc;
        sparse_batch_bind(sb, m);
    }
    model_run(m, x, y, n, train, loss, correct);
    if (train && sb->n_tables) sparse_batch_fetch_grads(sb, m);
    for (int i = 0; i < m->spec.n_layers; i++) {
        remote_ctx_t *c = m->spec.layers[i].remote ? m->spec.layers[i].remote->ctx : NULL;
        if (c && c->rc) {
            snprintf(err, errlen, "model-parallel layer %s: %s", m->spec.layers[i].name, c->err);
            return c->rc;
        }
    }
    return 0;
}

/* Evaluates rows [begin, end) of `test`; adds loss sum, correct and count into acc[0..2]. With
 * `logits` (job.save_test_logits), also writes each row's logits there as float32; with `scores`
 * (a binary model), keeps each row's logit and label there for the AUC. */
static int evaluate(model_t *m, ps_client_t *pc, sparse_batch_t *sb, const data_t *test, size_t begin,
                    size_t end, const job_config_t *cfg, float *xb, int32_t *yb, uint32_t *idx, double acc[3],
                    FILE *logits, float *scores, int32_t *labels, char *err, size_t errlen) {
    size_t row_bytes = (size_t)m->spec.classes * sizeof(float);
    float *host = XMALLOC((size_t)EVAL_BATCH * row_bytes);
    int rc = 0;
    for (size_t i = begin; i < end && !rc; i += EVAL_BATCH) {
        size_t n = end - i < EVAL_BATCH ? end - i : EVAL_BATCH;
        for (size_t j = 0; j < n; j++)
            idx[j] = (uint32_t)(i + j);
        data_gather(test, cfg, idx, n, xb, yb, sb);
        long correct = 0;
        rc = run_batch(m, pc, sb, xb, yb, (int)n, 0, &acc[0], &correct, err, errlen);
        acc[1] += (double)correct;
        acc[2] += (double)n;
        if (rc || (!logits && !scores)) continue;
        m->be->ops->to_host(m->be, host, m->logits, n * row_bytes);
        m->be->ops->sync(m->be);
        if (logits && fwrite(host, 1, n * row_bytes, logits) != n * row_bytes)
            log_warn("cannot write test logits");
        if (scores) {
            memcpy(scores + (i - begin), host, n * sizeof(float));
            memcpy(labels + (i - begin), yb, n * sizeof(int32_t));
        }
    }
    free(host);
    return rc;
}

/* Drops the examples of `d` whose ids are out of range for a pre-sized table: an error naming the file
 * and line, or (data.on_error = skip) skipped and counted in *skipped. 0 or -TS_EINVAL. */
static int check_table_ids(ctr_dataset_t *d, const model_spec_t *spec, int skip, size_t *skipped) {
    size_t keep = 0, logged = 0;
    uint64_t nnz = 0;
    for (size_t i = 0; i < d->n; i++) {
        const char *bad_table = NULL;
        uint64_t bad_id = 0, bad_rows = 0;
        int bad_slot = 0;
        for (int t = 0; t < spec->n_tables && !bad_table; t++) {
            const table_info_t *ti = &spec->tables[t];
            if (!ti->rows) continue;
            size_t bag = i * (size_t)d->n_slots + (size_t)ti->slot;
            for (uint64_t k = d->bag_off[bag]; k < d->bag_off[bag + 1]; k++)
                if (d->ids[k] >= ti->rows) {
                    bad_table = ti->name;
                    bad_id = d->ids[k];
                    bad_rows = ti->rows;
                    bad_slot = ti->slot;
                    break;
                }
        }
        if (bad_table) {
            if (!skip || logged < 5) {
                char msg[1024];
                snprintf(msg, sizeof msg,
                         "%s:%llu: categorical slot %d: id %llu (0x%llx) is out of range for table %s (rows "
                         "= %llu)",
                         d->path, (unsigned long long)d->line[i], bad_slot, (unsigned long long)bad_id,
                         (unsigned long long)bad_id, bad_table, (unsigned long long)bad_rows);
                if (skip)
                    log_warn("%s: skipped", msg);
                else
                    log_error("%s (data.on_error = skip skips such lines)", msg);
            }
            logged++;
            if (!skip) return -TS_EINVAL;
            continue;
        }
        /* compact example i into position keep */
        size_t S = (size_t)d->n_slots;
        if (keep != i) {
            memcpy(d->dense + keep * (size_t)d->n_dense, d->dense + i * (size_t)d->n_dense,
                   (size_t)d->n_dense * sizeof(float));
            d->label[keep] = d->label[i];
            d->line[keep] = d->line[i];
        }
        uint64_t first = d->bag_off[i * S], last = d->bag_off[i * S + S];
        uint64_t starts[S + 1];
        for (size_t k = 0; k <= S; k++)
            starts[k] = d->bag_off[i * S + k] - first + nnz;
        memmove(d->ids + nnz, d->ids + first, (last - first) * sizeof *d->ids);
        if (d->wts) memmove(d->wts + nnz, d->wts + first, (last - first) * sizeof *d->wts);
        for (size_t k = 0; k <= S; k++)
            d->bag_off[keep * S + k] = starts[k];
        nnz += last - first;
        keep++;
    }
    *skipped += d->n - keep;
    d->n = keep;
    return 0;
}

/* Loads a CTR file, keeping part `part` of n_parts (1: all). Malformed lines (seen by every worker)
 * are counted in *skipped; ids out of a pre-sized table's range in this part, in *skipped_mine. */
static int load_ctr(const job_config_t *cfg, const model_spec_t *spec, const char *file, int part,
                    int n_parts, data_t *d, size_t *skipped, size_t *skipped_mine) {
    char path[2 * CFG_STR + 2], err[1024];
    snprintf(path, sizeof path, "%s/%s", cfg->data_dir, file);
    ctr_read_opts_t o = {.format = cfg->data_format,
                         .n_dense = cfg->dense_features,
                         .n_slots = cfg->sparse_features,
                         .skip_bad = !strcmp(cfg->on_error, "skip"),
                         .limit = file == cfg->train_file ? cfg->train_limit : cfg->test_limit,
                         .part = part,
                         .n_parts = n_parts};
    d->tabular = 1;
    int rc = ctr_load(&d->ctr, path, &o, err, sizeof err);
    if (rc) {
        log_error("cannot load data: %s", err);
        return rc;
    }
    *skipped += d->ctr.skipped;
    rc = check_table_ids(&d->ctr, spec, o.skip_bad, n_parts > 1 ? skipped_mine : skipped);
    d->n = d->ctr.n;
    d->dim = d->ctr.n_dense;
    return rc;
}

/* CTR training data is split as it is read: worker `me` of W keeps examples i with i mod W = me (the
 * test file is read whole: every worker evaluates its range of it). */
static int load_data(const job_config_t *cfg, const model_spec_t *spec, int me, int W, data_t *train,
                     data_t *test, size_t *skipped, size_t *skipped_mine) {
    if (strcmp(cfg->data_format, "idx")) {
        int rc = load_ctr(cfg, spec, cfg->train_file, me, W, train, skipped, skipped_mine);
        return rc ? rc : load_ctr(cfg, spec, cfg->test_file, 0, 1, test, skipped, skipped_mine);
    }
    char ti[2 * CFG_STR + 2], tl[2 * CFG_STR + 2], vi[2 * CFG_STR + 2], vl[2 * CFG_STR + 2], err[1024];
    snprintf(ti, sizeof ti, "%s/%s", cfg->data_dir, cfg->train_images);
    snprintf(tl, sizeof tl, "%s/%s", cfg->data_dir, cfg->train_labels);
    snprintf(vi, sizeof vi, "%s/%s", cfg->data_dir, cfg->test_images);
    snprintf(vl, sizeof vl, "%s/%s", cfg->data_dir, cfg->test_labels);
    int rc = idx_load(&train->idx, ti, tl, cfg->train_limit, spec->classes, err, sizeof err);
    if (!rc) rc = idx_load(&test->idx, vi, vl, cfg->test_limit, spec->classes, err, sizeof err);
    if (rc) log_error("cannot load data: %s (set [data] dir or data.dir=DIR)", err);
    train->n = train->idx.n;
    train->dim = train->idx.dim;
    test->n = test->idx.n;
    test->dim = test->idx.dim;
    return rc;
}

/* Where checkpoints are cut: at a clock c, the state with every push of a clock below c applied and
 * none at or past it. BSP: worker 0 cuts them, on the job's schedule, on its time schedule or when
 * asked, by flagging its push of `clock`; the cut is clock + 1 and the clock completes with it.
 * SSP/ASP (the shards hold pushes at or past the cut until every worker has reached it): every
 * worker flags its own push before a scheduled cut, and worker 0 places the others where no worker
 * can be before its request reaches the shards: clock + 1 + staleness (a pull of clock c waits for
 * every worker's push of c - 1 - staleness), or the end of its epoch (no worker starts an epoch before
 * all have finished this one), or the next scheduled cut, whichever comes first. A cut at the last
 * step cannot be placed there: the workers that finish first would not hear of it. */
typedef struct {
    double last;     /* when worker 0 last asked for one */
    int64_t pending; /* SSP/ASP, worker 0: the cut it asked for, not announced yet */
    int pending_stop;
} ckpt_plan_t;

/* ASP cuts on demand lie this many clocks past the furthest worker (ps_client_cut_query): workers that
 * reach the fence before worker 0's next push wait for it (one round trip). */
#define CUT_GRACE 2

/* Sets pc's request for this push. Returns 1 when a request (asked, stop) is served by it. */
static int plan_checkpoint(ps_client_t *pc, const job_config_t *cfg, int me, int64_t clock, int64_t epoch_end,
                           long total_steps, ckpt_plan_t *plan, int asked, int stop) {
    int64_t next = clock + 1, every = cfg->ckpt_every_steps;
    int scheduled = every > 0 && next % every == 0;
    int timed = me == 0 && cfg->ckpt_every_seconds > 0 && now_s() - plan->last >= cfg->ckpt_every_seconds;
    asked = me == 0 && asked;
    stop = me == 0 && stop;
    const char *why = stop ? "stop signal" : asked ? "SIGUSR2" : "schedule";
    if (!cfg->staleness) {
        if (me != 0 || !(scheduled || timed || asked || stop)) return 0;
        pc->ckpt_request = next;
        pc->ckpt_request_stop = stop;
        plan->last = now_s();
        log_info("checkpoint requested step=%lld reason=%s", (long long)next, why);
        return 1;
    }
    if (scheduled && next < total_steps) pc->ckpt_request = next;
    if (plan->pending) { /* what is asked now is served by the pending cut; a stop joins it if in time */
        if (stop && !plan->pending_stop) {
            if (next > plan->pending) return 0; /* past it: asked for again once it is announced */
            pc->ckpt_request = plan->pending;
            pc->ckpt_request_stop = plan->pending_stop = 1;
        }
        return asked || stop;
    }
    if (!(timed || asked || stop)) return 0;
    int64_t cut = epoch_end;
    if (cfg->staleness > 0 && next + cfg->staleness < cut) cut = next + cfg->staleness;
    if (cfg->staleness == CFG_STALENESS_INF) {
        /* ASP has no bound but the epoch's end: fence the shards, and cut just past the furthest worker. */
        int64_t fence = 0;
        char err[512];
        if (ps_client_cut_query(pc, CUT_GRACE, &fence, err, sizeof err))
            log_warn("checkpoint: the shards' fences are unknown (%s); the cut is the end of the epoch", err);
        else if (fence < cut)
            cut = fence;
    }
    if (every > 0 && (clock / every + 1) * every < cut) cut = (clock / every + 1) * every;
    plan->last = now_s();
    if (cut >= total_steps) {
        log_warn(
            "checkpoint asked for (%s) at step %lld: its cut would be step %lld, but training ends at %ld; "
            "none taken",
            why, (long long)next, (long long)cut, total_steps);
        return 1;
    }
    pc->ckpt_request = cut;
    pc->ckpt_request_stop = stop;
    plan->pending = cut;
    plan->pending_stop = stop;
    log_info("checkpoint requested step=%lld reason=%s at=%lld", (long long)cut, why, (long long)next);
    return 1;
}

/* Writes this worker's part of checkpoint `step` and tells the scheduler. */
static void save_state(worker_t *w, const char *root, int64_t step, const ckpt_worker_state_t *st, int stop) {
    char dir[4096], err[1024];
    ckpt_step_dir(root, step, dir, sizeof dir);
    double t0 = now_s();
    int rc = mkdir_p(dir);
    if (!rc)
        rc = ckpt_write_worker(dir, w->cl->index, st, err, sizeof err);
    else
        snprintf(err, sizeof err, "cannot create the checkpoint directory: %s", strerror(errno));
    if (rc) log_error("checkpoint %lld: worker state not written: %s", (long long)step, err);
    Tessera__Report rep;
    tessera__report__init(&rep);
    rep.ckpt_failed = rc != 0;
    rep.ckpt_seconds = now_s() - t0;
    rep.ckpt_stall_seconds = rep.ckpt_seconds;
    rep.ckpt_stop = stop;
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_CKPT_DONE);
    h.request_id = ++w->next_request;
    h.sender = w->cl->index;
    h.clock = step;
    h.role = "worker";
    h.report = &rep;
    h.error_message = rc ? err : "";
    w->outstanding++;
    if (wire_send(w->sched, NULL, &h, NULL, 0))
        log_error("checkpoint %lld: cannot reach the scheduler", (long long)step);
}

/* Saves this worker's part of checkpoint `step` once: the state of that clock, which is the one after
 * its last push or the one before (SSP/ASP: the shards held the push after the cut). Several shards
 * announce the same checkpoint, in different replies. */
static void save_cut_state(worker_t *w, const char *root, int64_t step, const ckpt_worker_state_t *now,
                           const ckpt_worker_state_t *prev, int stop, int64_t *last_saved) {
    if (step <= *last_saved) return;
    const ckpt_worker_state_t *st = now->clock == step ? now : prev->clock == step ? prev : NULL;
    if (!st) {
        log_error(
            "checkpoint %lld announced at clock %lld: this worker no longer has its state of that clock; "
            "the checkpoint will not be committed",
            (long long)step, (long long)now->clock);
        return;
    }
    save_state(w, root, step, st, stop);
    *last_saved = step;
}

/* Where a resumed worker starts: clock, epoch and position from the checkpoint. With another worker
 * count the position is scaled to the new partition (same epoch). */
static int resume_state(const char *dir, int me, int W, size_t spe_new, size_t n_train, int batch,
                        ckpt_worker_state_t *st) {
    char err[1024];
    ckpt_manifest_t m;
    if (ckpt_read_manifest(dir, &m, err, sizeof err) ||
        ckpt_read_worker(dir, m.n_workers == W ? me : 0, st, err, sizeof err)) {
        log_error("cannot resume: %s", err);
        return -TS_EIO;
    }
    st->clock = m.step;
    if (m.n_workers != W) {
        size_t spe_old = n_train / (size_t)m.n_workers / (size_t)batch;
        st->position = spe_old ? (int64_t)((size_t)st->position * spe_new / spe_old) : 0;
        st->examples = st->examples * (uint64_t)m.n_workers / (uint64_t)W;
        log_warn("resuming with %d workers from a checkpoint of %d: epoch %d continues at step %lld of %zu",
                 W, m.n_workers, st->epoch, (long long)st->position, spe_new);
    }
    return 0;
}

/* Gathers every worker's test logits and labels at worker 0, which computes the AUC and log-loss
 * over the whole test set (the others get zeros). */
static void gather_auc(const cluster_t *cl, const float *scores, const int32_t *labels, size_t n,
                       size_t total, double *auc, double *logloss) {
    int W = cl->n_workers, me = cl->index;
    int *counts = XCALLOC((size_t)W, sizeof *counts), *displs = XCALLOC((size_t)W, sizeof *displs);
    for (int w = 0; w < W; w++) {
        size_t b = total * (size_t)w / (size_t)W, e = total * (size_t)(w + 1) / (size_t)W;
        counts[w] = (int)(e - b);
        displs[w] = (int)b;
    }
    float *all_s = me == 0 ? XMALLOC((total ? total : 1) * sizeof(float)) : NULL;
    int32_t *all_l = me == 0 ? XMALLOC((total ? total : 1) * sizeof(int32_t)) : NULL;
    MPI_CHECK(MPI_Gatherv(scores, (int)n, MPI_FLOAT, all_s, counts, displs, MPI_FLOAT, 0, cl->role_comm));
    MPI_CHECK(MPI_Gatherv(labels, (int)n, MPI_INT32_T, all_l, counts, displs, MPI_INT32_T, 0, cl->role_comm));
    *auc = *logloss = 0;
    if (me == 0) {
        *auc = metric_auc(all_s, all_l, total);
        *logloss = metric_logloss(all_s, all_l, total);
    }
    free(all_s);
    free(all_l);
    free(counts);
    free(displs);
}

int worker_train(const job_config_t *cfg, const cluster_t *cl, const char *run_dir, const char *resume_dir) {
    char err[1024] = "";
    worker_t w = {.cfg = cfg, .cl = cl};
    int W = cl->n_workers, me = cl->index;
    /* A failure before training stops the job at the workers' agreement below; returning early
     * would leave the other ranks waiting for this one. */
    cluster_pick_device(cl); /* one GPU per worker of a node */
    backend_t *be = backend_create(cfg->backend, cfg->threads, err, sizeof err);
    if (!be) {
        log_error("%s", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    model_t model;
    int max_batch = cfg->batch_size > EVAL_BATCH ? cfg->batch_size : EVAL_BATCH;
    int rc = model_init(&model, cfg, be, max_batch, err, sizeof err);
    if (rc) {
        log_error("%s", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    data_t train = {0}, test = {0};
    size_t skipped = 0, skipped_mine = 0;
    rc = load_data(cfg, &model.spec, me, W, &train, &test, &skipped, &skipped_mine);
    if (!rc && (train.dim != model.spec.input_dim || test.dim != model.spec.input_dim)) {
        log_error("data has %d (train) and %d (test) features per example but [model] input = %d", train.dim,
                  test.dim, model.spec.input_dim);
        rc = -TS_EINVAL;
    }
    size_t part = train.n / (size_t)W, n_train = train.n; /* every worker runs the same number of steps */
    if (train.tabular) {
        /* Each worker holds its own share: everyone runs the steps of the smallest, and the totals are
         * summed. A worker that failed to load counts as empty (the agreement below stops the job). */
        uint64_t mine[2] = {rc ? 0 : train.n, skipped_mine}, mn = 0, sum[2];
        MPI_CHECK(MPI_Allreduce(&mine[0], &mn, 1, MPI_UINT64_T, MPI_MIN, cl->role_comm));
        MPI_CHECK(MPI_Allreduce(mine, sum, 2, MPI_UINT64_T, MPI_SUM, cl->role_comm));
        part = (size_t)mn;
        n_train = (size_t)sum[0];
        skipped += (size_t)sum[1];
    }
    size_t steps_per_epoch = part / (size_t)cfg->batch_size;
    if (!rc && steps_per_epoch == 0) {
        log_error("%zu training examples per worker is less than one batch of %d", part, cfg->batch_size);
        rc = -TS_EINVAL;
    }
    long total_steps = (long)steps_per_epoch * cfg->epochs;
    if (cfg->max_steps > 0 && cfg->max_steps < total_steps) total_steps = cfg->max_steps;

    uint64_t *rows = XCALLOC((size_t)model.spec.n_tensors, sizeof *rows);
    for (int t = 0; t < model.spec.n_tensors; t++)
        rows[t] = model.spec.tensors[t].rows;
    shard_map_t map;
    if (shard_map_init(&map, rows, model.spec.n_tensors, cl->n_ps)) rc = -TS_ENOMEM;
    free(rows);
    sparse_batch_t sb;
    sparse_batch_init(&sb, &model.spec, cl->n_ps, max_batch);
    int binary = model.spec.classes == 1;

    w.zctx = zmq_ctx_new();
    w.sched = zmq_socket(w.zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(w.sched, ZMQ_LINGER, &linger, sizeof linger);
    ps_client_t pc;
    if (!rc) rc = ZMQ_CHECK(zmq_connect(w.sched, cl->sched_endpoint));
    if (!rc)
        rc = ps_client_init(&pc, w.zctx, cl->ps_endpoints, cl->n_ps, &model.spec, &map, me, cfg->timeout_s,
                            (size_t)cfg->max_message_mb << 20, err, sizeof err);
    if (rc && err[0]) log_error("%s", err);
    if (!rc) {
        w.ckpt_seen = &pc.ckpt_seen;
        pc.grad_bf16 = !strcmp(cfg->grad_dtype, "bf16");
        pc.param_bf16 = !strcmp(cfg->param_dtype, "bf16");
    }
    /* Workers agree before anyone blocks on a shard: a worker that cannot start stops the job. */
    int failed = rc != 0, any = 0;
    MPI_CHECK(MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, cl->role_comm));
    if (any) MPI_Abort(MPI_COMM_WORLD, 1);
    node_reduce_t nr = {0};
    node_rows_t nrows = {0};
    if (cfg->node_reduce) {
        if (node_reduce_init(&nr, cl, &model, &map, err, sizeof err)) { /* the same on every worker */
            if (me == 0) log_error("%s", err);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (model.spec.n_tables) node_rows_init(&nrows, &sb, cl->n_ps);
        pc.only = nr.mine;
        pc.worker = cl->node_index; /* the shards see one pusher per node */
        int mine = 0;
        for (int k = 0; k < cl->n_ps; k++)
            mine += nr.mine[k];
        log_info("node_reduce node=%d of=%d local=%d of=%d shards_mine=%d share_floats=%zu", cl->node_index,
                 cl->n_worker_nodes, cl->node_local, cl->node_size, mine, nr.block);
    }

    size_t n_floats = model.spec.n_floats;
    /* A device backend stages parameters and gradients through host buffers: pinned when it has them. */
    xregion_t xr = {.fd = -1};
    float *params = NULL, *grads = NULL;
    int local = local_region(&xr, cfg, &model, nr.mine != NULL, &params, &grads);
    if (!local) {
        params = be->host_memory ? model.params : backend_host_alloc(be, n_floats * sizeof(float));
        grads = be->host_memory ? model.grads : backend_host_alloc(be, n_floats * sizeof(float));
    }
    /* Device memory is staged through params and grads each step, unless node_reduce's device path
     * moves the model's buffers itself. */
    int stage = !be->host_memory && !nr.device;
    float *xb = XMALLOC((size_t)max_batch * (size_t)model.spec.input_dim * sizeof(float));
    int32_t *yb = XMALLOC((size_t)max_batch * sizeof(int32_t));
    uint32_t *perm = XMALLOC((part > EVAL_BATCH ? part : EVAL_BATCH) * sizeof(uint32_t));
    uint32_t *eval_idx = XMALLOC(EVAL_BATCH * sizeof(uint32_t));

    Tessera__Report rep;
    tessera__report__init(&rep);
    rep.steps_total = (uint64_t)total_steps;
    sched_send(&w, TESSERA__KIND__KIND_HELLO, &rep);
    if (me == 0)
        log_info("training examples=%zu per_worker=%zu batch=%d steps_per_epoch=%zu steps=%ld params=%zu "
                 "model_parallel_layers=%d model_parallel_params=%zu",
                 n_train, part, cfg->batch_size, steps_per_epoch, total_steps, n_floats, model.spec.n_remote,
                 model.spec.remote_floats);

    ckpt_worker_state_t start = {0};
    if (resume_dir && resume_state(resume_dir, me, W, steps_per_epoch, n_train, cfg->batch_size, &start))
        MPI_Abort(MPI_COMM_WORLD, 1);
    if (resume_dir && me == 0)
        log_info("resuming from %s step=%lld epoch=%d position=%lld", resume_dir, (long long)start.clock,
                 start.epoch, (long long)start.position);
    char ckpt_dir[4096];
    ckpt_root(run_dir, cfg, ckpt_dir, sizeof ckpt_dir);
    int64_t clock = start.clock;
    if (model.spec.n_remote && !be->host_memory) {
        log_error("model-parallel layers (parallel = model) need a backend with host memory (cpu), not %s",
                  be->ops->name);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    remote_ctx_t rctx = {.pc = &pc, .clock = &clock};
    layer_remote_t remote = {.ctx = &rctx, .fwd = remote_fwd, .bwd = remote_bwd};
    for (int i = 0; i < model.spec.n_layers; i++)
        if (model.spec.layers[i].remote_weight) model.spec.layers[i].remote = &remote;
    int n_local = 0;
    unsigned char handle[BACKEND_IPC_HANDLE];
    float *dreg = local ? device_region(&xr, cfg, &model, handle) : NULL;
    if (!rc && local) {
        rc = ps_client_attach(&pc, xr.path, xr.bytes, params, grads, dreg ? handle : NULL, &n_local, err,
                              sizeof err);
        log_info("local_exchange worker=%d shards=%d of=%d device_shards=%d region_mb=%.1f", me, n_local,
                 cl->n_ps, pc.n_local_dev, (double)xr.bytes / 1e6);
    }
    if (!rc) rc = whole_pull(&pc, &nr, clock, params, err, sizeof err);
    if (stage) stage_params(be, &pc, model.params, params, n_floats);
    /* With shards writing the device parameters themselves, a part leaves only once the kernels that
     * read its layers' parameters are done (its copy's ticket), so its reply cannot write under them. */
    double bucket_mb = cfg->push_bucket_mb;
    overlap_t ov;
    overlap_init(&ov, &model, &pc, stage ? grads : model.grads, stage ? params : model.params, bucket_mb,
                 nr.mine != NULL);
    if (me == 0)
        log_info("overlap push_bucket_mb=%g parts_per_step=%d device_copies=%s grad_dtype=%s param_dtype=%s "
                 "grad_rounding=%s param_widening=%s",
                 nr.mine ? 0 : bucket_mb, overlap_parts_per_step(&ov),
                 !stage                 ? "none"
                 : ov.async && !nr.mine ? "async"
                                        : "sync",
                 cfg->grad_dtype, cfg->param_dtype,
                 !pc.grad_bf16 ? "none"
                 : ov.dev16    ? "device"
                               : "host",
                 !pc.param_bf16 ? "none"
                 : ov.pdev16    ? "device"
                                : "host");
    double train_seconds = start.train_seconds, last_report = now_s(), compute_s = 0, sync_s = 0;
    ckpt_plan_t plan = {.last = now_s()};
    ckpt_worker_state_t state_now = {.clock = -1}, state_prev = {.clock = -1};
    int64_t last_saved = start.clock; /* the newest checkpoint this worker wrote its part of */
    double win_loss = 0;
    long win_correct = 0, win_count = 0;
    uint64_t examples = start.examples;
    int stopping = 0, stop_planned = 0;
    int64_t stop_step = 0;
    malloc_trim(0); /* setup's temporaries: the heap is not trimmed on its own (common/program.c) */
    /* The resumed epoch always runs: it may have no steps left but still owe its evaluation. */
    for (int epoch = start.epoch;
         !rc && !stopping && epoch < cfg->epochs && (clock < total_steps || epoch == start.epoch); epoch++) {
        rng_t rng;
        rng_seed(&rng, seed_derive(cfg->seed, (uint64_t)me, (uint64_t)epoch));
        for (size_t i = 0; i < part; i++) /* tabular data holds only this worker's share */
            perm[i] = (uint32_t)((train.tabular ? 0 : (size_t)me * part) + i);
        rng_shuffle_u32(&rng, perm, part);
        double ep_loss = 0, t0 = now_s();
        long ep_correct = 0, ep_count = 0;
        size_t first = epoch == start.epoch ? (size_t)start.position : 0;
        for (size_t s = first; s < steps_per_epoch && clock < total_steps && !stopping; s++) {
            int B = cfg->batch_size;
            data_gather(&train, cfg, perm + s * (size_t)B, (size_t)B, xb, yb, &sb);
            double loss = 0, tc = now_s();
            long correct = 0;
            overlap_begin(&ov, clock);
            rc = run_batch(&model, &pc, &sb, xb, yb, B, 1, &loss, &correct, err, sizeof err);
            if (rc) break;
            double tp = now_s();
            compute_s += tp - tc;
            rc = overlap_finish(&ov, err, sizeof err);
            if (rc) break;
            /* Worker 0 cuts checkpoints; a request or a stop asked of any rank reaches it through the
             * shards' replies or the scheduler's acknowledgements. A stop checkpoint is asked for once. */
            pc.stop_requested = program_stop_requested != 0;
            if (me != 0 && program_checkpoint_requested) { /* relay it to worker 0 through the shards */
                pc.ckpt_asked = 1;
                program_checkpoint_requested = 0;
            }
            int asked = program_checkpoint_requested || pc.peer_ckpt || w.sched_ckpt;
            int stop_asked = program_stop_requested || pc.peer_stop || w.sched_stop;
            int64_t epoch_end = clock + (int64_t)(steps_per_epoch - s);
            if (plan_checkpoint(&pc, cfg, me, clock, epoch_end, total_steps, &plan, asked,
                                !stop_planned && stop_asked)) {
                program_checkpoint_requested = 0;
                pc.peer_ckpt = w.sched_ckpt = 0;
                stop_planned |= me == 0 && stop_asked;
            }
            /* This worker's state once the push is in: what it saves if the cut is there (BSP: the
             * reply says so; SSP/ASP: this reply or the next, the shards holding the push after it). */
            ckpt_worker_state_t after = {.clock = clock + 1,
                                         .epoch = epoch,
                                         .position = (int64_t)s + 1,
                                         .examples = examples + (uint64_t)B};
            rc = push_pull(&pc, &nr, &nrows, clock, grads, &sb, params, err, sizeof err);
            pc.ckpt_request = 0;
            pc.ckpt_request_stop = 0;
            pc.ckpt_asked = 0;
            if (rc) break;
            sync_s += now_s() - tp;
            if (stage && !overlap_params_on_device(&ov))
                stage_params(be, &pc, model.params, params, n_floats);
            clock++;
            examples += (uint64_t)B;
            state_prev = state_now;
            state_now = after;
            state_now.train_seconds = train_seconds + (now_s() - t0);
            if (pc.ckpt_missed > 0) /* SSP/ASP: one the shards cut before this worker heard of it */
                save_cut_state(&w, ckpt_dir, pc.ckpt_missed, &state_now, &state_prev, 0, &last_saved);
            pc.ckpt_missed = 0;
            if (pc.ckpt_announced > 0) {
                int64_t step = pc.ckpt_announced;
                save_cut_state(&w, ckpt_dir, step, &state_now, &state_prev, pc.ckpt_announced_stop,
                               &last_saved);
                if (plan.pending && step >= plan.pending) plan.pending = plan.pending_stop = 0;
                stopping = pc.ckpt_announced_stop;
                if (stopping) stop_step = step;
                pc.ckpt_announced = 0;
                pc.ckpt_announced_stop = 0;
            }
            ep_loss += loss;
            ep_correct += correct;
            ep_count += B;
            win_loss += loss;
            win_correct += correct;
            win_count += B;
            double t = now_s();
            if (t - last_report >= cfg->progress_interval_s / 2) {
                rep.epoch = (uint32_t)epoch;
                rep.step = (uint64_t)clock;
                rep.examples = examples;
                rep.loss_sum = win_loss;
                rep.correct = (uint64_t)win_correct;
                rep.count = (uint64_t)win_count;
                rep.train_seconds = train_seconds + (t - t0);
                sched_send(&w, TESSERA__KIND__KIND_REPORT, &rep);
                sched_drain(&w, 0);
                win_loss = 0;
                win_correct = win_count = 0;
                last_report = t;
            }
        }
        if (rc) break;
        double ep_seconds = now_s() - t0;
        train_seconds += ep_seconds;

        /* SSP/ASP: a worker's parameters are its last view, which may lack the others' last pushes. Once
         * every worker's last push is in (this reduction: every worker reaches it once per epoch it
         * entered, stopping or not), each pulls the shards' final state, so that the last evaluation,
         * params.bin and the digest are of the model the shards hold, checkpoint and serve. */
        if (cfg->staleness != 0) {
            int st = stopping, any_stop = 0;
            MPI_CHECK(MPI_Allreduce(&st, &any_stop, 1, MPI_INT, MPI_MAX, cl->role_comm));
            if (!any_stop && (epoch + 1 >= cfg->epochs || clock >= total_steps)) {
                pc.params_taken = NULL; /* no step follows: one copy to the device below, not per reply */
                pc.params16 = NULL;     /* ... of parameters widened on the host */
                if (whole_pull(&pc, &nr, clock, params, err, sizeof err)) {
                    log_error("final pull failed: %s", err);
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
                if (stage) stage_params(be, &pc, model.params, params, n_floats);
            }
        }

        /* Every worker joins this reduction once per epoch it entered, stopping or not, so a stop that
         * reaches workers at different points (SSP/ASP) cannot leave one waiting here forever. It
         * carries the evaluation counts, the slowest epoch time and whether anyone is stopping. */
        double local[6] = {ep_loss, (double)ep_correct, (double)ep_count, 0, 0, 0}, global[6];
        double lmax[3] = {ep_seconds, stopping, (double)stop_step}, gmax[3];
        size_t tb = test.n * (size_t)me / (size_t)W, te = test.n * (size_t)(me + 1) / (size_t)W;
        FILE *logits = NULL;
        char lpath[4200];
        if (cfg->save_test_logits && !stopping) {
            /* The last epoch's file stays: the test logits of the trained model, rows [tb, te). */
            snprintf(lpath, sizeof lpath, "%s/test-logits-%09zu-%09zu.f32", run_dir, tb, te);
            if (!(logits = fopen(lpath, "wb"))) log_warn("cannot write %s: %s", lpath, strerror(errno));
        }
        size_t nt = te - tb;
        float *scores = binary ? XMALLOC((nt ? nt : 1) * sizeof(float)) : NULL;
        int32_t *labels = binary ? XMALLOC((nt ? nt : 1) * sizeof(int32_t)) : NULL;
        if (!stopping)
            rc = evaluate(&model, &pc, &sb, &test, tb, te, cfg, xb, yb, eval_idx, local + 3, logits, scores,
                          labels, err, sizeof err);
        if (logits) fclose(logits);
        if (rc) {
            log_error("evaluation failed: %s", err);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        double auc = 0, logloss = 0;
        if (binary && !stopping) gather_auc(cl, scores, labels, nt, test.n, &auc, &logloss);
        free(scores);
        free(labels);
        MPI_CHECK(MPI_Allreduce(local, global, 6, MPI_DOUBLE, MPI_SUM, cl->role_comm));
        MPI_CHECK(MPI_Allreduce(lmax, gmax, 3, MPI_DOUBLE, MPI_MAX, cl->role_comm));
        if (gmax[1] > 0) {
            /* Finished the epoch before the announcement reached it: the cut is this epoch's end (the
             * state every worker that was told saves too: the epoch, every step done, its evaluation
             * owed). */
            if (!stopping)
                save_cut_state(&w, ckpt_dir, (int64_t)gmax[2], &state_now, &state_prev, 1, &last_saved);
            stopping = 1;
            break;
        }
        if (me == 0) {
            rep.epoch = (uint32_t)epoch + 1;
            rep.step = (uint64_t)clock;
            rep.examples = (uint64_t)global[2];
            rep.loss_sum = global[0];
            rep.correct = (uint64_t)global[1];
            rep.count = (uint64_t)global[2];
            rep.train_seconds = gmax[0];
            rep.test_loss = global[5] > 0 ? global[3] / global[5] : 0;
            rep.test_accuracy = global[5] > 0 ? global[4] / global[5] : 0;
            rep.has_auc = binary;
            rep.test_auc = auc;
            rep.test_logloss = logloss;
            rep.data_skipped = skipped;
            sched_send(&w, TESSERA__KIND__KIND_EPOCH, &rep);
            sched_drain(&w, 0);
        }
    }
    if (rc) {
        log_error("training failed at clock=%lld: %s", (long long)clock, err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }

    char digest[17];
    if (!be->host_memory) be->ops->to_host(be, params, model.params, n_floats * sizeof(float));
    if (pc.n_local_dev) { /* the shards unmap the device region before it can be freed (CUDA IPC) */
        int n = 0;
        if (ps_client_attach(&pc, "", 0, params, grads, NULL, &n, err, sizeof err)) {
            log_warn("detaching the device region: %s; it is kept until exit", err);
            dreg = NULL; /* a shard may still map it: freeing it now is undefined (CUDA IPC) */
        }
    }
    if (me == 0 && !stopping && !strcmp(cfg->param_dtype, "bf16")) {
        /* The model trained on bfloat16 copies; params.bin and the digest are the shards' float32
         * masters, which checkpoints and serving hold too. */
        pc.params_taken = NULL;
        pc.params16 = NULL;
        pc.only = NULL;
        pc.full_precision = 1;
        rc = ps_client_pull(&pc, clock, params, err, sizeof err);
        if (rc) {
            log_error("final float32 pull failed: %s", err);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    digest_hex(params, n_floats * sizeof(float), digest);
    if (me == 0 && !stopping) {
        char path[4096];
        snprintf(path, sizeof path, "%s/params.bin", run_dir);
        if (write_file_atomic(path, params, n_floats * sizeof(float)))
            log_error("cannot write %s: %s", path, strerror(errno));
    }
    tessera__report__init(&rep);
    rep.step = (uint64_t)clock;
    rep.examples = examples;
    rep.train_seconds = train_seconds;
    rep.steps_total = (uint64_t)total_steps;
    rep.param_digest = digest;
    sched_send(&w, TESSERA__KIND__KIND_DONE, &rep);
    sched_drain(&w, 1);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    log_info("worker done steps=%lld examples=%llu train_s=%.2f compute_s=%.2f sync_s=%.2f sent_mb=%.1f "
             "received_mb=%.1f local_mb=%.1f max_rss_mb=%.1f",
             (long long)clock, (unsigned long long)examples, train_seconds, compute_s, sync_s,
             (double)pc.bytes_sent / 1e6, (double)pc.bytes_received / 1e6, (double)pc.bytes_local / 1e6,
             (double)ru.ru_maxrss / 1024.0);

    overlap_free(&ov);
    ps_client_free(&pc);
    node_reduce_free(&nr);
    node_rows_free(&nrows);
    zmq_close(w.sched);
    zmq_ctx_term(w.zctx);
    shard_map_free(&map);
    if (!be->host_memory && !local) {
        backend_host_free(be, params);
        backend_host_free(be, grads);
    }
    free(xb);
    free(yb);
    free(perm);
    free(eval_idx);
    data_free(&train);
    data_free(&test);
    sparse_batch_free(&sb);
    model_free(&model);
    local_region_free(&xr, be, dreg);
    backend_free(be);
    return 0;
}
