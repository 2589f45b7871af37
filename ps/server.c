#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "ckpt.h"
#include "config.h"
#include "shard_map.h"
#include "sparse_reply.h"
#include "sparse_table.h"
#include "util.h"
#include "wire.h"
#include "xregion.h"

typedef struct {
    int tensor;
    uint64_t row_begin, rows, cols;
    size_t n; /* elements */
    float *p, *s0, *s1;
    long steps;
    /* ps.device: the slice's parameters and optimizer state on the device, where they are stepped; p
     * gets the parameters back when something reads it (slice_host: replies over the wire or through a
     * host region, serving, checkpoints), s0/s1 the state before every checkpoint */
    float *d_p, *d_s0, *d_s1;
    int host_stale; /* d_p was stepped since p last got it */
} slice_t;

typedef struct {
    zmq_msg_t identity;
    uint64_t request_id;
    int64_t want; /* the clock the parameters must reflect */
    int worker;   /* sender, or -1 for a non-worker */
    int n_reply;  /* the local slices [0, n_reply) to send: the rest went back in part replies */
    int f32;      /* float32 even with net.param_dtype = bf16 */
} waiting_pull_t;

/* A BSP PUSH_PART waiting for its slices' updates: answered with them (PARAMS) once every worker's
 * gradient of those slices is in and applied. */
typedef struct {
    zmq_msg_t identity;
    uint64_t request_id;
    int first, n; /* local slices */
    int worker;
} waiting_part_t;

/* One table's row gradients in a worker's push: the rows they go to and the frame that holds them. */
typedef struct {
    int table;
    size_t n;
    uint32_t *idx;
    zmq_msg_t grads;
} sparse_part_t;

/* The sparse parts of one worker's pending BSP push. */
typedef struct {
    int n, cap;
    sparse_part_t *parts;
} sparse_pending_t;

/* A checkpoint being written in the background: copies of the slices, owned by the writer. */
typedef struct {
    ps_server_t *srv;
    int64_t step;
    int stop;
    ckpt_slice_t *slices;
    float *data;
    ckpt_table_t *tables; /* copies of every table's rows, owned */
    double stall_s;
} ckpt_job_t;

typedef struct {
    atomic_int refs;
    int n;        /* local slices [0, n) it holds */
    int bf16;     /* data holds bfloat16 values (uint16_t), not float32 */
    float data[]; /* their parameters, in slice order */
} snapshot_t;

struct ps_server {
    ps_config_t cfg;
    void *router, *sched;
    int n_slices, n_local; /* slices [0, n_local) are pulled and pushed; the rest are remote weights */
    slice_t *slices;
    backend_t *be;  /* the products of remote weights (created when the model has some) */
    backend_t *dev; /* ps.device other than cpu: where the slices are stepped (NULL: here) */
    float *d_grads; /* on dev: one gradient per worker, d_stride floats each */
    size_t d_stride;
    int64_t *clock;     /* per worker: iterations whose gradients have arrived */
    zmq_msg_t *pending; /* BSP: [worker * n_slices + slice], gradients of the open clock */
    int *has_pending;   /* per worker */
    int *parts_held;    /* per worker: local slices of the open clock that came in PUSH_PARTs */
    /* BSP: per slice, the workers whose gradient of the open clock is in, and whether the slice was
     * updated already (every worker's was in before the clock completed); the parts awaiting that */
    int *have, *applied, n_applied;
    waiting_part_t *part_waits;
    int n_part_waits, cap_part_waits;
    int n_pending;
    waiting_pull_t *waiting;
    int n_waiting, max_waiting;
    snapshot_t *snap, *snap16; /* the current parameters as replies send them (float32, bfloat16); NULL
                                  once they change */
    int stop;
    uint64_t pushes, push_parts, part_replies, pushes_held, pushes_fenced, errors, heartbeat_id;
    double apply_s, busy_s; /* time in optimizer steps, and handling messages */
    double last_heartbeat;
    /* checkpoints */
    int64_t ckpt_want; /* take a checkpoint when min_clock reaches this (0 = none) */
    int64_t fence;     /* SSP/ASP, after worker 0's CUT_QUERY: others' pushes of clock >= this wait for its
                          next push (0 = none) */
    int ckpt_want_stop;
    /* SSP/ASP: pushes of clock ckpt_want or later, held until the checkpoint is taken (at most one per
     * worker: a worker waits for its push's reply) */
    wire_msg_t *held;
    int n_held;
    int64_t ckpt_last; /* the last checkpoint taken, announced in replies */
    int ckpt_last_stop;
    int64_t ckpt_prev;  /* the checkpoint before ckpt_last */
    int64_t *ckpt_told; /* per worker: the newest checkpoint announced to it */
    int stop_seen;      /* a stop was requested somewhere: tell every worker */
    int ckpt_asked;     /* a checkpoint was asked for somewhere and not taken yet */
    pthread_t writer;
    int writer_running;     /* a writer thread was started and not joined */
    atomic_int writer_busy; /* ... and is still writing */
    float *ckpt_buf;        /* snapshot buffer, reused; the writer owns it until joined */
    /* the descriptors of this shard's slices, as every PARAMS reply sends them */
    Tessera__TensorDesc *descs, **desc_ptrs, *descs16, **desc16_ptrs; /* float32, bfloat16 */
    Tessera__TensorDesc *descsx, **descx_ptrs; /* float32 in the worker's exchange region */
    /* net.local_exchange: per worker, its exchange region when it attached from this host (else unmapped) */
    xregion_t *xr;
    int *xr_pinned; /* ps.device: registered with the device (cudaHostRegister) */
    float **xd;     /* ps.device: per worker, its device region when it attached that instead (CUDA IPC) */
    uint64_t local_bytes; /* dense bytes read from and written to regions instead of sent */
    uint64_t *desc_shapes;
    uint64_t serve_version; /* SERVE received: serve the parameters as this version */
    /* sparse tables: this shard's rows of each */
    int n_tables;
    sparse_table_t **tables;
    sparse_table_cfg_t *tcfg;
    mem_budget_t budget;
    sparse_pending_t *sp_pending; /* per worker (BSP) */
    uint64_t sparse_pulls, rows_pulled, rows_pushed;
};

/* The checkpoint snapshot buffer holds every slice's parameters and optimizer slots, each starting
 * 4 KiB-aligned, so that the writer can hand them to the disk with O_DIRECT (common/ckpt.c). */
#define CKPT_ALIGN 4096

static size_t ckpt_slot_floats(size_t n) {
    size_t a = CKPT_ALIGN / sizeof(float);
    return (n + a - 1) / a * a;
}

static size_t ckpt_buf_floats(const ps_server_t *s, int slots) {
    size_t total = 0;
    for (int i = 0; i < s->n_slices; i++)
        total += ckpt_slot_floats(s->slices[i].n) * (size_t)(1 + slots);
    return total ? total : 1;
}

/* Parameters are never sent from live memory: an update could change them while ZeroMQ still sends
 * (a peer that does not read would otherwise stall or race every update). Replies share a snapshot
 * of one parameter version, reference-counted by ZeroMQ's free callback; BSP copies once per step. */
static void snapshot_unref(snapshot_t *snap) {
    if (snap && atomic_fetch_sub(&snap->refs, 1) == 1) free(snap);
}

static void release_snapshot(void *data, void *hint) {
    (void)data;
    snapshot_unref(hint);
}

/* ps.device: the slice's parameters in p, copied from the device if a step since made p stale. Replies
 * to workers that map the device region, the common case, never need them. */
static const float *slice_host(const ps_server_t *s, slice_t *sl) {
    if (sl->host_stale) {
        s->dev->ops->to_host(s->dev, sl->p, sl->d_p, sl->n * sizeof(float));
        sl->host_stale = 0;
    }
    return sl->p;
}

/* A copy of local slices [first, first + n), float32 or rounded to bfloat16, with one reference (the
 * caller's); snap->n is n. */
static snapshot_t *copy_slices(const ps_server_t *s, int first, int n, int bf16) {
    size_t total = 0, esize = bf16 ? sizeof(uint16_t) : sizeof(float);
    for (int i = first; i < first + n; i++)
        total += s->slices[i].n;
    snapshot_t *snap = XMALLOC(sizeof *snap + (total ? total : 1) * esize);
    atomic_init(&snap->refs, 1);
    snap->n = n;
    snap->bf16 = bf16;
    char *dst = (char *)snap->data;
    for (int i = first; i < first + n; i++) {
        const float *p = slice_host(s, &s->slices[i]);
        if (bf16)
            bf16_from_f32((uint16_t *)(void *)dst, p, s->slices[i].n);
        else
            memcpy(dst, p, s->slices[i].n * sizeof(float));
        dst += s->slices[i].n * esize;
    }
    return snap;
}

/* The frames of slices [first, first + n) from `snap`, which holds them from its start; each frame
 * takes a reference. */
static void snapshot_frames(const ps_server_t *s, snapshot_t *snap, int first, int n, wire_buf_t *bufs) {
    size_t off = 0, esize = snap->bf16 ? sizeof(uint16_t) : sizeof(float);
    for (int i = first; i < first + n; i++) {
        bufs[i - first] =
            (wire_buf_t){(char *)snap->data + off, s->slices[i].n * esize, release_snapshot, snap};
        off += s->slices[i].n * esize;
    }
    atomic_fetch_add(&snap->refs, n);
}

/* A snapshot of the current parameters of local slices [0, n) at least, made on first use after a
 * change (or when a longer one is needed); one per kind (float32, bfloat16). */
static snapshot_t *current_snapshot(ps_server_t *s, int n, int bf16) {
    snapshot_t **cur = bf16 ? &s->snap16 : &s->snap;
    if (*cur && (*cur)->n >= n) return *cur;
    snapshot_unref(*cur);              /* too short: BSP replies after parts need only a prefix, a pull all */
    *cur = copy_slices(s, 0, n, bf16); /* the server's own reference */
    return *cur;
}

/* Called before parameters change: replies from now on need a new snapshot. */
static void params_changing(ps_server_t *s) {
    snapshot_unref(s->snap);
    snapshot_unref(s->snap16);
    s->snap = s->snap16 = NULL;
}

static void explain_budget(const ps_server_t *s, int slots, char *err, size_t errlen);

/* Loads this shard's rows of table t from the checkpoint in cfg.resume_dir, written by `n_files`
 * shards. 0, or an error naming the file (or the budget). */
static int restore_table(ps_server_t *s, int t, int n_files, char *err, size_t errlen) {
    size_t before = sparse_table_size(s->tables[t]), kept = 0;
    int rc = sparse_table_restore(s->tables[t], s->cfg.resume_dir, n_files, s->cfg.spec->tables[t].optimizer,
                                  &kept, err, errlen);
    if (rc == -TS_ENOMEM) explain_budget(s, optim_slots(&s->cfg.opt), err, errlen);
    if (rc) return rc;
    log_info("shard restored table=%s rows=%zu new_rows=%zu from_files=%d", s->tcfg[t].name, kept,
             sparse_table_size(s->tables[t]) - before, n_files);
    return 0;
}

/* Loads every slice (parameters, optimizer state and step counts) from the checkpoint in
 * cfg.resume_dir, whatever shard count wrote it, and sets every worker's clock to its step. */
static int restore(ps_server_t *s, char *err, size_t errlen) {
    ckpt_manifest_t m;
    int rc = ckpt_read_manifest(s->cfg.resume_dir, &m, err, errlen);
    if (!rc && m.optimizer[0] && s->cfg.job && strcmp(m.optimizer, s->cfg.job->opt_type)) {
        snprintf(err, errlen,
                 "%s was trained with optimizer %s but the job says %s: its state cannot carry over",
                 s->cfg.resume_dir, m.optimizer, s->cfg.job->opt_type);
        return -TS_EINVAL;
    }
    for (int i = 0; !rc && i < s->n_slices; i++) {
        slice_t *sl = &s->slices[i];
        float *dst[3] = {sl->p, sl->s0, sl->s1};
        for (int k = 0; !rc && k < 3 && dst[k]; k++)
            rc =
                ckpt_read_rows(s->cfg.resume_dir, m.n_shards, s->cfg.spec->tensors[sl->tensor].name, sl->cols,
                               k, sl->row_begin, sl->row_begin + sl->rows, dst[k], &sl->steps, err, errlen);
    }
    for (int t = 0; !rc && t < s->n_tables; t++)
        rc = restore_table(s, t, m.n_shards, err, errlen);
    if (rc) return rc;
    for (int w = 0; w < s->cfg.n_workers; w++)
        s->clock[w] = m.step;
    log_info("shard restored checkpoint=%s step=%lld written_by_shards=%d", s->cfg.resume_dir,
             (long long)m.step, m.n_shards);
    return 0;
}

/* Appends to `err` what the whole model needs (dense parameters and the pre-sized tables, with their
 * optimizer state and index) and how many shards of this budget would hold it. */
static void explain_budget(const ps_server_t *s, int slots, char *err, size_t errlen) {
    const model_spec_t *spec = s->cfg.spec;
    double total = (double)(spec->n_floats + spec->remote_floats) * sizeof(float) * (1 + slots);
    for (int t = 0; t < spec->n_tables; t++) {
        optim_t o = s->cfg.opt; /* tables after the one that failed are not configured yet */
        optim_parse_kind(spec->tables[t].optimizer, &o.kind);
        total +=
            (double)spec->tables[t].rows * (double)sparse_row_bytes(spec->tables[t].dim, optim_slots(&o));
    }
    double limit = (double)s->budget.limit_bytes;
    int S = s->cfg.map->n_shards;
    long need = limit > 0 ? (long)(total * 1.02 / limit) + 1 : 1; /* hashing spreads rows within ~1% */
    size_t used = strlen(err);
    snprintf(
        err + used, errlen - used,
        "; the model needs %.1f MB in all (dense parameters and pre-sized tables with their state), %.1f MB "
        "per shard with %d shards: use at least %ld shards or raise ps.memory_mb",
        total / 1048576.0, total / 1048576.0 / S, S, need);
}

/* Charges the dense slices to the shard's budget and creates its rows of every sparse table (a
 * pre-sized table's all at once). 0, or -TS_ENOMEM / -TS_EINVAL with a message naming the budget. */
static int create_tables(ps_server_t *s, int slots, char *err, size_t errlen) {
    const model_spec_t *spec = s->cfg.spec;
    s->budget.limit_bytes = s->cfg.memory_bytes;
    for (int i = 0; i < s->n_slices; i++)
        s->budget.used_bytes += (uint64_t)s->slices[i].n * sizeof(float) * (uint64_t)(1 + slots);
    if (s->budget.limit_bytes && s->budget.used_bytes > s->budget.limit_bytes) {
        snprintf(
            err, errlen,
            "shard %d: its dense slices need %.1f MB with their optimizer state but the budget is %.1f MB "
            "(ps.memory_mb)",
            s->cfg.shard, (double)s->budget.used_bytes / 1048576.0,
            (double)s->budget.limit_bytes / 1048576.0);
        explain_budget(s, slots, err, errlen);
        return -TS_ENOMEM;
    }
    s->n_tables = spec->n_tables;
    s->tables = XCALLOC((size_t)(s->n_tables ? s->n_tables : 1), sizeof *s->tables);
    s->tcfg = XCALLOC((size_t)(s->n_tables ? s->n_tables : 1), sizeof *s->tcfg);
    s->sp_pending = XCALLOC((size_t)s->cfg.n_workers, sizeof *s->sp_pending);
    for (int t = 0; t < s->n_tables; t++) {
        const table_info_t *ti = &spec->tables[t];
        sparse_table_cfg_t *c = &s->tcfg[t];
        c->name = ti->name;
        c->table = (uint32_t)t;
        c->dim = ti->dim;
        c->rows = ti->rows;
        c->bound = ti->bound;
        c->seed = s->cfg.seed;
        c->opt = s->cfg.opt;
        if (optim_parse_kind(ti->optimizer, &c->opt.kind)) {
            snprintf(err, errlen, "table %s: unknown optimizer '%s'", ti->name, ti->optimizer);
            return -TS_EINVAL;
        }
        c->opt.lr = (float)ti->lr;
        c->shard = s->cfg.shard;
        c->n_shards = s->cfg.map->n_shards;
        s->tables[t] = sparse_table_create(c, &s->budget, err, errlen);
        if (!s->tables[t]) {
            explain_budget(s, slots, err, errlen);
            return -TS_ENOMEM;
        }
    }
    size_t rows = 0;
    for (int t = 0; t < s->n_tables; t++)
        rows += sparse_table_size(s->tables[t]);
    if (s->n_tables)
        log_info("shard sparse tables=%d rows=%zu memory_mb=%.1f budget_mb=%.1f", s->n_tables, rows,
                 (double)s->budget.used_bytes / 1048576.0, (double)s->budget.limit_bytes / 1048576.0);
    return 0;
}

static void sparse_pending_clear(sparse_pending_t *p) {
    for (int i = 0; i < p->n; i++) {
        free(p->parts[i].idx);
        zmq_msg_close(&p->parts[i].grads);
    }
    p->n = 0;
}

/* ps.device: opens the backend and moves every slice's parameters and optimizer state onto it. */
static int open_device(ps_server_t *s, char *err, size_t errlen) {
    char why[512];
    s->dev = backend_create(s->cfg.device, 1, why, sizeof why);
    if (!s->dev) {
        snprintf(err, errlen, "ps.device = %s: %s", s->cfg.device, why);
        return -TS_EINVAL;
    }
    if (!s->dev->ops->optim_step) {
        snprintf(err, errlen, "ps.device = %s: the backend has no optimizer step", s->cfg.device);
        return -TS_EINVAL;
    }
    for (int i = 0; i < s->n_slices; i++) {
        slice_t *sl = &s->slices[i];
        size_t bytes = sl->n * sizeof(float);
        float **dst[3] = {&sl->d_p, &sl->d_s0, &sl->d_s1}, *src[3] = {sl->p, sl->s0, sl->s1};
        for (int k = 0; k < 3; k++) {
            if (!src[k]) continue;
            if (!(*dst[k] = s->dev->ops->alloc(s->dev, bytes ? bytes : 4))) {
                snprintf(err, errlen, "ps.device = %s: out of device memory for %s", s->cfg.device,
                         s->cfg.spec->tensors[sl->tensor].name);
                return -TS_ENOMEM;
            }
            s->dev->ops->to_device(s->dev, *dst[k], src[k], bytes);
        }
        if (sl->n > s->d_stride) s->d_stride = sl->n;
    }
    /* BSP steps a slice with every worker's gradient at once, SSP/ASP with one */
    size_t total = s->d_stride * (size_t)(s->cfg.staleness ? 1 : s->cfg.n_workers) * sizeof(float);
    if (!(s->d_grads = s->dev->ops->alloc(s->dev, total ? total : 4))) {
        snprintf(err, errlen, "ps.device = %s: out of device memory for %d workers' gradients", s->cfg.device,
                 s->cfg.n_workers);
        return -TS_ENOMEM;
    }
    return 0;
}

/* Worker w's region, host or device, when it attached one here (else NULL). */
static float *region_of(const ps_server_t *s, int w) {
    return s->xd[w] ? s->xd[w] : s->xr[w].base;
}

/* Whether p (a gradient frame's data) is a view of some worker's device region rather than host memory
 * (a frame the worker sent inline is host memory, attached or not). */
static int in_device_region(const ps_server_t *s, const void *p) {
    size_t bytes = xregion_bytes(s->cfg.spec->n_floats);
    for (int w = 0; w < s->cfg.n_workers; w++) {
        const char *b = (const char *)s->xd[w];
        if (b && (const char *)p >= b && (const char *)p < b + bytes) return 1;
    }
    return 0;
}

/* Unmaps worker w's exchange region (unpinned first, with ps.device), or its device region. */
static void detach(ps_server_t *s, int w) {
    if (s->xd[w]) {
        s->dev->ops->sync(s->dev); /* nothing queued may still write there */
        s->dev->ops->ipc_close(s->dev, s->xd[w]);
        s->xd[w] = NULL;
    }
    if (s->xr_pinned[w]) s->dev->ops->unregister_host(s->dev, s->xr[w].base);
    s->xr_pinned[w] = 0;
    xregion_close(&s->xr[w]);
}

ps_server_t *ps_server_create(const ps_config_t *cfg, void *router, void *sched, char *err, size_t errlen) {
    if (cfg->n_workers < 1 || cfg->shard < 0 || cfg->shard >= cfg->map->n_shards) {
        snprintf(err, errlen, "invalid shard %d of %d with %d workers", cfg->shard, cfg->map->n_shards,
                 cfg->n_workers);
        return NULL;
    }
    ps_server_t *s = XCALLOC(1, sizeof *s);
    s->cfg = *cfg;
    s->router = router;
    s->sched = sched;
    s->slices = XCALLOC((size_t)cfg->spec->n_tensors, sizeof *s->slices);
    int slots = optim_slots(&cfg->opt);
    /* Local slices first, in tensor order (a push's frames and a PARAMS reply's), then remote ones. */
    for (int pass = 0; pass < 2; pass++)
        for (int t = 0; t < cfg->spec->n_tensors; t++) {
            row_range_t r = shard_map_range(cfg->map, t, cfg->shard);
            if (r.row_end == r.row_begin || cfg->spec->tensors[t].remote != pass) continue;
            slice_t *sl = &s->slices[s->n_slices++];
            s->n_local += !pass;
            sl->tensor = t;
            sl->row_begin = r.row_begin;
            sl->rows = r.row_end - r.row_begin;
            sl->cols = cfg->spec->tensors[t].cols;
            sl->n = (size_t)(sl->rows * sl->cols);
            sl->p = XMALLOC(sl->n * sizeof(float));
            model_spec_init_rows(cfg->spec, t, r.row_begin, r.row_end, cfg->seed, sl->p);
            if (slots > 0) sl->s0 = XCALLOC(sl->n, sizeof(float));
            if (slots > 1) sl->s1 = XCALLOC(sl->n, sizeof(float));
        }
    if (s->n_slices > s->n_local) s->be = backend_cpu_create(1);
    s->ckpt_told = XCALLOC((size_t)cfg->n_workers, sizeof *s->ckpt_told);
    s->held = XCALLOC((size_t)cfg->n_workers, sizeof *s->held);
    size_t nd = (size_t)(s->n_slices ? s->n_slices : 1);
    s->descs = XCALLOC(nd, sizeof *s->descs);
    s->desc_ptrs = XCALLOC(nd, sizeof *s->desc_ptrs);
    s->desc_shapes = XCALLOC(nd * 2, sizeof *s->desc_shapes);
    s->descs16 = XCALLOC(nd, sizeof *s->descs16);
    s->desc16_ptrs = XCALLOC(nd, sizeof *s->desc16_ptrs);
    s->descsx = XCALLOC(nd, sizeof *s->descsx);
    s->descx_ptrs = XCALLOC(nd, sizeof *s->descx_ptrs);
    s->xr = XCALLOC((size_t)cfg->n_workers, sizeof *s->xr);
    s->xr_pinned = XCALLOC((size_t)cfg->n_workers, sizeof *s->xr_pinned);
    s->xd = XCALLOC((size_t)cfg->n_workers, sizeof *s->xd);
    for (int i = 0; i < s->n_slices; i++) {
        const slice_t *sl = &s->slices[i];
        wire_desc_init(&s->descs[i], &s->desc_shapes[2 * i], (uint32_t)sl->tensor,
                       cfg->spec->tensors[sl->tensor].name, sl->row_begin, sl->rows, sl->cols);
        s->desc_ptrs[i] = &s->descs[i];
        s->descs16[i] = s->descs[i];
        s->descs16[i].dtype = TESSERA__DTYPE__DTYPE_BF16;
        s->descs16[i].nbytes = sl->n * sizeof(uint16_t);
        s->desc16_ptrs[i] = &s->descs16[i];
        s->descsx[i] = s->descs[i];
        s->descsx[i].in_region = 1;
        s->descx_ptrs[i] = &s->descsx[i];
    }
    if (cfg->ckpt_root && cfg->job && (cfg->job->ckpt_every_steps > 0 || cfg->job->ckpt_every_seconds > 0)) {
        /* One snapshot buffer for all checkpoints, touched now: fresh memory would cost a page fault
         * per 4 KiB inside every stall. (Without a schedule it is made at the first checkpoint.) */
        size_t total = ckpt_buf_floats(s, slots);
        s->ckpt_buf = XMALLOC_ALIGNED(CKPT_ALIGN, total * sizeof(float));
        memset(s->ckpt_buf, 0, total * sizeof(float));
    }
    s->clock = XCALLOC((size_t)cfg->n_workers, sizeof *s->clock);
    s->has_pending = XCALLOC((size_t)cfg->n_workers, sizeof *s->has_pending);
    s->parts_held = XCALLOC((size_t)cfg->n_workers, sizeof *s->parts_held);
    s->have = XCALLOC(nd, sizeof *s->have);
    s->applied = XCALLOC(nd, sizeof *s->applied);
    s->pending =
        XCALLOC((size_t)cfg->n_workers * (size_t)(s->n_slices ? s->n_slices : 1), sizeof *s->pending);
    for (size_t i = 0; i < (size_t)cfg->n_workers * (size_t)s->n_slices; i++)
        zmq_msg_init(&s->pending[i]); /* always a message: empty until a gradient arrives */
    if (create_tables(s, slots, err, errlen)) {
        ps_server_free(s);
        return NULL;
    }
    if (cfg->resume_dir && restore(s, err, errlen)) {
        ps_server_free(s);
        return NULL;
    }
    if (cfg->device && strcmp(cfg->device, "cpu") && open_device(s, err, errlen)) {
        ps_server_free(s);
        return NULL;
    }
    s->max_waiting = 4 * cfg->n_workers + 64;
    s->waiting = XCALLOC((size_t)s->max_waiting, sizeof *s->waiting);
    return s;
}

int ps_server_prepare_socket(void *router, size_t max_message_bytes) {
    int64_t lim = (int64_t)max_message_bytes;
    return ZMQ_CHECK(zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &lim, sizeof lim)) < 0 ? -TS_EIO : 0;
}

void ps_server_free(ps_server_t *s) {
    if (!s) return;
    if (s->writer_running) pthread_join(s->writer, NULL);
    for (int w = 0; s->xr && w < s->cfg.n_workers; w++) /* before the device that pinned them goes */
        detach(s, w);
    free(s->xr);
    free(s->xr_pinned);
    free(s->xd);
    if (s->dev) {
        for (int i = 0; i < s->n_slices; i++) {
            s->dev->ops->free(s->dev, s->slices[i].d_p);
            s->dev->ops->free(s->dev, s->slices[i].d_s0);
            s->dev->ops->free(s->dev, s->slices[i].d_s1);
        }
        s->dev->ops->free(s->dev, s->d_grads);
        backend_free(s->dev);
    }
    free(s->ckpt_buf);
    free(s->ckpt_told);
    for (int i = 0; i < s->n_held; i++)
        wire_msg_free(&s->held[i]);
    free(s->held);
    free(s->descs);
    free(s->desc_ptrs);
    free(s->desc_shapes);
    free(s->descs16);
    free(s->desc16_ptrs);
    free(s->descsx);
    free(s->descx_ptrs);
    params_changing(s); /* queued replies keep their own references */
    for (int i = 0; i < s->n_slices; i++) {
        free(s->slices[i].p);
        free(s->slices[i].s0);
        free(s->slices[i].s1);
    }
    for (size_t i = 0; s->pending && i < (size_t)s->cfg.n_workers * (size_t)s->n_slices; i++)
        zmq_msg_close(&s->pending[i]);
    backend_free(s->be);
    for (int i = 0; i < s->n_waiting; i++)
        zmq_msg_close(&s->waiting[i].identity);
    for (int t = 0; s->tables && t < s->n_tables; t++)
        sparse_table_free(s->tables[t]);
    for (int w = 0; s->sp_pending && w < s->cfg.n_workers; w++) {
        sparse_pending_clear(&s->sp_pending[w]);
        free(s->sp_pending[w].parts);
    }
    free(s->tables);
    free(s->tcfg);
    free(s->sp_pending);
    free(s->slices);
    free(s->clock);
    free(s->pending);
    free(s->has_pending);
    free(s->parts_held);
    free(s->have);
    free(s->applied);
    for (int i = 0; i < s->n_part_waits; i++)
        zmq_msg_close(&s->part_waits[i].identity);
    free(s->part_waits);
    free(s->waiting);
    free(s);
}

/* Answers request `m` with an error and counts it. */
static void reply_error(ps_server_t *s, wire_msg_t *m, Tessera__ErrorCode code, const char *msg) {
    s->errors++;
    wire_send_error(s->router, &m->identity, m->hdr ? m->hdr->request_id : 0, code, msg);
}

static int64_t min_clock(const ps_server_t *s) {
    int64_t m = s->clock[0];
    for (int w = 1; w < s->cfg.n_workers; w++)
        if (s->clock[w] < m) m = s->clock[w];
    return m;
}

/* The clock of the worker furthest ahead. */
static int64_t max_clock(const ps_server_t *s) {
    int64_t m = s->clock[0];
    for (int w = 1; w < s->cfg.n_workers; w++)
        if (s->clock[w] > m) m = s->clock[w];
    return m;
}

/* Local exchange: writes local slices [first, first + n) into worker w's region (its device region:
 * from the device's copies, done before the reply leaves) and sends `h` with them as in_region
 * descriptors (empty frames). */
static void send_in_region(ps_server_t *s, zmq_msg_t *identity, Tessera__Header *h, int w, int first, int n) {
    float *params = region_of(s, w);
    wire_buf_t bufs[n ? n : 1];
    for (int i = first; i < first + n; i++) {
        const slice_t *sl = &s->slices[i];
        float *at = params + s->cfg.spec->tensors[sl->tensor].offset + sl->row_begin * sl->cols;
        if (s->xd[w])
            s->dev->ops->copy_cols(s->dev, at, (int)sl->cols, sl->d_p, (int)sl->cols, (int)sl->rows,
                                   (int)sl->cols);
        else
            memcpy(at, slice_host(s, &s->slices[i]), sl->n * sizeof(float));
        s->local_bytes += sl->n * sizeof(float);
        bufs[i - first] = (wire_buf_t){NULL, 0, NULL, NULL};
    }
    if (s->xd[w]) s->dev->ops->sync(s->dev);
    h->n_tensors = (size_t)n;
    h->tensors = s->descx_ptrs + first;
    wire_send(s->router, identity, h, bufs, (size_t)n);
}

/* Sends this shard's local parameter slices [0, n) (remote weights never leave the shard) as the
 * PARAMS reply to `request_id`, zero-copy from the current snapshot (each frame holds a reference):
 * bfloat16 with net.param_dtype = bf16, unless `f32` or the pull is not a worker's; into the worker's
 * exchange region when it attached. `worker` (or -1) learns of a checkpoint just taken. */
static void send_params(ps_server_t *s, zmq_msg_t *identity, uint64_t request_id, int64_t clock, int worker,
                        int n, int f32) {
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_PARAMS);
    h.request_id = request_id;
    h.clock = clock;
    h.stop_requested = s->stop_seen || (s->cfg.stop_flag && *s->cfg.stop_flag);
    h.checkpoint_requested = s->ckpt_asked || (s->cfg.ckpt_flag && *s->cfg.ckpt_flag);
    h.last_checkpoint = s->ckpt_last;
    if (worker >= 0 && s->ckpt_told[worker] < s->ckpt_last) {
        /* The first reply after a checkpoint tells the worker to save its own state; in SSP/ASP a worker
         * can reach the next cut before a reply told it of the last (cuts a step apart). */
        h.checkpoint_clock = s->ckpt_last;
        h.stop_after_checkpoint = s->ckpt_last_stop;
        if (s->ckpt_told[worker] < s->ckpt_prev) h.missed_checkpoint_clock = s->ckpt_prev;
        s->ckpt_told[worker] = s->ckpt_last;
    }
    int bf16 = worker >= 0 && !f32 && s->cfg.params_bf16; /* serving's pulls get float32 */
    if (worker >= 0 && region_of(s, worker)) {
        send_in_region(s, identity, &h, worker, 0, n);
        return;
    }
    snapshot_t *snap = current_snapshot(s, n, bf16);
    wire_buf_t bufs[n ? n : 1];
    snapshot_frames(s, snap, 0, n, bufs);
    h.n_tensors = (size_t)n;
    h.tensors = bf16 ? s->desc16_ptrs : s->desc_ptrs;
    wire_send(s->router, identity, &h, bufs, (size_t)n);
}

/* Answers every waiting pull whose clock the consistency model now allows. */
static void serve_waiting(ps_server_t *s) {
    if (s->n_applied > 0) return; /* a BSP clock half applied (parts): pulls wait for all of it */
    int64_t mc = min_clock(s);
    int keep = 0;
    for (int i = 0; i < s->n_waiting; i++) {
        waiting_pull_t *wp = &s->waiting[i];
        int ready = s->cfg.staleness == CFG_STALENESS_INF || mc >= wp->want - s->cfg.staleness;
        if (ready) {
            send_params(s, &wp->identity, wp->request_id, wp->want, wp->worker, wp->n_reply, wp->f32);
            zmq_msg_close(&wp->identity);
        } else {
            s->waiting[keep++] = *wp;
        }
    }
    s->n_waiting = keep;
}

static int add_waiting(ps_server_t *s, zmq_msg_t *identity, uint64_t request_id, int64_t want, int worker,
                       int n_reply, int f32) {
    if (s->n_waiting == s->max_waiting) return -TS_ESTATE;
    waiting_pull_t *wp = &s->waiting[s->n_waiting++];
    zmq_msg_init(&wp->identity);
    if (zmq_msg_copy(&wp->identity, identity)) {
        zmq_msg_close(&wp->identity);
        s->n_waiting--;
        return -TS_ENOMEM;
    }
    wp->request_id = request_id;
    wp->want = want;
    wp->n_reply = n_reply;
    wp->f32 = f32;
    wp->worker = worker >= 0 && worker < s->cfg.n_workers ? worker : -1;
    return 0;
}

static int slice_matches(const ps_server_t *s, int i, const Tessera__TensorDesc *d, size_t at, char *err,
                         size_t errlen) {
    const slice_t *sl = &s->slices[i];
    if (d->dtype == TESSERA__DTYPE__DTYPE_F32 && d->id == (uint32_t)sl->tensor &&
        d->row_begin == sl->row_begin && d->shape[0] == sl->rows && d->shape[1] == sl->cols)
        return 0;
    snprintf(
        err, errlen,
        "tensor %zu (id %u rows %llu+%llu cols %llu) does not match shard %d's slice of tensor %d (%s rows "
        "%llu+%llu cols %llu)",
        at, d->id, (unsigned long long)d->row_begin, (unsigned long long)d->shape[0],
        (unsigned long long)d->shape[1], s->cfg.shard, sl->tensor, s->cfg.spec->tensors[sl->tensor].name,
        (unsigned long long)sl->row_begin, (unsigned long long)sl->rows, (unsigned long long)sl->cols);
    return -TS_EINVAL;
}

static int slice_pending(const ps_server_t *s, int w, int i) {
    return zmq_msg_size(&s->pending[w * s->n_slices + i]) != 0;
}

/* Checks that worker w's push carries exactly this shard's slices that no PUSH_PART of the clock held,
 * in order, then pairs of ids and row gradients. 0 or -TS_EINVAL with a message. */
static int check_push_tensors(const ps_server_t *s, const Tessera__Header *h, int w, char *err,
                              size_t errlen) {
    int dense = s->n_local - s->parts_held[w];
    if ((int)h->n_tensors < dense || ((int)h->n_tensors - dense) % 2) {
        snprintf(err, errlen,
                 "push has %zu tensors; shard %d holds %d pushed slices, %d of them in parts already (then "
                 "pairs of ids and row gradients)",
                 h->n_tensors, s->cfg.shard, s->n_local, s->parts_held[w]);
        return -TS_EINVAL;
    }
    for (size_t i = (size_t)dense; i < h->n_tensors; i += 2) {
        const Tessera__TensorDesc *ids = h->tensors[i], *g = h->tensors[i + 1];
        if (sparse_ids_check(ids, i, s->n_tables, err, errlen)) return -TS_EINVAL;
        if (g->dtype != TESSERA__DTYPE__DTYPE_F32 || g->id != ids->id || g->shape[0] != ids->shape[0] ||
            g->shape[1] != (uint64_t)s->tcfg[ids->id].dim) {
            snprintf(err, errlen, "tensor %zu: expected the gradients [%llu, %d] of table %s", i + 1,
                     (unsigned long long)ids->shape[0], s->tcfg[ids->id].dim, s->tcfg[ids->id].name);
            return -TS_EINVAL;
        }
    }
    for (int i = 0, j = 0; i < s->n_local; i++) {
        if (slice_pending(s, w, i)) continue;
        if (slice_matches(s, i, h->tensors[j], (size_t)j, err, errlen)) return -TS_EINVAL;
        j++;
    }
    return 0;
}

/* One optimizer step of slice sl with the mean of ng gradients (gscale = 1 / ng; host memory, or views
 * of a worker's device region): here, or on the shard's device (ps.device), which gives the same bits;
 * there p is brought up to date only when read (slice_host). */
static void step_slice(ps_server_t *s, slice_t *sl, const float *const *g, int ng, float gscale) {
    long t = ++sl->steps;
    if (!s->dev) {
        optim_apply(&s->cfg.opt, sl->p, sl->s0, sl->s1, g, ng, gscale, sl->n, t);
        return;
    }
    backend_t *be = s->dev;
    const float *dg[ng];
    for (int j = 0; j < ng; j++) {
        if (in_device_region(s, g[j])) { /* read where the worker's device left it */
            dg[j] = g[j];
            continue;
        }
        float *d = s->d_grads + (size_t)j * s->d_stride;
        be->ops->to_device(be, d, g[j], sl->n * sizeof(float));
        dg[j] = d;
    }
    be->ops->optim_step(be, &s->cfg.opt, sl->d_p, sl->d_s0, sl->d_s1, dg, ng, gscale, sl->n, t);
    /* The step's reply waits for it (a copy or a sync); p is brought up to date when read. */
    sl->host_stale = 1;
    if (s->cfg.spec->tensors[sl->tensor].remote) slice_host(s, sl); /* the layer products read p */
}

/* ps.device: the parameters and optimizer state of every slice back in p, s0, s1 (for a checkpoint). */
static void state_to_host(ps_server_t *s) {
    for (int i = 0; s->dev && i < s->n_slices; i++) {
        slice_t *sl = &s->slices[i];
        slice_host(s, sl);
        if (sl->s0) s->dev->ops->to_host(s->dev, sl->s0, sl->d_s0, sl->n * sizeof(float));
        if (sl->s1) s->dev->ops->to_host(s->dev, sl->s1, sl->d_s1, sl->n * sizeof(float));
    }
}

/* BSP: every worker's gradient of slice i for the open clock is in: sum them in worker order and step
 * the slice once. The frames stay (they mark what each worker sent) until the clock completes. */
static void apply_slice(ps_server_t *s, int i) {
    int W = s->cfg.n_workers;
    const float *g[W];
    params_changing(s);
    double t0 = now_s();
    slice_t *sl = &s->slices[i];
    for (int w = 0; w < W; w++)
        g[w] = zmq_msg_data(&s->pending[w * s->n_slices + i]);
    step_slice(s, sl, g, W, 1.0f / (float)W);
    s->applied[i] = 1;
    s->n_applied++;
    s->apply_s += now_s() - t0;
}

/* BSP: worker w's gradient of local slice i is in; the slice is updated once every worker's is. */
static void slice_arrived(ps_server_t *s, int i) {
    if (++s->have[i] == s->cfg.n_workers) apply_slice(s, i);
}

/* One copy of slices [first, first + n), shared by the part replies that send them. */
typedef struct {
    int first, n;
    snapshot_t *copy;
} part_copy_t;

/* Answers the waiting parts whose slices have all been updated, with those slices, copied (the
 * parameters go on changing while ZeroMQ sends) once for all the workers' parts of the same slices. */
static void serve_parts(ps_server_t *s) {
    int keep = 0, n_made = 0;
    part_copy_t made[s->n_part_waits ? s->n_part_waits : 1];
    for (int j = 0; j < s->n_part_waits; j++) {
        waiting_part_t *pw = &s->part_waits[j];
        int ready = 1;
        for (int i = pw->first; i < pw->first + pw->n; i++)
            ready &= s->applied[i];
        if (!ready) {
            s->part_waits[keep++] = *pw;
            continue;
        }
        Tessera__Header h;
        wire_header_init(&h, TESSERA__KIND__KIND_PARAMS);
        h.request_id = pw->request_id;
        s->part_replies++;
        if (region_of(s, pw->worker)) {
            send_in_region(s, &pw->identity, &h, pw->worker, pw->first, pw->n);
            zmq_msg_close(&pw->identity);
            continue;
        }
        snapshot_t *copy = NULL;
        for (int q = 0; q < n_made && !copy; q++)
            if (made[q].first == pw->first && made[q].n == pw->n) copy = made[q].copy;
        if (!copy) { /* this loop's reference, dropped below */
            copy = copy_slices(s, pw->first, pw->n, s->cfg.params_bf16);
            made[n_made++] = (part_copy_t){pw->first, pw->n, copy};
        }
        wire_buf_t bufs[pw->n];
        snapshot_frames(s, copy, pw->first, pw->n, bufs);
        h.n_tensors = (size_t)pw->n;
        h.tensors = (s->cfg.params_bf16 ? s->desc16_ptrs : s->desc_ptrs) + pw->first;
        wire_send(s->router, &pw->identity, &h, bufs, (size_t)pw->n);
        zmq_msg_close(&pw->identity);
    }
    for (int q = 0; q < n_made; q++)
        snapshot_unref(made[q].copy);
    s->n_part_waits = keep;
}

/* BSP: all workers' gradients of one clock are in; every slice not updated yet steps once (summed in
 * worker order), then the row gradients. */
static void apply_bsp(ps_server_t *s) {
    int W = s->cfg.n_workers;
    for (int i = 0; i < s->n_slices; i++)
        if (!s->applied[i]) apply_slice(s, i);
    params_changing(s);
    double t0 = now_s();
    /* Row gradients: each table's summed in worker order, then one lazy step with the mean. */
    for (int t = 0; t < s->n_tables; t++) {
        for (int w = 0; w < W; w++)
            for (int i = 0; i < s->sp_pending[w].n; i++) {
                sparse_part_t *p = &s->sp_pending[w].parts[i];
                if (p->table == t)
                    sparse_table_accumulate(s->tables[t], p->idx, p->n, zmq_msg_data(&p->grads));
            }
        s->rows_pushed += sparse_table_apply(s->tables[t], 1.0f / (float)W);
    }
    for (int w = 0; w < W; w++) {
        for (int i = 0; i < s->n_slices; i++) {
            zmq_msg_close(&s->pending[w * s->n_slices + i]);
            zmq_msg_init(&s->pending[w * s->n_slices + i]);
        }
        sparse_pending_clear(&s->sp_pending[w]);
        s->has_pending[w] = 0;
        s->parts_held[w] = 0;
    }
    memset(s->have, 0, (size_t)s->n_slices * sizeof *s->have);
    memset(s->applied, 0, (size_t)s->n_slices * sizeof *s->applied);
    s->n_applied = 0;
    s->n_pending = 0;
    s->apply_s += now_s() - t0;
}

/* Tells the scheduler that this shard's part of checkpoint `step` is on disk. Runs on the writer
 * thread, with a socket of its own. */
static void report_checkpoint(ps_server_t *s, const ckpt_job_t *job, uint64_t bytes, double seconds,
                              const char *failure) {
    void *sock = zmq_socket(s->cfg.zctx, ZMQ_DEALER);
    int linger = 1000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, s->cfg.sched_endpoint)) {
        log_error("cannot reach the scheduler at %s to report checkpoint %lld", s->cfg.sched_endpoint,
                  (long long)job->step);
        zmq_close(sock);
        return;
    }
    Tessera__Report rep;
    tessera__report__init(&rep);
    rep.ckpt_bytes = bytes;
    rep.ckpt_seconds = seconds;
    rep.ckpt_stall_seconds = job->stall_s;
    rep.ckpt_stop = job->stop;
    rep.ckpt_failed = failure != NULL;
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_CKPT_DONE);
    h.error_message = (char *)(failure ? failure : "");
    h.request_id = 1;
    h.sender = s->cfg.shard;
    h.clock = job->step;
    h.role = "ps";
    h.report = &rep;
    wire_send(sock, NULL, &h, NULL, 0);
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 10000) == 1) {
        wire_msg_t m;
        Tessera__ErrorCode code;
        char err[256];
        wire_recv(sock, 0, 1 << 20, &m, &code, err, sizeof err);
        wire_msg_free(&m);
    } else {
        log_warn("scheduler did not acknowledge checkpoint %lld", (long long)job->step);
    }
    zmq_close(sock);
}

/* The writer thread: writes the snapshot in `arg` (a ckpt_job_t it owns and frees; job->data is the
 * server's buffer, borrowed until the thread is joined) and reports the outcome to the scheduler. */
static void *write_checkpoint(void *arg) {
    ckpt_job_t *job = arg;
    ps_server_t *s = job->srv;
    /* What the writer copies (into the page cache, where direct I/O is refused; HDF5's metadata)
     * costs the same CPU whenever it runs; at equal priority with training it runs slowly and the
     * checkpoint stays uncommitted for longer. Ask for more (only root may; otherwise this changes
     * nothing). */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), -10) != 0) errno = 0;
    char dir[4096], err[4400];
    ckpt_step_dir(s->cfg.ckpt_root, job->step, dir, sizeof dir);
    double t0 = now_s();
    uint64_t bytes = 0, direct = 0;
    int rc = mkdir_p(dir);
    if (rc)
        snprintf(err, sizeof err, "cannot create %s: %s", dir, strerror(errno));
    else
        rc = ckpt_write_shard(dir, s->cfg.shard, s->cfg.map->n_shards, job->step, s->cfg.job, job->slices,
                              s->n_slices, job->tables, s->n_tables, &bytes, &direct, err, sizeof err);
    double secs = now_s() - t0;
    if (rc) {
        log_error("checkpoint %lld not written: %s", (long long)job->step, err);
        report_checkpoint(s, job, 0, secs, err);
    } else {
        log_info("checkpoint slice written step=%lld bytes=%llu direct_bytes=%llu write_s=%.3f stall_ms=%.2f "
                 "mb_per_s=%.0f",
                 (long long)job->step, (unsigned long long)bytes, (unsigned long long)direct, secs,
                 job->stall_s * 1e3, secs > 0 ? (double)bytes / secs / 1e6 : 0);
        report_checkpoint(s, job, bytes, secs, NULL);
    }
    free(job->slices); /* job->data is the server's reusable snapshot buffer */
    for (int t = 0; t < s->n_tables; t++)
        ckpt_table_free(&job->tables[t]);
    free(job->tables);
    free(job);
    atomic_store(&s->writer_busy, 0);
    return NULL;
}

/* Copies of every table's rows for a checkpoint (freed with ckpt_table_free each, then free). */
static ckpt_table_t *copy_tables(const ps_server_t *s) {
    ckpt_table_t *out = XCALLOC((size_t)(s->n_tables ? s->n_tables : 1), sizeof *out);
    for (int t = 0; t < s->n_tables; t++) {
        const sparse_table_cfg_t *c = &s->tcfg[t];
        ckpt_table_t *o = &out[t];
        o->name = c->name;
        o->dim = c->dim;
        o->rows = c->rows;
        snprintf(o->optimizer, sizeof o->optimizer, "%s", s->cfg.spec->tables[t].optimizer);
        int slots = optim_slots(&c->opt);
        size_t n = sparse_table_size(s->tables[t]), cnt = n ? n : 1, row = (size_t)c->dim * sizeof(float);
        o->n = n;
        o->ids = XMALLOC(cnt * sizeof *o->ids);
        o->steps = XMALLOC(cnt * sizeof *o->steps);
        for (int k = 0; k <= slots; k++)
            o->slot[k] = XMALLOC_ALIGNED(CKPT_ALIGN, cnt * row);
        for (size_t i = 0; i < n; i++) {
            float *src[3];
            long steps;
            sparse_table_row(s->tables[t], i, &o->ids[i], &src[0], &src[1], &src[2], &steps);
            o->steps[i] = steps;
            for (int k = 0; k <= slots; k++)
                memcpy(o->slot[k] + i * (size_t)c->dim, src[k], row);
        }
    }
    return out;
}

/* Phase one of a checkpoint: copy every slice (the only time training waits) and hand the copy to a
 * writer thread. A previous checkpoint still being written is waited for first, on the event loop:
 * checkpoints more frequent than the disk can take slow training down rather than pile up. */
static void take_checkpoint(ps_server_t *s) {
    double t0 = now_s();
    if (s->writer_running) {
        /* Checkpoints come faster than the disk takes them: training waits for the previous one. */
        if (atomic_load(&s->writer_busy))
            log_warn("checkpoint %lld: the previous one is still being written; training waits for it",
                     (long long)s->ckpt_want);
        pthread_join(s->writer, NULL);
        s->writer_running = 0;
    }
    int slots = optim_slots(&s->cfg.opt);
    state_to_host(s);
    ckpt_job_t *job = XCALLOC(1, sizeof *job);
    job->srv = s;
    job->step = s->ckpt_want;
    job->stop = s->ckpt_want_stop;
    if (!s->ckpt_buf) s->ckpt_buf = XMALLOC_ALIGNED(CKPT_ALIGN, ckpt_buf_floats(s, slots) * sizeof(float));
    job->data = s->ckpt_buf;
    job->slices = XCALLOC((size_t)(s->n_slices ? s->n_slices : 1), sizeof *job->slices);
    float *dst = job->data;
    for (int i = 0; i < s->n_slices; i++) {
        const slice_t *sl = &s->slices[i];
        ckpt_slice_t *c = &job->slices[i];
        const tensor_info_t *ti = &s->cfg.spec->tensors[sl->tensor];
        c->name = ti->name;
        c->rows = ti->rows;
        c->cols = ti->cols;
        c->row_begin = sl->row_begin;
        c->row_end = sl->row_begin + sl->rows;
        c->steps = sl->steps;
        const float *src[3] = {sl->p, sl->s0, sl->s1};
        for (int k = 0; k <= slots; k++) {
            memcpy(dst, src[k], sl->n * sizeof(float));
            c->slot[k] = dst;
            dst += ckpt_slot_floats(sl->n);
        }
    }
    job->tables = copy_tables(s);
    s->ckpt_prev = s->ckpt_last;
    s->ckpt_last = s->ckpt_want;
    s->ckpt_last_stop = s->ckpt_want_stop;
    s->ckpt_want = 0;
    s->ckpt_asked = 0; /* requests on demand are served by this checkpoint */
    if (s->cfg.ckpt_flag) *s->cfg.ckpt_flag = 0;
    job->stall_s = now_s() - t0;
    atomic_store(&s->writer_busy, 1);
    if (pthread_create(&s->writer, NULL, write_checkpoint, job)) {
        log_error("cannot start the checkpoint writer thread; writing inline");
        write_checkpoint(job);
        return;
    }
    s->writer_running = 1;
}

/* Finds the rows of a push's sparse pairs (creating rows of dynamic tables not seen yet) and keeps
 * them with the gradient frames in worker w's pending list. 0, or -TS_ENOMEM (budget) / -TS_EINVAL with
 * a message; on error the list is left empty. */
static int take_sparse_parts(ps_server_t *s, wire_msg_t *m, int w, char *err, size_t errlen) {
    sparse_pending_t *sp = &s->sp_pending[w];
    const Tessera__Header *h = m->hdr;
    for (size_t i = (size_t)(s->n_local - s->parts_held[w]); i < h->n_tensors; i += 2) {
        const Tessera__TensorDesc *d = h->tensors[i];
        size_t n = (size_t)d->shape[0];
        uint32_t *idx = XMALLOC((n ? n : 1) * sizeof *idx);
        int rc = sparse_table_lookup(s->tables[d->id], zmq_msg_data(&m->frames[i]), n, 1, idx, err, errlen);
        if (rc) {
            free(idx);
            sparse_pending_clear(sp);
            return rc;
        }
        if (sp->n == sp->cap) {
            sp->cap = sp->cap ? 2 * sp->cap : 8;
            sparse_part_t *grown = realloc(sp->parts, (size_t)sp->cap * sizeof *grown);
            if (!grown) {
                free(idx);
                sparse_pending_clear(sp);
                snprintf(err, errlen, "out of memory");
                return -TS_ENOMEM;
            }
            sp->parts = grown;
        }
        sparse_part_t *p = &sp->parts[sp->n++];
        p->table = (int)d->id;
        p->n = n;
        p->idx = idx;
        zmq_msg_init(&p->grads);
        zmq_msg_move(&p->grads, &m->frames[i + 1]);
    }
    return 0;
}

/* SPARSE_PULL: the rows of the requested ids, table by table. Rows of dynamic tables are created on
 * first touch (unless read_only), charging the budget; a request the budget cannot hold gets
 * RESOURCE_EXHAUSTED naming it. */
static void handle_sparse_pull(ps_server_t *s, wire_msg_t *m) {
    char err[512];
    long rows =
        sparse_pull_answer(s->router, m, s->tables, s->n_tables, !m->hdr->read_only, 0, err, sizeof err);
    if (rows < 0) {
        reply_error(s, m,
                    !s->n_tables         ? TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION
                    : rows == -TS_ENOMEM ? TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED
                                         : TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                    err);
        return;
    }
    s->sparse_pulls++;
    s->rows_pulled += (uint64_t)rows;
}

/* The remote slice of the tensor a LAYER_FWD / LAYER_BWD names, checking its tensors: x [batch, in] first,
 * then (bwd) dy_k [batch, rows_k]. NULL after answering the error. */
static slice_t *layer_slice(ps_server_t *s, wire_msg_t *m, size_t want_tensors) {
    const Tessera__Header *h = m->hdr;
    slice_t *sl = NULL;
    for (int i = s->n_local; i < s->n_slices && !sl; i++)
        if (s->slices[i].tensor == (int)h->tensor) sl = &s->slices[i];
    const char *name =
        h->tensor < (uint32_t)s->cfg.spec->n_tensors ? s->cfg.spec->tensors[h->tensor].name : "?";
    if (!sl) {
        char err[256];
        snprintf(err, sizeof err, "shard %d holds no model-parallel rows of tensor %u (%s)", s->cfg.shard,
                 h->tensor, name);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
        return NULL;
    }
    uint64_t batch = h->n_tensors ? h->tensors[0]->shape[0] : 0;
    int ok = h->n_tensors == want_tensors && batch > 0 && h->tensors[0]->dtype == TESSERA__DTYPE__DTYPE_F32 &&
             h->tensors[0]->shape[1] == sl->cols;
    if (ok && want_tensors == 2)
        ok = h->tensors[1]->dtype == TESSERA__DTYPE__DTYPE_F32 && h->tensors[1]->shape[0] == batch &&
             h->tensors[1]->shape[1] == sl->rows;
    for (size_t i = 0; ok && i < m->nframes; i++)
        ok = wire_align_frame(&m->frames[i]) == 0;
    if (!ok) {
        char err[320];
        snprintf(err, sizeof err, "%s on %s needs x F32 [batch, %llu]%s", wire_kind_name(h->kind), name,
                 (unsigned long long)sl->cols, want_tensors == 2 ? " and dy F32 [batch, its rows here]" : "");
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
        return NULL;
    }
    return sl;
}

static void free_reply(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* Replies ACTIVATIONS with out[batch, cols] (malloc'd; ownership passes to the reply). */
static void send_activations(ps_server_t *s, wire_msg_t *m, const slice_t *sl, float *out, uint64_t batch,
                             uint64_t cols) {
    Tessera__Header r;
    wire_header_init(&r, TESSERA__KIND__KIND_ACTIVATIONS);
    r.request_id = m->hdr->request_id;
    Tessera__TensorDesc d, *dp = &d;
    uint64_t shape[2];
    wire_desc_init(&d, shape, (uint32_t)sl->tensor, NULL, sl->row_begin, batch, cols);
    r.n_tensors = out ? 1 : 0;
    r.tensors = &dp;
    wire_buf_t b = {out, batch * cols * sizeof(float), free_reply, NULL};
    wire_send(s->router, &m->identity, &r, &b, out ? 1 : 0);
}

/* LAYER_FWD: y_k = x W_k^T for this shard's rows W_k of a model-parallel weight. */
static void handle_layer_fwd(ps_server_t *s, wire_msg_t *m) {
    slice_t *sl = layer_slice(s, m, 1);
    if (!sl) return;
    uint64_t batch = m->hdr->tensors[0]->shape[0];
    float *y = XMALLOC((size_t)(batch * sl->rows) * sizeof(float));
    double t0 = now_s();
    s->be->ops->gemm(s->be, 0, 1, (int)batch, (int)sl->rows, (int)sl->cols, 1.0f, zmq_msg_data(&m->frames[0]),
                     sl->p, 0.0f, y);
    s->apply_s += now_s() - t0;
    send_activations(s, m, sl, y, batch, sl->rows);
}

/* LAYER_BWD of worker w at its current clock: keeps dW_k = dy_k^T x as w's gradient of the slice for
 * this step (BSP applies it with the others' when every push of the clock is in) and answers dy_k W_k,
 * computed with the weight the forward pass used. */
static void handle_layer_bwd(ps_server_t *s, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    char err[256];
    int w = h->sender;
    if (w < 0 || w >= s->cfg.n_workers || h->clock != s->clock[w]) {
        snprintf(err, sizeof err, "LAYER_BWD from worker %d at clock %lld: not a worker at that clock", w,
                 (long long)h->clock);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, err);
        return;
    }
    slice_t *sl = layer_slice(s, m, 2);
    if (!sl) return;
    zmq_msg_t *g = &s->pending[w * s->n_slices + (int)(sl - s->slices)];
    if (zmq_msg_size(g)) {
        snprintf(err, sizeof err, "worker %d sent two backward passes of %s at clock %lld", w,
                 s->cfg.spec->tensors[sl->tensor].name, (long long)h->clock);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, err);
        return;
    }
    uint64_t batch = h->tensors[0]->shape[0];
    const float *x = zmq_msg_data(&m->frames[0]), *dy = zmq_msg_data(&m->frames[1]);
    double t0 = now_s();
    zmq_msg_close(g);
    if (zmq_msg_init_size(g, sl->n * sizeof(float))) {
        zmq_msg_init(g);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "out of memory for a weight gradient");
        return;
    }
    s->be->ops->gemm(s->be, 1, 0, (int)sl->rows, (int)sl->cols, (int)batch, 1.0f, dy, x, 0.0f,
                     zmq_msg_data(g)); /* dW_k = dy_k^T x */
    float *dx = NULL;
    if (!h->no_input_grad) {
        dx = XMALLOC((size_t)(batch * sl->cols) * sizeof(float));
        s->be->ops->gemm(s->be, 0, 0, (int)batch, (int)sl->cols, (int)sl->rows, 1.0f, dy, sl->p, 0.0f, dx);
    }
    s->apply_s += now_s() - t0;
    send_activations(s, m, sl, dx, batch, sl->cols);
}

/* What a PUSH_PULL and a PUSH_PART must both be: from a worker, at its open clock, not while BSP waits
 * for the others' pushes of its previous one, with frames that can be read as floats. 0, or answered
 * with an error and -1. */
static int check_push_sender(ps_server_t *s, wire_msg_t *m, const char *what) {
    const Tessera__Header *h = m->hdr;
    char err[256];
    int w = h->sender;
    if (w < 0 || w >= s->cfg.n_workers) {
        snprintf(err, sizeof err, "%s from sender %d; workers are 0..%d", what, w, s->cfg.n_workers - 1);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
        return -1;
    }
    if (h->clock != s->clock[w]) {
        snprintf(err, sizeof err, "%s for clock %lld but worker %d is at clock %lld", what,
                 (long long)h->clock, w, (long long)s->clock[w]);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, err);
        return -1;
    }
    if (s->cfg.staleness == 0 && s->has_pending[w]) {
        snprintf(err, sizeof err, "worker %d already pushed clock %lld; BSP waits for the others", w,
                 (long long)h->clock - 1);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, err);
        return -1;
    }
    for (size_t i = 0; i < m->nframes; i++)
        if (!(i < h->n_tensors && h->tensors[i]->in_region) && /* a region's floats stay where they are */
            wire_align_frame(&m->frames[i])) {
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "out of memory");
            return -1;
        }
    return 0;
}

/* PUSH_PART: gradient slices of worker w's open clock, sent while its backward pass still runs. The
 * frames are kept (no copy) as that push's, which then carries only the other slices. */
static void handle_push_part(ps_server_t *s, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    char err[512];
    if (check_push_sender(s, m, "push part")) return;
    int w = h->sender, first = -1;
    for (int i = 0; h->n_tensors && i < s->n_local && first < 0; i++)
        if (s->slices[i].tensor == (int)h->tensors[0]->id) first = i;
    if (!h->n_tensors || first < 0 || first + (int)h->n_tensors > s->n_local) {
        snprintf(err, sizeof err,
                 "push part of %zu tensors from tensor %d: shard %d holds no such run of slices",
                 h->n_tensors, h->n_tensors ? (int)h->tensors[0]->id : -1, s->cfg.shard);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
        return;
    }
    for (size_t j = 0; j < h->n_tensors; j++) {
        if (slice_matches(s, first + (int)j, h->tensors[j], j, err, sizeof err)) {
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
            return;
        }
        if (slice_pending(s, w, first + (int)j)) {
            snprintf(err, sizeof err, "worker %d already pushed tensor %s of clock %lld", w,
                     s->cfg.spec->tensors[s->slices[first + (int)j].tensor].name, (long long)h->clock);
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, err);
            return;
        }
    }
    int end =
        s->n_local - s->parts_held[w]; /* parts come from the last slice back, so the push is a prefix */
    if (first + (int)h->n_tensors != end) {
        snprintf(err, sizeof err,
                 "push part of slices %d..%d from worker %d: parts go from the last slice back, so this one "
                 "must end at slice %d",
                 first, first + (int)h->n_tensors - 1, w, end - 1);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, err);
        return;
    }
    if (s->cfg.staleness == 0 && s->n_part_waits == s->cap_part_waits) {
        int cap = s->cap_part_waits ? 2 * s->cap_part_waits : 16;
        waiting_part_t *grown = realloc(s->part_waits, (size_t)cap * sizeof *grown);
        if (!grown) {
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        s->part_waits = grown;
        s->cap_part_waits = cap;
    }
    for (size_t j = 0; j < h->n_tensors; j++)
        zmq_msg_move(&s->pending[w * s->n_slices + first + (int)j], &m->frames[j]);
    s->parts_held[w] += (int)h->n_tensors;
    s->push_parts++;
    if (s->cfg.staleness != 0) { /* SSP/ASP: held until the push, which steps the worker's gradient */
        wire_send_simple(s->router, &m->identity, h->request_id, TESSERA__KIND__KIND_OK);
        return;
    }
    /* BSP: slices every worker has sent step now; the part is answered with its slices once all have. */
    waiting_part_t *pw = &s->part_waits[s->n_part_waits++];
    zmq_msg_init(&pw->identity);
    zmq_msg_move(&pw->identity, &m->identity);
    pw->request_id = h->request_id;
    pw->first = first;
    pw->n = (int)h->n_tensors;
    pw->worker = w;
    for (int i = first; i < end; i++)
        slice_arrived(s, i);
    serve_parts(s);
}

static void handle_push_pull(ps_server_t *s, wire_msg_t *m);

/* SSP/ASP: the pushes held for a checkpoint now taken, in the order they came (one may hold the
 * others again, for a checkpoint it asks for). */
static void release_held(ps_server_t *s) {
    int n = s->n_held;
    wire_msg_t held[n];
    memcpy(held, s->held, (size_t)n * sizeof *held);
    s->n_held = 0;
    for (int i = 0; i < n; i++) {
        handle_push_pull(s, &held[i]);
        wire_msg_free(&held[i]);
    }
}

/* SSP/ASP: a push that would take worker w past the checkpoint's clock waits until every worker has
 * reached it and the checkpoint is taken: the checkpoint is then a clock cut (DESIGN.md), every push
 * of a clock below it in, none at or past it. Returns 1 if held (m is emptied), 0 to go on. */
static int hold_push(ps_server_t *s, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    int fenced = s->fence && h->sender != 0 && h->clock >= s->fence;
    int past_cut = s->ckpt_want && h->clock >= s->ckpt_want;
    if (!s->cfg.staleness || !(fenced || past_cut)) return 0;
    for (int i = 0; i < s->n_held; i++)
        if (s->held[i].hdr->sender == h->sender) {
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
                        "a push of this worker is already waiting for a checkpoint");
            return 1;
        }
    s->held[s->n_held++] = *m;
    if (past_cut)
        s->pushes_held++;
    else
        s->pushes_fenced++;
    memset(m, 0, sizeof *m);
    return 1;
}

/* A checkpoint of clock c asked for by worker w's push (before the snapshot: clocks below c are
 * those it holds). BSP: worker 0 asks, at its push of c - 1, and the clock completes with it. SSP/ASP:
 * the cut must lie where no worker has been yet. Each worker asks for the scheduled ones at its own
 * push of c - 1; worker 0 places those on demand far enough ahead that no other worker can reach them
 * before its request is here (its clock + staleness + 1, or the end of its epoch, which no worker
 * passes before every worker has finished the epoch). Requests for the same or a later cut join the
 * one pending (a stop request makes it a stop checkpoint); an earlier cut replaces it. */
static void want_checkpoint(ps_server_t *s, int w, int64_t c, int stop) {
    if (!s->cfg.staleness) {
        s->ckpt_want = c;
        s->ckpt_want_stop = stop;
        return;
    }
    int64_t newest = max_clock(s);
    if (c < newest) {
        log_error("worker %d asked for a checkpoint of clock %lld, but a worker is at clock %lld already: "
                  "not taken",
                  w, (long long)c, (long long)newest);
        return;
    }
    if (s->ckpt_want && c >= s->ckpt_want) {
        s->ckpt_want_stop |= stop;
        return;
    }
    s->ckpt_want_stop = stop || (s->ckpt_want && s->ckpt_want_stop);
    s->ckpt_want = c;
}

/* SSP/ASP: worker 0's CUT_QUERY (proto/tessera.proto). Its next push lifts the fence and carries the
 * cut, if it places one; pushes the fence held are then taken again, those before the cut applied. */
static void handle_cut_query(ps_server_t *s, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    if (!s->cfg.staleness || h->sender != 0 || h->clock < 1 || h->clock > 1000000 || h->n_tensors) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
                    "CUT_QUERY is worker 0's, in an SSP/ASP job, with a grace of 1 to 1000000 clocks");
        return;
    }
    s->fence = max_clock(s) + h->clock;
    Tessera__Header r;
    wire_header_init(&r, TESSERA__KIND__KIND_OK);
    r.request_id = h->request_id;
    r.clock = s->fence;
    wire_send(s->router, &m->identity, &r, NULL, 0);
}

static void handle_push_pull(ps_server_t *s, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    char err[512];
    int w = h->sender;
    if (check_push_sender(s, m, "push")) return;
    if (hold_push(s, m)) return; /* never worker 0's for a fence (hold_push) */
    if (check_push_tensors(s, h, w, err, sizeof err)) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
        return;
    }
    for (int i = s->n_local; i < s->n_slices; i++)
        if (zmq_msg_size(&s->pending[w * s->n_slices + i]) != s->slices[i].n * sizeof(float)) {
            snprintf(
                err, sizeof err,
                "push of clock %lld from worker %d before its backward pass of model-parallel %s (LAYER_BWD)",
                (long long)h->clock, w, s->cfg.spec->tensors[s->slices[i].tensor].name);
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, err);
            return;
        }
    int rc = take_sparse_parts(s, m, w, err, sizeof err);
    if (rc) {
        reply_error(s, m,
                    rc == -TS_ENOMEM ? TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED
                                     : TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                    err);
        return;
    }
    int n_reply = s->cfg.staleness == 0 ? s->n_local - s->parts_held[w] : s->n_local;
    if (add_waiting(s, &m->identity, h->request_id, h->clock + 1, w, n_reply, 0)) {
        sparse_pending_clear(&s->sp_pending[w]);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "too many waiting pulls");
        return;
    }
    int lift = s->fence && w == 0; /* worker 0's push after its CUT_QUERY: the cut, if any, is in it */
    if (lift) s->fence = 0;
    s->pushes++;
    s->clock[w]++;
    s->stop_seen |= h->stop_requested;
    s->ckpt_asked |= h->checkpoint_requested;
    if (h->checkpoint_clock > s->ckpt_last && s->cfg.ckpt_root)
        want_checkpoint(s, w, h->checkpoint_clock, h->stop_after_checkpoint);
    /* The frames join the parts' (no copy); BSP keeps them until every worker's gradient of the clock is
     * in. */
    for (int i = 0, j = 0; i < s->n_local; i++)
        if (!slice_pending(s, w, i)) {
            zmq_msg_move(&s->pending[w * s->n_slices + i], &m->frames[j++]);
            if (s->cfg.staleness == 0) slice_arrived(s, i);
        }
    if (s->cfg.staleness == 0) {
        serve_parts(s);
        s->has_pending[w] = 1;
        if (++s->n_pending == s->cfg.n_workers) apply_bsp(s);
    } else {
        /* SSP/ASP: each worker's gradient is one step of its own, applied straight from the frames. */
        params_changing(s);
        for (int i = 0; i < s->n_local; i++) { /* remote weights need BSP (config checks) */
            slice_t *sl = &s->slices[i];
            zmq_msg_t *f = &s->pending[w * s->n_slices + i];
            const float *g = zmq_msg_data(f);
            step_slice(s, sl, &g, 1, 1.0f);
            zmq_msg_close(f);
            zmq_msg_init(f);
        }
        s->parts_held[w] = 0;
        sparse_pending_t *sp = &s->sp_pending[w];
        for (int i = 0; i < sp->n; i++)
            sparse_table_accumulate(s->tables[sp->parts[i].table], sp->parts[i].idx, sp->parts[i].n,
                                    zmq_msg_data(&sp->parts[i].grads));
        for (int t = 0; t < s->n_tables && sp->n; t++)
            s->rows_pushed += sparse_table_apply(s->tables[t], 1.0f);
        sparse_pending_clear(sp);
    }
    if (s->ckpt_want > 0 && min_clock(s) >= s->ckpt_want) take_checkpoint(s);
    serve_waiting(s);
    if (s->n_held && (lift || (!s->ckpt_want && !s->fence))) release_held(s);
}

static void handle_pull(ps_server_t *s, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    if (h->clock < 0 || h->n_tensors) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "pull needs clock >= 0 and no tensors");
        return;
    }
    /* A pull no worker will ever make possible would wait forever and fill the waiting list. */
    int64_t newest = max_clock(s);
    if (h->clock > newest + 1) {
        char err[160];
        snprintf(err, sizeof err, "pull for clock %lld, but no worker is past clock %lld",
                 (long long)h->clock, (long long)newest);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, err);
        return;
    }
    if (add_waiting(s, &m->identity, h->request_id, h->clock, h->sender, s->n_local, h->full_precision)) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "too many waiting pulls");
        return;
    }
    serve_waiting(s);
}

/* ---- local exchange (net.local_exchange) ---- */

/* ATTACH with a device handle, to a shard stepping on a device that can map it: maps worker w's device
 * region (1). Otherwise 0, and the reason the device region was not taken in `why` when there was one
 * (the host region is tried next, and a reason it gives replaces this one). */
static int attach_device(ps_server_t *s, int w, const Tessera__Header *h, char *why, size_t whylen) {
    if (!h->device_handle.len || !s->dev) return 0;
    if (h->device_handle.len != BACKEND_IPC_HANDLE || !s->dev->ops->ipc_open) {
        snprintf(why, whylen, "the worker's device region: %s",
                 h->device_handle.len != BACKEND_IPC_HANDLE ? "not a device handle"
                                                            : "ps.device cannot map it");
        log_info("shard %d: worker %d %s", s->cfg.shard, w, why);
        return 0;
    }
    const char *refuse = getenv("TESSERA_TEST_NO_DEVICE_REGION"); /* tests: shard k maps host regions only */
    char *end = NULL;
    long k = refuse && *refuse ? strtol(refuse, &end, 10) : -1;
    if (refuse && *refuse && *end)
        log_warn("shard %d: TESSERA_TEST_NO_DEVICE_REGION='%s' is not a shard number; ignored", s->cfg.shard,
                 refuse);
    else if (k == s->cfg.shard) {
        snprintf(why, whylen, "the worker's device region: TESSERA_TEST_NO_DEVICE_REGION=%d", s->cfg.shard);
        log_warn("shard %d: %s", s->cfg.shard, why);
        return 0;
    }
    char reason[256] = "";
    s->xd[w] = s->dev->ops->ipc_open(s->dev, h->device_handle.data, reason, sizeof reason);
    if (!s->xd[w]) {
        snprintf(why, whylen, "the worker's device region: %s", reason);
        log_info("shard %d: worker %d %s", s->cfg.shard, w, why);
    }
    return s->xd[w] != NULL;
}

/* ATTACH: maps worker w's exchange region when the worker runs where this shard does (its device region,
 * when it sends one and this shard steps on a device that can map it); answers OK with attached or
 * attached_device, or with why not. */
static void handle_attach(ps_server_t *s, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    int w = h->sender;
    char why[512] = "", key[XREGION_KEY_LEN];
    if (w < 0 || w >= s->cfg.n_workers) {
        snprintf(why, sizeof why, "ATTACH from sender %d; workers are 0..%d", w, s->cfg.n_workers - 1);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, why);
        return;
    }
    int held = 0;
    for (int i = 0; i < s->n_held; i++)
        held |= s->held[i].hdr->sender == w;
    if (s->has_pending[w] || s->parts_held[w] || held) { /* their frames may be views of the region */
        snprintf(why, sizeof why,
                 "worker %d has a push in flight here; it cannot attach until it is answered", w);
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, why);
        return;
    }
    detach(s, w); /* a worker attaches again after a restart */
    xregion_host_key(key);
    size_t want = xregion_bytes(s->cfg.spec->n_floats);
    if (!h->region_bytes && !h->device_handle.len) /* an ATTACH of nothing: the worker detaches */
        snprintf(why, sizeof why, "detached at the worker's request");
    else if (key[0] == '?') /* no boot id: the key would name every host alike */
        snprintf(why, sizeof why, "this host's boot id cannot be read (/proc/sys/kernel/random/boot_id)");
    else if (!h->host_key || strcmp(h->host_key, key))
        snprintf(why, sizeof why, "the worker runs on another host or network namespace (%s, here %s)",
                 h->host_key ? h->host_key : "", key);
    else if (s->cfg.params_bf16)
        snprintf(why, sizeof why, "net.param_dtype = bf16: parameters cross rounded, over the wire");
    else if (h->region_bytes != want)
        snprintf(why, sizeof why, "the region has %llu bytes; this model's has %zu",
                 (unsigned long long)h->region_bytes, want);
    else if (attach_device(s, w, h, why, sizeof why))
        ; /* the worker's device region, not the host one */
    else if (!xregion_open(&s->xr[w], h->path ? h->path : "", want, why, sizeof why) && s->dev &&
             s->dev->ops->register_host) {
        /* ps.device: the step's copies read gradients from the region; pinned they go at full speed */
        s->xr_pinned[w] = !s->dev->ops->register_host(s->dev, s->xr[w].base, want);
        if (!s->xr_pinned[w])
            log_warn("shard %d: worker %d's exchange region could not be pinned: the device copies from it "
                     "are pageable",
                     s->cfg.shard, w);
    }
    Tessera__Header r;
    wire_header_init(&r, TESSERA__KIND__KIND_OK);
    r.request_id = h->request_id;
    r.attached = s->xr[w].base != NULL;
    r.attached_device = s->xd[w] != NULL;
    r.error_message = why;
    wire_send(s->router, &m->identity, &r, NULL, 0);
    log_info("shard local_exchange worker=%d attached=%d device=%d%s%s", w, r.attached || r.attached_device,
             r.attached_device, why[0] ? " why=" : "", why);
}

/* A push whose descriptors say in_region: its frames become views of the slices in the sender's region
 * (no copy), so everything after reads them as if they had come in the message. 0, or -1 answered. */
static int region_views(ps_server_t *s, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    const model_spec_t *spec = s->cfg.spec;
    int w = h->sender;
    for (size_t i = 0; i < h->n_tensors; i++) {
        const Tessera__TensorDesc *d = h->tensors[i];
        char err[256];
        if (d->in_region && i > 0 && !h->tensors[i - 1]->in_region) { /* the dense slices, which lead */
            snprintf(err, sizeof err, "tensor %zu is in_region after one that is not: only dense slices are",
                     i);
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
            return -1;
        }
        if (!d->in_region) continue;
        if (d->dtype != TESSERA__DTYPE__DTYPE_F32) {
            snprintf(err, sizeof err, "tensor %zu is in_region but not float32", i);
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
            return -1;
        }
        if (w < 0 || w >= s->cfg.n_workers || !region_of(s, w)) {
            snprintf(err, sizeof err, "tensor %zu is in_region, but sender %d has no exchange region here", i,
                     w);
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, err);
            return -1;
        }
        const tensor_info_t *ti = d->id < (uint32_t)spec->n_tensors ? &spec->tensors[d->id] : NULL;
        if (!ti || ti->remote || d->shape[1] != ti->cols || d->row_begin > ti->rows ||
            d->shape[0] > ti->rows - d->row_begin) {
            snprintf(err, sizeof err, "tensor %zu is in_region but names no dense slice of the model", i);
            reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
            return -1;
        }
        float *g =
            region_of(s, w) + xregion_grads_offset(spec->n_floats) + ti->offset + d->row_begin * ti->cols;
        zmq_msg_close(&m->frames[i]);
        zmq_msg_init_data(&m->frames[i], g, d->nbytes, NULL, NULL); /* the region outlives the message */
        s->local_bytes += d->nbytes;
    }
    return 0;
}

static void handle_message(ps_server_t *s) {
    wire_msg_t m;
    Tessera__ErrorCode code;
    char err[512];
    int rc = wire_recv(s->router, 1, s->cfg.max_message_bytes, &m, &code, err, sizeof err);
    if (rc) {
        /* A flood of garbage must not become a flood of log lines: the first few, then every 1000th. */
        if (s->errors < 10 || s->errors % 1000 == 0)
            log_warn("rejected message error=%s detail=\"%s\" rejected_so_far=%llu", wire_error_name(code),
                     err, (unsigned long long)s->errors);
        if (rc == -TS_EPROTO && m.has_identity)
            reply_error(s, &m, code, err);
        else
            s->errors++;
        wire_msg_free(&m);
        return;
    }
    switch (m.hdr->kind) {
    case TESSERA__KIND__KIND_PUSH_PULL:
        if (!region_views(s, &m)) handle_push_pull(s, &m);
        break;
    case TESSERA__KIND__KIND_PUSH_PART:
        if (!region_views(s, &m)) handle_push_part(s, &m);
        break;
    case TESSERA__KIND__KIND_ATTACH: handle_attach(s, &m); break;
    case TESSERA__KIND__KIND_PULL: handle_pull(s, &m); break;
    case TESSERA__KIND__KIND_CUT_QUERY: handle_cut_query(s, &m); break;
    case TESSERA__KIND__KIND_SPARSE_PULL: handle_sparse_pull(s, &m); break;
    case TESSERA__KIND__KIND_LAYER_FWD:
    case TESSERA__KIND__KIND_LAYER_BWD:
        if (s->n_local == s->n_slices)
            reply_error(s, &m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
                        "this shard holds no model-parallel weights");
        else if (m.hdr->kind == TESSERA__KIND__KIND_LAYER_FWD)
            handle_layer_fwd(s, &m);
        else
            handle_layer_bwd(s, &m);
        break;
    case TESSERA__KIND__KIND_PING:
        wire_send_simple(s->router, &m.identity, m.hdr->request_id, TESSERA__KIND__KIND_OK);
        break;
    case TESSERA__KIND__KIND_SERVE:
    case TESSERA__KIND__KIND_SHUTDOWN:
        if (!m.hdr->role || strcmp(m.hdr->role, "scheduler")) {
            reply_error(s, &m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
                        "only the scheduler stops a shard");
            break;
        }
        wire_send_simple(s->router, &m.identity, m.hdr->request_id, TESSERA__KIND__KIND_OK);
        if (m.hdr->kind == TESSERA__KIND__KIND_SERVE) s->serve_version = m.hdr->model_version;
        s->stop = 1;
        break;
    default:
        snprintf(err, sizeof err, "a shard does not handle %s", wire_kind_name(m.hdr->kind));
        reply_error(s, &m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, err);
    }
    wire_msg_free(&m);
}

static void heartbeat(ps_server_t *s) {
    double t = now_s();
    if (t - s->last_heartbeat < s->cfg.heartbeat_s) return;
    s->last_heartbeat = t;
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_HEARTBEAT);
    h.request_id = ++s->heartbeat_id;
    h.sender = s->cfg.shard;
    h.role = "ps";
    wire_send(s->sched, NULL, &h, NULL, 0);
}

int ps_server_run(ps_server_t *s) {
    zmq_pollitem_t items[2] = {{s->router, 0, ZMQ_POLLIN, 0}, {s->sched, 0, ZMQ_POLLIN, 0}};
    int nitems = s->sched ? 2 : 1;
    if (s->sched) heartbeat(s);
    while (!s->stop) {
        int rc = zmq_poll(items, nitems, s->sched ? (long)(s->cfg.heartbeat_s * 1000) : 1000);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            log_error("zmq_poll failed error=\"%s\"", zmq_strerror(zmq_errno()));
            return -TS_EIO;
        }
        /* Drain what is queued before polling again: one poll per message is slow. */
        double t0 = now_s();
        for (int budget = 0; budget < 256 && !s->stop; budget++) {
            if (!wire_readable(s->router)) break;
            handle_message(s);
        }
        s->busy_s += now_s() - t0;
        if (s->sched) {
            for (;;) { /* heartbeat acknowledgements */
                wire_msg_t m;
                Tessera__ErrorCode code;
                char err[256];
                if (!wire_readable(s->sched)) break;
                wire_recv(s->sched, 0, 1 << 20, &m, &code, err, sizeof err);
                wire_msg_free(&m);
            }
            heartbeat(s);
        }
    }
    /* Every request gets exactly one reply, even when the shard stops under it: parts first, as their
     * pushes expect. */
    for (int i = 0; i < s->n_part_waits; i++) {
        wire_send_error(s->router, &s->part_waits[i].identity, s->part_waits[i].request_id,
                        TESSERA__ERROR_CODE__ERR_UNAVAILABLE, "shard shutting down");
        zmq_msg_close(&s->part_waits[i].identity);
    }
    s->n_part_waits = 0;
    for (int i = 0; i < s->n_waiting; i++) {
        wire_send_error(s->router, &s->waiting[i].identity, s->waiting[i].request_id,
                        TESSERA__ERROR_CODE__ERR_UNAVAILABLE, "shard shutting down");
        zmq_msg_close(&s->waiting[i].identity);
    }
    s->n_waiting = 0;
    for (int i = 0; i < s->n_held; i++) {
        wire_send_error(s->router, &s->held[i].identity, s->held[i].hdr->request_id,
                        TESSERA__ERROR_CODE__ERR_UNAVAILABLE, "shard shutting down");
        wire_msg_free(&s->held[i]);
    }
    s->n_held = 0;
    size_t rows = 0;
    for (int t = 0; t < s->n_tables; t++)
        rows += sparse_table_size(s->tables[t]);
    log_info(
        "shard stopping pushes=%llu push_parts=%llu part_replies=%llu held_for_cut=%llu held_for_fence=%llu "
        "rejected=%llu slices=%d local_mb=%.1f "
        "busy_s=%.2f apply_s=%.2f "
        "sparse_rows=%zu rows_pulled=%llu rows_updated=%llu memory_mb=%.1f",
        (unsigned long long)s->pushes, (unsigned long long)s->push_parts, (unsigned long long)s->part_replies,
        (unsigned long long)s->pushes_held, (unsigned long long)s->pushes_fenced,
        (unsigned long long)s->errors, s->n_slices, (double)s->local_bytes / 1e6, s->busy_s, s->apply_s, rows,
        (unsigned long long)s->rows_pulled, (unsigned long long)s->rows_pushed,
        (double)s->budget.used_bytes / 1048576.0);
    return 0;
}

uint64_t ps_server_serve_version(const ps_server_t *s) {
    return s->serve_version;
}

int ps_server_take_slices(ps_server_t *s, serve_slice_t **out) {
    if (s->writer_running) {
        pthread_join(s->writer, NULL); /* the last checkpoint reads the snapshot buffer, not these */
        s->writer_running = 0;
    }
    serve_slice_t *v = XCALLOC((size_t)(s->n_slices ? s->n_slices : 1), sizeof *v);
    for (int i = 0; i < s->n_slices; i++) {
        slice_t *sl = &s->slices[i];
        slice_host(s, sl);
        v[i] = (serve_slice_t){sl->tensor, sl->row_begin, sl->rows, sl->cols, sl->p};
        sl->p = NULL;
    }
    *out = v;
    return s->n_slices;
}

int ps_server_take_tables(ps_server_t *s, sparse_table_t ***out) {
    for (int t = 0; t < s->n_tables; t++)
        sparse_table_release_budget(s->tables[t]); /* the budget goes with the server */
    *out = s->tables;
    int n = s->n_tables;
    s->tables = NULL;
    s->n_tables = 0;
    return n;
}
