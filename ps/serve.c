#include "serve.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "backend.h"
#include "check.h"
#include "ckpt.h"
#include "model.h"
#include "shard_map.h"
#include "sparse_reply.h"
#include "sparse_table.h"
#include "util.h"
#include "wire.h"

enum { V_LOADING, V_READY, V_FAILED };

/* One model version's slices on this shard. Immutable once ready; reference-counted because PULL
 * replies send straight from its memory and may still be queued when it is unloaded. */
typedef struct version {
    uint64_t number;
    atomic_int refs;
    atomic_int state;
    char path[4096];
    char err[8192];
    const serve_shard_config_t *cfg; /* the shard's, borrowed */
    int started;                     /* the loader has taken it */
    job_config_t *job;
    model_spec_t spec;
    int n_slices;
    serve_slice_t *slices;
    int *slice_of; /* tensor -> slice index, or -1 when this shard holds none of its rows */
    Tessera__TensorDesc *descs, **desc_ptrs;
    uint64_t *shapes;
    int n_tables;
    sparse_table_t **tables; /* this shard's rows of each sparse table (read-only) */
    /* the LOAD request answered when loading ends */
    zmq_msg_t identity;
    uint64_t request_id;
    int has_requester;
    struct version *next;
} version_t;

struct serve_shard {
    serve_shard_config_t cfg;
    void *router;
    backend_t *be;
    version_t *versions; /* newest first */
    pthread_t loader;
    version_t *loading; /* the version the loader thread is reading, or NULL */
    int loader_joinable;
    int stop;
    uint64_t requests, errors;
};

static void version_unref(version_t *v) {
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1) return;
    for (int i = 0; i < v->n_slices; i++)
        free(v->slices[i].p);
    free(v->slices);
    free(v->slice_of);
    free(v->descs);
    free(v->desc_ptrs);
    free(v->shapes);
    for (int t = 0; t < v->n_tables; t++)
        sparse_table_free(v->tables[t]);
    free(v->tables);
    model_spec_free(&v->spec);
    free(v->job);
    if (v->has_requester) zmq_msg_close(&v->identity);
    free(v);
}

static void release_version(void *data, void *hint) {
    (void)data;
    version_unref(hint);
}

/* Lays out this shard's slices of `v` (rows per the shard map of the serving shard count) and the
 * descriptors PULL replies send. Buffers are allocated unless `adopt` provides them. */
static int version_layout(version_t *v, const serve_shard_config_t *cfg, char *err, size_t errlen) {
    int rc = model_spec_init(&v->spec, v->job, err, errlen);
    if (rc) return rc;
    int nt = v->spec.n_tensors;
    uint64_t *rows = XCALLOC((size_t)nt, sizeof *rows);
    for (int t = 0; t < nt; t++)
        rows[t] = v->spec.tensors[t].rows;
    shard_map_t map;
    rc = shard_map_init(&map, rows, nt, cfg->n_shards);
    free(rows);
    if (rc) {
        snprintf(err, errlen, "cannot map %d tensors onto %d shards", nt, cfg->n_shards);
        return -TS_EINVAL;
    }
    v->slices = XCALLOC((size_t)nt, sizeof *v->slices);
    v->slice_of = XCALLOC((size_t)nt, sizeof *v->slice_of);
    v->descs = XCALLOC((size_t)nt, sizeof *v->descs);
    v->desc_ptrs = XCALLOC((size_t)nt, sizeof *v->desc_ptrs);
    v->shapes = XCALLOC((size_t)nt * 2, sizeof *v->shapes);
    for (int t = 0; t < nt; t++) {
        row_range_t r = shard_map_range(&map, t, cfg->shard);
        v->slice_of[t] = -1;
        if (r.row_end == r.row_begin) continue;
        int i = v->n_slices++;
        serve_slice_t *sl = &v->slices[i];
        *sl = (serve_slice_t){t, r.row_begin, r.row_end - r.row_begin, v->spec.tensors[t].cols, NULL};
        v->slice_of[t] = i;
        wire_desc_init(&v->descs[i], &v->shapes[2 * i], (uint32_t)t, v->spec.tensors[t].name, sl->row_begin,
                       sl->rows, sl->cols);
        v->desc_ptrs[i] = &v->descs[i];
    }
    shard_map_free(&map);
    return 0;
}

/* Creates v's tables (the rows this shard owns among the serving shards, no optimizer state) and reads
 * their rows from checkpoint v->path, written by n_files shards; adds their bytes to *bytes. Rows the
 * checkpoint lacks are never-trained ids of dynamic tables: peeks give them their initial values. */
static int load_tables(version_t *v, int n_files, uint64_t *bytes) {
    const model_spec_t *spec = &v->spec;
    v->n_tables = spec->n_tables;
    v->tables = XCALLOC((size_t)(spec->n_tables ? spec->n_tables : 1), sizeof *v->tables);
    for (int t = 0; t < spec->n_tables; t++) {
        const table_info_t *ti = &spec->tables[t];
        sparse_table_cfg_t c = {.name = ti->name,
                                .table = (uint32_t)t,
                                .dim = ti->dim,
                                .rows = ti->rows,
                                .bound = ti->bound,
                                .seed = v->job->seed,
                                .shard = v->cfg->shard,
                                .n_shards = v->cfg->n_shards};
        c.opt.kind = OPT_SGD; /* serving keeps parameters only */
        v->tables[t] = sparse_table_create(&c, NULL, v->err, sizeof v->err);
        if (!v->tables[t]) return -TS_ENOMEM;
        size_t kept = 0;
        int rc =
            sparse_table_restore(v->tables[t], v->path, n_files, ti->optimizer, &kept, v->err, sizeof v->err);
        if (rc) return rc;
        *bytes += (uint64_t)kept * (uint64_t)ti->dim * sizeof(float);
    }
    return 0;
}

/* The loader thread: reads this shard's rows of checkpoint v->path. HDF5 is used by this thread only
 * (one load at a time). Ends by publishing V_READY or V_FAILED. */
static void *load_version(void *arg) {
    version_t *v = arg;
    ckpt_manifest_t m;
    double t0 = now_s();
    int rc = ckpt_read_manifest(v->path, &m, v->err, sizeof v->err);
    if (!rc && (int64_t)v->number != m.step) {
        snprintf(v->err, sizeof v->err, "%s holds step %lld, not version %llu", v->path, (long long)m.step,
                 (unsigned long long)v->number);
        rc = -TS_EINVAL;
    }
    if (!rc) rc = ckpt_read_job(v->path, v->job, v->err, sizeof v->err);
    if (!rc) rc = version_layout(v, v->cfg, v->err, sizeof v->err);
    uint64_t bytes = 0;
    if (!rc) rc = load_tables(v, m.n_shards, &bytes);
    for (int i = 0; !rc && i < v->n_slices; i++) {
        serve_slice_t *sl = &v->slices[i];
        sl->p = malloc((size_t)(sl->rows * sl->cols) * sizeof(float) + 1);
        if (!sl->p) {
            snprintf(v->err, sizeof v->err, "out of memory for %s", v->spec.tensors[sl->tensor].name);
            rc = -TS_ENOMEM;
            break;
        }
        long steps = 0;
        rc = ckpt_read_rows(v->path, m.n_shards, v->spec.tensors[sl->tensor].name, sl->cols, 0, sl->row_begin,
                            sl->row_begin + sl->rows, sl->p, &steps, v->err, sizeof v->err);
        bytes += sl->rows * sl->cols * sizeof(float);
    }
    if (!rc)
        log_info("serving shard loaded version=%llu path=%s slices=%d tables=%d bytes=%llu load_s=%.3f",
                 (unsigned long long)v->number, v->path, v->n_slices, v->n_tables, (unsigned long long)bytes,
                 now_s() - t0);
    atomic_store(&v->state, rc ? V_FAILED : V_READY);
    return NULL;
}

serve_shard_t *serve_shard_create(const serve_shard_config_t *cfg, void *router, char *err, size_t errlen) {
    if (cfg->n_shards < 1 || cfg->shard < 0 || cfg->shard >= cfg->n_shards) {
        snprintf(err, errlen, "invalid shard %d of %d", cfg->shard, cfg->n_shards);
        return NULL;
    }
    serve_shard_t *s = XCALLOC(1, sizeof *s);
    s->cfg = *cfg;
    s->router = router;
    s->be = backend_create("cpu", cfg->threads > 0 ? cfg->threads : 1, err, errlen);
    if (!s->be) {
        free(s);
        return NULL;
    }
    return s;
}

static version_t *find_version(serve_shard_t *s, uint64_t number) {
    for (version_t *v = s->versions; v; v = v->next)
        if (v->number == number) return v;
    return NULL;
}

static version_t *new_version(serve_shard_t *s, uint64_t number) {
    version_t *v = XCALLOC(1, sizeof *v);
    v->number = number;
    atomic_init(&v->refs, 1);
    v->job = XCALLOC(1, sizeof *v->job);
    v->cfg = &s->cfg;
    v->next = s->versions;
    s->versions = v;
    return v;
}

static void remove_version(serve_shard_t *s, version_t *v) {
    for (version_t **p = &s->versions; *p; p = &(*p)->next)
        if (*p == v) {
            *p = v->next;
            break;
        }
    version_unref(v);
}

int serve_shard_adopt(serve_shard_t *s, uint64_t version, const job_config_t *job, serve_slice_t *slices,
                      int n_slices, sparse_table_t **tables, int n_tables, char *err, size_t errlen) {
    version_t *v = new_version(s, version);
    *v->job = *job;
    int rc = version_layout(v, &s->cfg, err, errlen);
    if (!rc && n_tables != v->spec.n_tables) {
        snprintf(err, errlen, "%d tables handed over; the model has %d", n_tables, v->spec.n_tables);
        rc = -TS_EINVAL;
    }
    if (!rc) {
        v->n_tables = n_tables;
        v->tables = XCALLOC((size_t)(n_tables ? n_tables : 1), sizeof *v->tables);
        for (int t = 0; t < n_tables; t++) {
            v->tables[t] = tables[t];
            tables[t] = NULL;
        }
    }
    for (int i = 0; !rc && i < n_slices; i++) {
        int k = slices[i].tensor >= 0 && slices[i].tensor < v->spec.n_tensors ? v->slice_of[slices[i].tensor]
                                                                              : -1;
        if (k < 0 || v->slices[k].row_begin != slices[i].row_begin || v->slices[k].rows != slices[i].rows) {
            snprintf(err, errlen, "slice %d (tensor %d rows %llu+%llu) is not this shard's", i,
                     slices[i].tensor, (unsigned long long)slices[i].row_begin,
                     (unsigned long long)slices[i].rows);
            rc = -TS_EINVAL;
            break;
        }
        v->slices[k].p = slices[i].p;
        slices[i].p = NULL;
    }
    if (!rc && n_slices != v->n_slices) {
        snprintf(err, errlen, "%d slices handed over; shard %d holds %d", n_slices, s->cfg.shard,
                 v->n_slices);
        rc = -TS_EINVAL;
    }
    if (rc) {
        remove_version(s, v);
        return rc;
    }
    atomic_store(&v->state, V_READY);
    snprintf(v->path, sizeof v->path, "(training job)");
    return 0;
}

static void reply_error(serve_shard_t *s, wire_msg_t *m, Tessera__ErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error(serve_shard_t *s, wire_msg_t *m, Tessera__ErrorCode code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->errors++;
    wire_send_error(s->router, &m->identity, m->hdr ? m->hdr->request_id : 0, code, msg);
}

/* Starts the loader on the oldest version still waiting for it, when none is being loaded. */
static void start_load(serve_shard_t *s) {
    if (s->loading) return;
    version_t *next = NULL;
    for (version_t *v = s->versions; v; v = v->next)
        if (atomic_load(&v->state) == V_LOADING && !v->started) next = v; /* the oldest is last */
    if (!next) return;
    next->started = 1;
    atomic_fetch_add(&next->refs, 1); /* the loader's */
    s->loading = next;
    s->loader_joinable = pthread_create(&s->loader, NULL, load_version, next) == 0;
    if (!s->loader_joinable) {
        log_warn("cannot start a loader thread; loading version %llu inline",
                 (unsigned long long)next->number);
        load_version(next);
    }
}

/* Answers the LOAD of a version whose loading ended, and starts the next. */
static void finish_load(serve_shard_t *s) {
    version_t *v = s->loading;
    if (!v || atomic_load(&v->state) == V_LOADING) return;
    if (s->loader_joinable) pthread_join(s->loader, NULL);
    s->loading = NULL;
    int ok = atomic_load(&v->state) == V_READY;
    if (!ok) log_error("version %llu not loaded: %s", (unsigned long long)v->number, v->err);
    if (v->has_requester) {
        if (ok)
            wire_send_simple(s->router, &v->identity, v->request_id, TESSERA__KIND__KIND_OK);
        else
            wire_send_error(s->router, &v->identity, v->request_id,
                            TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, v->err);
        zmq_msg_close(&v->identity);
        v->has_requester = 0;
    }
    if (!ok) remove_version(s, v);
    version_unref(v); /* the loader's reference */
    start_load(s);
}

static void handle_load(serve_shard_t *s, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    if (!h->model_version || !h->path || !h->path[0]) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "LOAD needs model_version and path");
        return;
    }
    version_t *v = find_version(s, h->model_version);
    if (v && atomic_load(&v->state) == V_READY) {
        wire_send_simple(s->router, &m->identity, h->request_id, TESSERA__KIND__KIND_OK);
        return;
    }
    if (!v) {
        v = new_version(s, h->model_version);
        snprintf(v->path, sizeof v->path, "%s", h->path);
    }
    if (v->has_requester) { /* asked again while loading: the newest asker gets the answer */
        wire_send_error(s->router, &v->identity, v->request_id, TESSERA__ERROR_CODE__ERR_UNAVAILABLE,
                        "superseded by a newer LOAD");
        zmq_msg_close(&v->identity);
    }
    zmq_msg_init(&v->identity);
    zmq_msg_copy(&v->identity, &m->identity);
    v->request_id = h->request_id;
    v->has_requester = 1;
    start_load(s);
}

static version_t *ready_version(serve_shard_t *s, wire_msg_t *m) {
    version_t *v = find_version(s, m->hdr->model_version);
    if (!v || atomic_load(&v->state) != V_READY) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_NOT_FOUND, "shard %d has no version %llu loaded",
                    s->cfg.shard, (unsigned long long)m->hdr->model_version);
        return NULL;
    }
    return v;
}

static int is_linear_weight(const model_spec_t *spec, int t) {
    for (int i = 0; i < spec->n_layers; i++)
        if (spec->layers[i].n_params > 0 && spec->layers[i].tensor[0] == t)
            return !strcmp(spec->layers[i].ops->type, "linear");
    return 0;
}

static void handle_pull(serve_shard_t *s, wire_msg_t *m) {
    version_t *v = ready_version(s, m);
    if (!v) return;
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_PARAMS);
    h.request_id = m->hdr->request_id;
    h.model_version = v->number;
    int n = 0;
    wire_buf_t bufs[v->n_slices ? v->n_slices : 1];
    Tessera__TensorDesc *descs[v->n_slices ? v->n_slices : 1];
    for (int i = 0; i < v->n_slices; i++) {
        if (m->hdr->cached_only && is_linear_weight(&v->spec, v->slices[i].tensor)) continue;
        descs[n] = v->desc_ptrs[i];
        bufs[n++] = (wire_buf_t){v->slices[i].p, v->slices[i].rows * v->slices[i].cols * sizeof(float),
                                 release_version, v};
    }
    atomic_fetch_add(&v->refs, n);
    h.n_tensors = (size_t)n;
    h.tensors = descs;
    wire_send(s->router, &m->identity, &h, bufs, (size_t)n);
}

/* The rows of a version's tables for the ids asked (never creating any). */
static void handle_sparse_pull(serve_shard_t *s, wire_msg_t *m) {
    version_t *v = ready_version(s, m);
    if (!v) return;
    char err[512];
    long rows = sparse_pull_answer(s->router, m, v->tables, v->n_tables, 0, v->number, err, sizeof err);
    if (rows < 0) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "version %llu: %s",
                    (unsigned long long)v->number, err);
        return;
    }
    s->requests++;
}

static void free_buffer(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* y = x W_k^T for this shard's rows W_k of weight tensor Header.tensor. */
static void handle_infer(serve_shard_t *s, wire_msg_t *m) {
    version_t *v = ready_version(s, m);
    if (!v) return;
    const Tessera__Header *h = m->hdr;
    int t = (int)h->tensor;
    int k = t < v->spec.n_tensors ? v->slice_of[t] : -1;
    if (k < 0) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "shard %d holds no rows of tensor %u",
                    s->cfg.shard, h->tensor);
        return;
    }
    const serve_slice_t *sl = &v->slices[k];
    if (h->n_tensors != 1 || h->tensors[0]->shape[1] != sl->cols || h->tensors[0]->shape[0] == 0) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                    "INFER on %s needs one tensor [rows, %llu]", v->spec.tensors[t].name,
                    (unsigned long long)sl->cols);
        return;
    }
    if (wire_align_frame(&m->frames[0])) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    uint64_t rows = h->tensors[0]->shape[0];
    float *y = malloc((size_t)(rows * sl->rows) * sizeof(float) + 1);
    if (!y) {
        reply_error(s, m, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "out of memory for %llu rows",
                    (unsigned long long)rows);
        return;
    }
    s->be->ops->gemm(s->be, 0, 1, (int)rows, (int)sl->rows, (int)sl->cols, 1.0f, zmq_msg_data(&m->frames[0]),
                     sl->p, 0.0f, y);
    Tessera__Header r;
    wire_header_init(&r, TESSERA__KIND__KIND_PREDICTION);
    r.request_id = h->request_id;
    r.model_version = v->number;
    Tessera__TensorDesc d, *dp = &d;
    uint64_t shape[2];
    wire_desc_init(&d, shape, (uint32_t)t, NULL, sl->row_begin, rows, sl->rows);
    r.n_tensors = 1;
    r.tensors = &dp;
    wire_buf_t b = {y, rows * sl->rows * sizeof(float), free_buffer, NULL};
    wire_send(s->router, &m->identity, &r, &b, 1);
    s->requests++;
}

static void handle_message(serve_shard_t *s) {
    wire_msg_t m;
    Tessera__ErrorCode code;
    char err[512];
    int rc = wire_recv(s->router, 1, s->cfg.max_message_bytes, &m, &code, err, sizeof err);
    if (rc) {
        if (s->errors < 10 || s->errors % 1000 == 0)
            log_warn("rejected message error=%s detail=\"%s\"", wire_error_name(code), err);
        if (rc == -TS_EPROTO && m.has_identity)
            reply_error(s, &m, code, "%s", err);
        else
            s->errors++;
        wire_msg_free(&m);
        return;
    }
    switch (m.hdr->kind) {
    case TESSERA__KIND__KIND_INFER: handle_infer(s, &m); break;
    case TESSERA__KIND__KIND_PULL: handle_pull(s, &m); break;
    case TESSERA__KIND__KIND_SPARSE_PULL: handle_sparse_pull(s, &m); break;
    case TESSERA__KIND__KIND_LOAD: handle_load(s, &m); break;
    case TESSERA__KIND__KIND_UNLOAD: {
        version_t *v = find_version(s, m.hdr->model_version);
        if (v && atomic_load(&v->state) == V_LOADING) {
            reply_error(s, &m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, "version %llu is still loading",
                        (unsigned long long)v->number);
            break;
        }
        if (v) {
            log_info("serving shard unloaded version=%llu", (unsigned long long)v->number);
            remove_version(s, v);
        }
        wire_send_simple(s->router, &m.identity, m.hdr->request_id, TESSERA__KIND__KIND_OK);
        break;
    }
    case TESSERA__KIND__KIND_PING:
        wire_send_simple(s->router, &m.identity, m.hdr->request_id, TESSERA__KIND__KIND_OK);
        break;
    case TESSERA__KIND__KIND_SHUTDOWN:
        if (!m.hdr->role || (strcmp(m.hdr->role, "scheduler") && strcmp(m.hdr->role, "router"))) {
            reply_error(s, &m, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION, "only the router stops a shard");
            break;
        }
        wire_send_simple(s->router, &m.identity, m.hdr->request_id, TESSERA__KIND__KIND_OK);
        s->stop = 1;
        break;
    default:
        reply_error(s, &m, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "a serving shard does not handle %s",
                    wire_kind_name(m.hdr->kind));
    }
    wire_msg_free(&m);
}

int serve_shard_run(serve_shard_t *s) {
    zmq_pollitem_t it = {s->router, 0, ZMQ_POLLIN, 0};
    while (!s->stop && !(s->cfg.stop_flag && *s->cfg.stop_flag)) {
        int rc = zmq_poll(&it, 1, s->loading ? 5 : 200);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            log_error("zmq_poll failed error=\"%s\"", zmq_strerror(zmq_errno()));
            return -TS_EIO;
        }
        for (int budget = 0; budget < 256 && !s->stop; budget++) {
            if (!wire_readable(s->router)) break;
            handle_message(s);
        }
        finish_load(s);
    }
    log_info("serving shard stopping shard=%d infer_requests=%llu rejected=%llu", s->cfg.shard,
             (unsigned long long)s->requests, (unsigned long long)s->errors);
    return 0;
}

void serve_shard_free(serve_shard_t *s) {
    if (!s) return;
    if (s->loading) {
        if (s->loader_joinable) pthread_join(s->loader, NULL);
        version_unref(s->loading);
    }
    while (s->versions)
        remove_version(s, s->versions);
    backend_free(s->be);
    free(s);
}
