#include "router.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "backend.h"
#include "check.h"
#include "ckpt.h"
#include "metrics_http.h"
#include "model.h"
#include "shard_map.h"
#include "sparse_batch.h"
#include "util.h"
#include "wire.h"

#define PING_INTERVAL_S 0.1
#define RETIRE_GRACE_S  1.0
#define INFER_ATTEMPTS  4

typedef enum { VS_LOADING, VS_FETCHING, VS_AVAILABLE, VS_RETIRING, VS_FAILED } vstate_t;

/* A Prometheus histogram: counts per upper bound (the last is +Inf), their sum. */
#define MAX_BUCKETS 16
typedef struct {
    int n;
    double le[MAX_BUCKETS];
    uint64_t count[MAX_BUCKETS + 1];
    double sum;
} histogram_t;
#define N_CODES         16
#define METRICS_EVERY_S 0.1

static void observe(histogram_t *h, double x) {
    int i = 0;
    while (i < h->n && x > h->le[i])
        i++;
    h->count[i]++;
    h->sum += x;
}

static const char *const vstate_names[] = {"LOADING", "LOADING", "AVAILABLE", "UNLOADING", "FAILED"};

/* One model version at the router: its spec, the parameters it caches and its activation buffers. */
typedef struct rversion {
    uint64_t number;
    vstate_t state;
    char path[4096];
    char message[8192];
    job_config_t *job;
    model_spec_t spec;
    shard_map_t map;
    int on_shards;  /* linear weights are evaluated on the shards */
    float **tensor; /* per tensor: cached rows (all of them), or NULL when on the shards */
    float **act;    /* chain models, per layer: its input [max_batch, in]; act[n_layers - 1] the logits */
    float *logits;  /* [max_batch, classes]: where evaluate leaves its output */
    /* graph models (tables, layers with several inputs): the whole model runs here, rows come from
     * the shards' tables */
    model_t *model;
    sparse_batch_t sb;
    uint64_t *ids;      /* the batch's ids [max_batch, n_slots], as clients sent them */
    uint64_t *bag_ids;  /* the present ones, bag by bag */
    uint64_t *bag_off;  /* [max_batch * n_slots + 1] */
    uint32_t *examples; /* 0, 1, ..., max_batch - 1 */
    int *fetched;       /* per shard: its PULL reply has arrived */
    double started, retire_at;
    struct rversion *next;
} rversion_t;

typedef struct {
    void *sock;
    char endpoint[256];
    int shard, replica;
    int up;
    uint64_t ping_id;
    double ping_sent;
    uint64_t *loaded; /* versions it holds */
    int n_loaded, cap_loaded;
} replica_t;

/* A request to a shard whose reply the event loop dispatches. */
typedef struct {
    uint64_t id;
    Tessera__Kind kind;
    int replica;
    uint64_t version;
} pending_t;

typedef struct {
    zmq_msg_t identity, frame;
    zmq_msg_t ids; /* graph models: the categorical ids [rows, n_slots] */
    int has_ids;
    uint64_t request_id, version;
    int rows;
    double arrival, deadline;
} request_t;

typedef struct {
    const router_config_t *cfg;
    const job_config_t *o;
    char model[64];
    void *front;
    backend_t *be;
    int n_rep; /* n_shards * n_replicas */
    replica_t *rep;
    zmq_pollitem_t *items;
    rversion_t *versions; /* newest first */
    uint64_t default_version;
    pending_t *pending;
    int n_pending, cap_pending;
    uint64_t next_id;
    request_t *queue; /* ring of max_queue */
    int q_head, q_len;
    int *rr; /* per shard: round-robin position */
    double next_ping, next_scan;
    uint64_t requests, errors, batches, rows;
    float *xbuf;
    int stop;
    /* serve.metrics_listen: the page it serves is rebuilt from these every METRICS_EVERY_S */
    metrics_http_t *http;
    double started, next_publish;
    uint64_t errors_by_code[N_CODES];
    histogram_t latency, batch_rows;
} router_t;

/* ---- versions ---- */

static rversion_t *find_version(router_t *r, uint64_t number) {
    for (rversion_t *v = r->versions; v; v = v->next)
        if (v->number == number) return v;
    return NULL;
}

static void free_version(router_t *r, rversion_t *v) {
    if (v->tensor && !v->model) /* a graph model's tensors are its own */
        for (int t = 0; t < v->spec.n_tensors; t++)
            r->be->ops->free(r->be, v->tensor[t]);
    if (v->model) {
        model_free(v->model);
        free(v->model);
        sparse_batch_free(&v->sb);
        free(v->ids);
        free(v->bag_ids);
        free(v->bag_off);
        free(v->examples);
        free(v->logits);
    }
    if (v->act)
        for (int i = 0; i < v->spec.n_layers; i++)
            r->be->ops->free(r->be, v->act[i]);
    free(v->tensor);
    free(v->act);
    free(v->fetched);
    if (v->map.n_shards) shard_map_free(&v->map);
    model_spec_free(&v->spec);
    free(v->job);
    free(v);
}

static void remove_version(router_t *r, rversion_t *v) {
    for (rversion_t **p = &r->versions; *p; p = &(*p)->next)
        if (*p == v) {
            *p = v->next;
            break;
        }
    free_version(r, v);
}

/* Builds the router's side of a version from its job: the spec, the shard map, the placement and
 * the buffers. 0 or -TS_EINVAL with a message. */
/* A graph model runs whole at the router (model_forward), its dense tensors cached in the model's
 * own buffer; the shards hold its tables. 0 or an error. */
static int prepare_graph(router_t *r, rversion_t *v, char *err, size_t errlen) {
    if (v->spec.n_remote) {
        snprintf(
            err, errlen,
            "a model with tables or a layer graph and model-parallel layers is not served yet (the router "
            "evaluates model-parallel weights on the shards only in chain models)");
        return -TS_EINVAL;
    }
    double mb = (double)v->spec.n_floats * sizeof(float) / (1 << 20);
    if (mb > r->o->serve_cache_mb) {
        snprintf(err, errlen,
                 "a model with tables or a layer graph is served with its dense part cached at the router; "
                 "it has %.1f MB of dense parameters but serve.cache_mb is %.1f",
                 mb, r->o->serve_cache_mb);
        return -TS_EINVAL;
    }
    int B = r->o->serve_max_batch, S = v->spec.n_slots > 0 ? v->spec.n_slots : 1;
    v->model = XCALLOC(1, sizeof *v->model);
    int rc = model_init(v->model, v->job, r->be, B, err, errlen);
    if (rc) {
        free(v->model);
        v->model = NULL;
        return rc;
    }
    for (int t = 0; t < v->spec.n_tensors; t++)
        v->tensor[t] = v->model->params + v->spec.tensors[t].offset;
    sparse_batch_init(&v->sb, &v->model->spec, r->cfg->n_shards, B);
    v->ids = XMALLOC((size_t)B * (size_t)S * sizeof *v->ids);
    v->bag_ids = XMALLOC((size_t)B * (size_t)S * sizeof *v->bag_ids);
    v->bag_off = XMALLOC(((size_t)B * (size_t)S + 1) * sizeof *v->bag_off);
    v->examples = XMALLOC((size_t)B * sizeof *v->examples);
    for (int b = 0; b < B; b++)
        v->examples[b] = (uint32_t)b;
    v->logits = XMALLOC((size_t)B * (size_t)v->spec.classes * sizeof(float));
    return 0;
}

static int version_prepare(router_t *r, rversion_t *v, char *err, size_t errlen) {
    int rc = model_spec_init(&v->spec, v->job, err, errlen);
    if (rc) return rc;
    int nt = v->spec.n_tensors, nl = v->spec.n_layers;
    uint64_t *rows = XCALLOC((size_t)nt, sizeof *rows);
    for (int t = 0; t < nt; t++)
        rows[t] = v->spec.tensors[t].rows;
    rc = shard_map_init(&v->map, rows, nt, r->cfg->n_shards);
    free(rows);
    if (rc) {
        snprintf(err, errlen, "cannot map the model onto %d shards", r->cfg->n_shards);
        return -TS_EINVAL;
    }
    v->fetched = XCALLOC((size_t)r->cfg->n_shards, sizeof *v->fetched);
    if (!r->model[0])
        snprintf(r->model, sizeof r->model, "%s",
                 v->job->serve_model[0] ? v->job->serve_model : v->job->name);
    v->tensor = XCALLOC((size_t)nt, sizeof *v->tensor);
    if (!v->spec.is_chain) return prepare_graph(r, v, err, errlen);
    double mb = (double)(v->spec.n_floats + v->spec.remote_floats) * sizeof(float) / (1 << 20);
    v->on_shards =
        mb > r->o->serve_cache_mb || v->spec.n_remote > 0; /* a model-parallel weight stays there */
    for (int i = 0; i < nl; i++) {
        layer_t *l = &v->spec.layers[i];
        for (int p = 0; p < l->n_params; p++) {
            int t = l->tensor[p];
            int sharded = v->on_shards && !strcmp(l->ops->type, "linear") && p == 0;
            if (!sharded) {
                v->tensor[t] =
                    r->be->ops->alloc(r->be, (size_t)(v->spec.tensors[t].rows * v->spec.tensors[t].cols) * 4);
                if (!v->tensor[t]) {
                    snprintf(err, errlen, "out of memory caching %s", v->spec.tensors[t].name);
                    return -TS_ENOMEM;
                }
            }
            l->p[p] = v->tensor[t];
        }
    }
    v->act = XCALLOC((size_t)nl, sizeof *v->act);
    for (int i = 0; i < nl; i++) {
        v->act[i] =
            r->be->ops->alloc(r->be, (size_t)r->o->serve_max_batch * (size_t)v->spec.layers[i].in * 4);
        if (!v->act[i]) {
            snprintf(err, errlen, "out of memory for activations");
            return -TS_ENOMEM;
        }
    }
    v->logits = v->act[nl - 1];
    return 0;
}

static int replica_has(const replica_t *p, uint64_t version) {
    for (int i = 0; i < p->n_loaded; i++)
        if (p->loaded[i] == version) return 1;
    return 0;
}

static void replica_add(replica_t *p, uint64_t version) {
    if (replica_has(p, version)) return;
    if (p->n_loaded == p->cap_loaded) {
        p->cap_loaded = p->cap_loaded ? 2 * p->cap_loaded : 4;
        p->loaded = realloc(p->loaded, (size_t)p->cap_loaded * sizeof *p->loaded);
        if (!p->loaded) abort();
    }
    p->loaded[p->n_loaded++] = version;
}

static void replica_drop(replica_t *p, uint64_t version) {
    for (int i = 0; i < p->n_loaded; i++)
        if (p->loaded[i] == version) p->loaded[i--] = p->loaded[--p->n_loaded];
}

/* ---- shard requests ---- */

static int can_send(void *sock) {
    int events = 0;
    size_t len = sizeof events;
    return zmq_getsockopt(sock, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLOUT);
}

/* Sends `h` (plus frames) to replica i and records it to dispatch the reply. 0, or -1 when the replica
 * is not connected (then marked down). */
static int send_to_replica(router_t *r, int i, Tessera__Header *h, const wire_buf_t *bufs, size_t n,
                           int track) {
    replica_t *p = &r->rep[i];
    h->request_id = ++r->next_id;
    h->role = (char *)r->cfg->role;
    int connected = can_send(p->sock);
    if (!connected) /* the frames never reach ZeroMQ, whose free callbacks would release them */
        for (size_t i = 0; i < n; i++)
            if (bufs[i].ffn) bufs[i].ffn((void *)bufs[i].data, bufs[i].hint);
    if (!connected || wire_send(p->sock, NULL, h, bufs, n)) {
        if (p->up) {
            log_warn("replica down shard=%d replica=%d endpoint=%s reason=\"not connected\"", p->shard,
                     p->replica, p->endpoint);
            p->up = 0;
            p->n_loaded = 0;
        }
        return -1;
    }
    if (track) {
        if (r->n_pending == r->cap_pending) {
            r->cap_pending = r->cap_pending ? 2 * r->cap_pending : 64;
            r->pending = realloc(r->pending, (size_t)r->cap_pending * sizeof *r->pending);
            if (!r->pending) abort();
        }
        r->pending[r->n_pending++] = (pending_t){h->request_id, h->kind, i, h->model_version};
    }
    return 0;
}

static int take_pending(router_t *r, uint64_t id, pending_t *out) {
    for (int i = 0; i < r->n_pending; i++)
        if (r->pending[i].id == id) {
            *out = r->pending[i];
            r->pending[i] = r->pending[--r->n_pending];
            return 1;
        }
    return 0;
}

static void send_load(router_t *r, int i, rversion_t *v) {
    if (!v->path[0]) return; /* a training job's live parameters: nothing to load from */
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_LOAD);
    h.model_version = v->number;
    h.path = v->path;
    send_to_replica(r, i, &h, NULL, 0, 1);
}

/* A replica that answers again: it may have restarted with nothing loaded, so it loads every version
 * in service before it takes requests for them. */
static void replica_up(router_t *r, int i) {
    replica_t *p = &r->rep[i];
    p->up = 1;
    log_info("replica up shard=%d replica=%d endpoint=%s", p->shard, p->replica, p->endpoint);
    for (rversion_t *v = r->versions; v; v = v->next)
        if (v->state != VS_FAILED && v->state != VS_RETIRING && !replica_has(p, v->number))
            send_load(r, i, v);
}

static void replica_down(router_t *r, int i, const char *why) {
    replica_t *p = &r->rep[i];
    if (p->up)
        log_warn("replica down shard=%d replica=%d endpoint=%s reason=\"%s\"", p->shard, p->replica,
                 p->endpoint, why);
    p->up = 0;
    p->n_loaded = 0; /* it may come back empty */
    p->ping_id = 0;
}

/* Every shard has a live replica holding version v: fetch what the router caches. */
static void maybe_fetch(router_t *r, rversion_t *v) {
    if (v->state != VS_LOADING) return;
    for (int k = 0; k < r->cfg->n_shards; k++) {
        int ok = 0;
        for (int j = 0; j < r->cfg->n_replicas; j++) {
            replica_t *p = &r->rep[k * r->cfg->n_replicas + j];
            ok |= p->up && replica_has(p, v->number);
        }
        if (!ok) return;
    }
    v->state = VS_FETCHING;
    for (int k = 0; k < r->cfg->n_shards; k++) {
        v->fetched[k] = 0;
        for (int j = 0; j < r->cfg->n_replicas; j++) {
            int i = k * r->cfg->n_replicas + j;
            if (!r->rep[i].up || !replica_has(&r->rep[i], v->number)) continue;
            Tessera__Header h;
            wire_header_init(&h, TESSERA__KIND__KIND_PULL);
            h.model_version = v->number;
            h.cached_only = v->on_shards;
            if (send_to_replica(r, i, &h, NULL, 0, 1) == 0) break;
        }
    }
}

static void set_default(router_t *r) {
    uint64_t best = 0;
    for (rversion_t *v = r->versions; v; v = v->next)
        if (v->state == VS_AVAILABLE && v->number > best) best = v->number;
    if (best != r->default_version) {
        log_info("serving version=%llu previous=%llu model=%s", (unsigned long long)best,
                 (unsigned long long)r->default_version, r->model);
        r->default_version = best;
    }
}

/* Which steps the policy serves, of the complete checkpoints `e` (newest first). */
static int policy_wants(const router_t *r, const ckpt_entry_t *e, int idx) {
    const char *pol = r->o->serve_versions; /* checked by config_check_serve */
    if (!strncmp(pol, "latest", 6)) {
        long keep = pol[6] == ':' ? strtol(pol + 7, NULL, 10) : 1;
        long rank = 0;
        for (int i = 0; i < idx; i++)
            rank += e[i].complete;
        return rank < keep;
    }
    char buf[CFG_STR];
    snprintf(buf, sizeof buf, "%s", pol);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (strtoll(tok, NULL, 10) == e[idx].step) return 1;
    return 0;
}

/* Looks for new checkpoints the policy wants and starts loading them; retires versions it no longer
 * wants once a newer one is available. */
static void scan_checkpoints(router_t *r) {
    if (!r->cfg->ckpt_root) return;
    ckpt_entry_t *e = NULL;
    int n = 0;
    if (ckpt_list(r->cfg->ckpt_root, &e, &n)) return;
    for (int i = 0; i < n; i++) {
        if (!e[i].complete || !policy_wants(r, e, i) || find_version(r, (uint64_t)e[i].step)) continue;
        rversion_t *v = XCALLOC(1, sizeof *v);
        v->number = (uint64_t)e[i].step;
        snprintf(v->path, sizeof v->path, "%s", e[i].dir);
        v->job = XCALLOC(1, sizeof *v->job);
        v->started = now_s();
        v->next = r->versions;
        r->versions = v;
        char err[8192];
        int rc = ckpt_validate(v->path, err, sizeof err);
        if (!rc) rc = ckpt_read_job(v->path, v->job, err, sizeof err);
        if (!rc) rc = version_prepare(r, v, err, sizeof err);
        if (rc) {
            v->state = VS_FAILED;
            snprintf(v->message, sizeof v->message, "%s", err);
            log_error("version %llu cannot be served: %s", (unsigned long long)v->number, err);
            continue;
        }
        log_info("loading version=%llu path=%s placement=%s", (unsigned long long)v->number, v->path,
                 v->on_shards ? "shards" : "router");
        for (int j = 0; j < r->n_rep; j++)
            if (r->rep[j].up) send_load(r, j, v);
    }
    /* Retire what the policy dropped, once something newer is available. */
    for (rversion_t *v = r->versions; v; v = v->next) {
        if (v->state != VS_AVAILABLE || v->number == r->default_version) continue;
        int wanted = 0;
        for (int i = 0; i < n; i++)
            if ((uint64_t)e[i].step == v->number) wanted = e[i].complete && policy_wants(r, e, i);
        if (!wanted) {
            v->state = VS_RETIRING;
            v->retire_at = now_s() + RETIRE_GRACE_S;
            log_info("retiring version=%llu", (unsigned long long)v->number);
        }
    }
    free(e);
}

/* Unloads retired versions whose grace period is over. */
static void unload_retired(router_t *r) {
    double t = now_s();
    for (rversion_t *v = r->versions, *next; v; v = next) {
        next = v->next;
        if (v->state != VS_RETIRING || t < v->retire_at) continue;
        for (int i = 0; i < r->n_rep; i++) {
            if (!replica_has(&r->rep[i], v->number)) continue;
            Tessera__Header h;
            wire_header_init(&h, TESSERA__KIND__KIND_UNLOAD);
            h.model_version = v->number;
            send_to_replica(r, i, &h, NULL, 0, 0);
            replica_drop(&r->rep[i], v->number);
        }
        log_info("unloaded version=%llu", (unsigned long long)v->number);
        remove_version(r, v);
    }
}

/* Copies a PULL reply's cached tensors into version v. */
static void store_params(router_t *r, rversion_t *v, int shard, wire_msg_t *m) {
    for (size_t f = 0; f < m->nframes; f++) {
        const Tessera__TensorDesc *d = m->hdr->tensors[f];
        if (d->id >= (uint32_t)v->spec.n_tensors) continue;
        const tensor_info_t *ti = &v->spec.tensors[d->id];
        if (!v->tensor[d->id] || d->shape[1] != ti->cols || d->row_begin + d->shape[0] > ti->rows) continue;
        memcpy(v->tensor[d->id] + d->row_begin * ti->cols, zmq_msg_data(&m->frames[f]), d->nbytes);
    }
    if (v->fetched[shard]) return;
    v->fetched[shard] = 1;
    for (int k = 0; k < r->cfg->n_shards; k++)
        if (!v->fetched[k]) return;
    v->state = VS_AVAILABLE;
    log_info("version available version=%llu load_s=%.3f placement=%s", (unsigned long long)v->number,
             now_s() - v->started, v->on_shards ? "shards" : "router");
    set_default(r);
    scan_checkpoints(r); /* retire what it replaces now, not at the next scan */
}

/* Dispatches a reply from replica i to a request the event loop made (INFER replies are taken by
 * infer_layer; anything else unknown is stale and dropped). */
static void handle_shard_reply(router_t *r, int i, wire_msg_t *m) {
    pending_t p;
    if (!take_pending(r, m->hdr->request_id, &p)) return;
    replica_t *rp = &r->rep[i];
    rversion_t *v = find_version(r, p.version);
    int ok = m->hdr->kind != TESSERA__KIND__KIND_ERROR;
    switch (p.kind) {
    case TESSERA__KIND__KIND_PING:
        rp->ping_id = 0;
        if (!rp->up) replica_up(r, i);
        break;
    case TESSERA__KIND__KIND_LOAD:
        if (ok) {
            replica_add(rp, p.version);
            if (v) maybe_fetch(r, v);
        } else if (v && m->hdr->error_code == TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION &&
                   v->state == VS_LOADING) {
            v->state = VS_FAILED;
            snprintf(v->message, sizeof v->message, "%s", m->hdr->error_message);
            log_error("version %llu failed to load on shard %d: %s", (unsigned long long)v->number, rp->shard,
                      m->hdr->error_message);
        }
        break;
    case TESSERA__KIND__KIND_PULL:
        if (!v || v->state != VS_FETCHING) break;
        if (ok) {
            store_params(r, v, rp->shard, m);
        } else { /* try the fetch again from any replica */
            replica_drop(rp, p.version);
            v->state = VS_LOADING;
            maybe_fetch(r, v);
        }
        break;
    default: break;
    }
}

static void drain_replica(router_t *r, int i) {
    for (;;) {
        if (!wire_readable(r->rep[i].sock)) return;
        wire_msg_t m;
        Tessera__ErrorCode code;
        char err[256];
        if (wire_recv(r->rep[i].sock, 0, SIZE_MAX, &m, &code, err, sizeof err) == 0)
            handle_shard_reply(r, i, &m);
        wire_msg_free(&m);
    }
}

static void ping_replicas(router_t *r) {
    double t = now_s();
    double timeout = r->o->serve_replica_timeout_ms / 1000.0;
    for (int i = 0; i < r->n_rep; i++) {
        replica_t *p = &r->rep[i];
        if (p->ping_id && t - p->ping_sent > timeout) {
            pending_t dummy;
            take_pending(r, p->ping_id, &dummy);
            replica_down(r, i, "no answer to ping");
        }
        if (p->ping_id || t < r->next_ping) continue;
        Tessera__Header h;
        wire_header_init(&h, TESSERA__KIND__KIND_PING);
        if (send_to_replica(r, i, &h, NULL, 0, 1) == 0) {
            p->ping_id = h.request_id;
            p->ping_sent = t;
        }
    }
    if (t >= r->next_ping) r->next_ping = t + PING_INTERVAL_S;
}

/* ---- evaluation ---- */

typedef struct {
    atomic_int refs;
    float data[];
} shared_buf_t;

static void release_shared(void *data, void *hint) {
    (void)data;
    shared_buf_t *b = hint;
    if (atomic_fetch_sub(&b->refs, 1) == 1) free(b);
}

/* Picks the next live replica of `shard` holding version v, after `not` (-1: any). */
static int pick_replica(router_t *r, rversion_t *v, int shard, int not ) {
    int R = r->cfg->n_replicas;
    for (int j = 0; j < R; j++) {
        int i = shard * R + (r->rr[shard] + j) % R;
        if (i != not &&r->rep[i].up && replica_has(&r->rep[i], v->number)) {
            r->rr[shard] = (r->rr[shard] + j + 1) % R;
            return i;
        }
    }
    return -1;
}

/* A request to some shards, each sent to a live replica holding the version and failed over to another
 * when one answers with an error or stays silent. */
typedef struct shard_call {
    Tessera__Kind kind;
    const char *what; /* for messages */
    /* Fills h's tensors and bufs for shard k (storage in the call's own context, valid until the next
     * build); returns the number of frames. */
    size_t (*build)(struct shard_call *c, int k, Tessera__Header *h, wire_buf_t *bufs);
    /* Takes shard k's answer (not an ERROR); 0 when it is the one expected. */
    int (*accept)(struct shard_call *c, int k, const wire_msg_t *m);
} shard_call_t;

#define CALL_MAX_FRAMES 64

/* Runs call c on every shard k with need[k]: at most INFER_ATTEMPTS sends per shard; other replies
 * (pings, loads) are dispatched as usual meanwhile. 0, or -1 with a message when some shard has no
 * replica left. */
static int call_shards(router_t *r, rversion_t *v, shard_call_t *c, const int *need, char *err,
                       size_t errlen) {
    int S = r->cfg->n_shards;
    uint64_t id[S];
    int rep[S], attempts[S], left = 0;
    double sent[S];
    for (int k = 0; k < S; k++) {
        id[k] = 0;
        rep[k] = -1;
        attempts[k] = need[k] ? 0 : -1; /* -1: nothing (more) to ask */
        left += need[k] != 0;
    }
    double timeout = r->o->serve_replica_timeout_ms / 1000.0;
    int rc = 0;
    while (left > 0) {
        /* (Re)send every part that has no request in flight. */
        for (int k = 0; k < S && !rc; k++) {
            if (attempts[k] < 0 || id[k]) continue;
            for (;;) {
                int i = pick_replica(r, v, k, rep[k]);
                if (i < 0 && rep[k] >= 0 && r->rep[rep[k]].up && replica_has(&r->rep[rep[k]], v->number))
                    i = rep[k]; /* the only one left: try it again */
                if (i < 0 || ++attempts[k] > INFER_ATTEMPTS) {
                    snprintf(err, errlen, "shard %d has no live replica holding version %llu", k,
                             (unsigned long long)v->number);
                    rc = -1;
                    break;
                }
                Tessera__Header h;
                wire_header_init(&h, c->kind);
                h.model_version = v->number;
                wire_buf_t bufs[CALL_MAX_FRAMES];
                size_t nb = c->build(c, k, &h, bufs);
                if (send_to_replica(r, i, &h, bufs, nb, 0) == 0) {
                    id[k] = h.request_id;
                    rep[k] = i;
                    sent[k] = now_s();
                    break;
                }
                rep[k] = i;
            }
        }
        if (rc) break;
        int nrep = r->n_rep;
        int n = zmq_poll(r->items + 1, nrep, 5);
        if (n < 0 && zmq_errno() != EINTR) {
            snprintf(err, errlen, "zmq_poll: %s", zmq_strerror(zmq_errno()));
            rc = -1;
            break;
        }
        for (int i = 0; i < nrep; i++) {
            while (wire_readable(r->rep[i].sock)) {
                wire_msg_t m;
                Tessera__ErrorCode code;
                char e2[256];
                if (wire_recv(r->rep[i].sock, 0, SIZE_MAX, &m, &code, e2, sizeof e2)) {
                    wire_msg_free(&m);
                    continue;
                }
                int k = 0;
                while (k < S && (id[k] == 0 || id[k] != m.hdr->request_id))
                    k++;
                if (k == S) {
                    handle_shard_reply(r, i, &m);
                } else if (m.hdr->kind != TESSERA__KIND__KIND_ERROR) {
                    if (c->accept(c, k, &m) == 0) {
                        attempts[k] = -1;
                        left--;
                    }
                    id[k] = 0; /* an answer that is not the one expected is asked again */
                } else if (m.hdr->error_code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT) {
                    /* the request itself is wrong: another replica would say the same */
                    snprintf(err, errlen, "shard %d: %s", k,
                             m.hdr->error_message ? m.hdr->error_message : "");
                    rc = -1;
                    left = 0;
                } else { /* this replica lacks the version (restarted?): ask another */
                    log_warn("replica shard=%d replica=%d failed a %s: %s", r->rep[i].shard,
                             r->rep[i].replica, c->what, m.hdr->error_message ? m.hdr->error_message : "");
                    replica_drop(&r->rep[i], v->number);
                    send_load(r, i, v);
                    id[k] = 0;
                }
                wire_msg_free(&m);
            }
        }
        double tnow = now_s();
        for (int k = 0; k < S; k++)
            if (id[k] && tnow - sent[k] > timeout) {
                char why[64];
                snprintf(why, sizeof why, "no answer to a %s", c->what);
                replica_down(r, rep[k], why);
                id[k] = 0;
            }
    }
    return rc;
}

/* INFER: y[batch, out] = x[batch, in] W^T for weight tensor t, row block by row block. */
typedef struct {
    shard_call_t call;
    rversion_t *v;
    int t, batch, in, out;
    shared_buf_t *x;
    size_t xbytes;
    float *y;
    Tessera__TensorDesc d, *dp;
    uint64_t shape[2];
} infer_call_t;

static size_t infer_build(shard_call_t *c, int k, Tessera__Header *h, wire_buf_t *bufs) {
    infer_call_t *ic = (infer_call_t *)c;
    (void)k;
    h->tensor = (uint32_t)ic->t;
    wire_desc_init(&ic->d, ic->shape, 0, NULL, 0, (uint64_t)ic->batch, (uint64_t)ic->in);
    ic->dp = &ic->d;
    h->n_tensors = 1;
    h->tensors = &ic->dp;
    atomic_fetch_add(&ic->x->refs, 1);
    bufs[0] = (wire_buf_t){ic->x->data, ic->xbytes, release_shared, ic->x};
    return 1;
}

static int infer_accept(shard_call_t *c, int k, const wire_msg_t *m) {
    infer_call_t *ic = (infer_call_t *)c;
    if (m->hdr->kind != TESSERA__KIND__KIND_PREDICTION || m->nframes != 1) return -1;
    const Tessera__TensorDesc *d = m->hdr->tensors[0];
    row_range_t rr = shard_map_range(&ic->v->map, ic->t, k);
    if (d->shape[0] != (uint64_t)ic->batch || d->row_begin != rr.row_begin ||
        d->shape[1] != rr.row_end - rr.row_begin || wire_align_frame((zmq_msg_t *)&m->frames[0]))
        return -1;
    const float *src = zmq_msg_data((zmq_msg_t *)&m->frames[0]);
    size_t w = d->shape[1];
    for (int b = 0; b < ic->batch; b++)
        memcpy(ic->y + (size_t)b * (size_t)ic->out + rr.row_begin, src + (size_t)b * w, w * sizeof(float));
    return 0;
}

/* y[batch, out] = x[batch, in] W^T for weight tensor t held by the shards: one INFER to a replica of
 * every shard holding rows of t. 0, or -1 with a message. */
static int infer_layer(router_t *r, rversion_t *v, int t, const float *x, int batch, int in, float *y,
                       int out, char *err, size_t errlen) {
    int S = r->cfg->n_shards, need[S];
    for (int k = 0; k < S; k++) {
        row_range_t rr = shard_map_range(&v->map, t, k);
        need[k] = rr.row_end > rr.row_begin;
    }
    infer_call_t ic = {.call = {TESSERA__KIND__KIND_INFER, "INFER", infer_build, infer_accept},
                       .v = v,
                       .t = t,
                       .batch = batch,
                       .in = in,
                       .out = out,
                       .y = y};
    ic.xbytes = (size_t)batch * (size_t)in * sizeof(float);
    ic.x = XMALLOC(sizeof *ic.x + ic.xbytes);
    atomic_init(&ic.x->refs, 1);
    memcpy(ic.x->data, x, ic.xbytes);
    int rc = call_shards(r, v, &ic.call, need, err, errlen);
    release_shared(NULL, ic.x);
    return rc;
}

/* SPARSE_PULL (read-only): the rows of every table's unique ids in the batch, from the shards that own
 * them, into v->sb. */
typedef struct {
    shard_call_t call;
    sparse_batch_t *sb;
    Tessera__TensorDesc d[CALL_MAX_FRAMES], *dp[CALL_MAX_FRAMES];
    uint64_t shape[2 * CALL_MAX_FRAMES];
} rows_call_t;

static void free_copy(void *data, void *hint) {
    (void)hint;
    free(data);
}

static size_t rows_build(shard_call_t *c, int k, Tessera__Header *h, wire_buf_t *bufs) {
    rows_call_t *rc = (rows_call_t *)c;
    size_t n = 0;
    for (int t = 0; t < rc->sb->n_tables; t++) {
        const sb_table_t *st = &rc->sb->t[t];
        int b = st->shard_off[k], cnt = st->shard_off[k + 1] - b;
        if (cnt == 0) continue;
        wire_desc_ids(&rc->d[n], &rc->shape[2 * n], (uint32_t)t, (uint64_t)cnt);
        rc->dp[n] = &rc->d[n];
        /* A copy: a request may still be queued for a dead replica when the next batch reuses sb. */
        void *ids = XMALLOC((size_t)cnt * sizeof(uint64_t));
        memcpy(ids, st->ids + b, (size_t)cnt * sizeof(uint64_t));
        bufs[n++] = (wire_buf_t){ids, (size_t)cnt * sizeof(uint64_t), free_copy, NULL};
    }
    h->n_tensors = n;
    h->tensors = rc->dp;
    return n;
}

static int rows_accept(shard_call_t *c, int k, const wire_msg_t *m) {
    rows_call_t *rc = (rows_call_t *)c;
    char err[256];
    if (m->hdr->kind != TESSERA__KIND__KIND_SPARSE_ROWS) return -1;
    int bad = sparse_batch_take_rows(rc->sb, k, m, err, sizeof err);
    if (bad) log_warn("shard %d: %s", k, err);
    return bad;
}

static int pull_rows(router_t *r, rversion_t *v, char *err, size_t errlen) {
    int S = r->cfg->n_shards, need[S];
    if (v->sb.n_tables > CALL_MAX_FRAMES) {
        snprintf(err, errlen, "the model has %d tables; the router asks at most %d per request",
                 v->sb.n_tables, CALL_MAX_FRAMES);
        return -1;
    }
    for (int k = 0; k < S; k++) {
        need[k] = 0;
        for (int t = 0; t < v->sb.n_tables; t++)
            need[k] |= v->sb.t[t].shard_off[k + 1] > v->sb.t[t].shard_off[k];
    }
    rows_call_t rc = {.call = {TESSERA__KIND__KIND_SPARSE_PULL, "SPARSE_PULL", rows_build, rows_accept},
                      .sb = &v->sb};
    return call_shards(r, v, &rc.call, need, err, errlen);
}

/* A graph model: builds the batch's bags from the clients' ids (PREDICT_ID_MISSING is an empty bag),
 * pulls their rows, and runs the whole model. */
static int evaluate_graph(router_t *r, rversion_t *v, int batch, char *err, size_t errlen) {
    int S = v->spec.n_slots;
    size_t nnz = 0;
    v->bag_off[0] = 0;
    for (size_t j = 0; j < (size_t)batch * (size_t)S; j++) {
        if (v->ids[j] != PREDICT_ID_MISSING) v->bag_ids[nnz++] = v->ids[j];
        v->bag_off[j + 1] = nnz;
    }
    ctr_dataset_t d = {.n = (size_t)batch,
                       .n_dense = v->spec.input_dim,
                       .n_slots = S,
                       .dense = r->xbuf,
                       .bag_off = v->bag_off,
                       .ids = v->bag_ids};
    sparse_batch_build(&v->sb, &d, v->examples, batch);
    if (pull_rows(r, v, err, errlen)) return -1;
    sparse_batch_bind(&v->sb, v->model);
    model_forward(v->model, r->xbuf, batch, v->logits);
    return 0;
}

/* Runs `batch` rows of r->xbuf (and, for a graph model, v->ids) through version v into v->logits. */
static int evaluate(router_t *r, rversion_t *v, int batch, char *err, size_t errlen) {
    if (v->model) return evaluate_graph(r, v, batch, err, errlen);
    backend_t *be = r->be;
    int n = v->spec.n_layers;
    layer_t *L = v->spec.layers;
    be->ops->to_device(be, v->act[0], r->xbuf, (size_t)batch * (size_t)v->spec.input_dim * sizeof(float));
    for (int i = 0; i < n - 1; i++) {
        layer_t *l = &L[i];
        if (v->on_shards && !strcmp(l->ops->type, "linear")) {
            if (infer_layer(r, v, l->tensor[0], v->act[i], batch, l->in, v->act[i + 1], l->out, err, errlen))
                return -1;
            be->ops->add_bias(be, v->act[i + 1], l->p[1], batch, l->out);
        } else {
            const float *x[1] = {v->act[i]};
            l->ops->forward(l, be, x, v->act[i + 1], batch);
        }
    }
    be->ops->sync(be);
    return 0;
}

/* ---- clients ---- */

static void client_error(router_t *r, zmq_msg_t *identity, uint64_t request_id, Tessera__ErrorCode code,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void client_error(router_t *r, zmq_msg_t *identity, uint64_t request_id, Tessera__ErrorCode code,
                         const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->errors++;
    r->errors_by_code[(unsigned)code < N_CODES ? (unsigned)code : N_CODES - 1]++;
    wire_send_error(r->front, identity, request_id, code, msg);
}

static rversion_t *servable(router_t *r, uint64_t number) {
    rversion_t *v = find_version(r, number ? number : r->default_version);
    return v && (v->state == VS_AVAILABLE || v->state == VS_RETIRING) ? v : NULL;
}

static void list_available(router_t *r, char *out, size_t n) {
    size_t used = 0;
    out[0] = '\0';
    for (rversion_t *v = r->versions; v; v = v->next)
        if (v->state == VS_AVAILABLE && used < n)
            used += (size_t)snprintf(out + used, n - used, "%s%llu", used ? ", " : "",
                                     (unsigned long long)v->number);
    if (!out[0]) snprintf(out, n, "none");
}

/* Checks a request's ids [rows, n_slots] against the tables: an id of a pre-sized table must be below
 * its rows (or PREDICT_ID_MISSING). 0, or -1 with a message naming the row, slot and table. */
static int check_ids(const rversion_t *v, const uint64_t *ids, size_t rows, char *err, size_t errlen) {
    int S = v->spec.n_slots;
    for (int t = 0; t < v->spec.n_tables; t++) {
        const table_info_t *ti = &v->spec.tables[t];
        for (size_t b = 0; ti->rows && b < rows; b++) {
            uint64_t id = ids[b * (size_t)S + (size_t)ti->slot];
            if (id != PREDICT_ID_MISSING && id >= ti->rows) {
                snprintf(err, errlen, "row %zu, slot %d: id %llu is out of range for table %s (rows = %llu)",
                         b, ti->slot, (unsigned long long)id, ti->name, (unsigned long long)ti->rows);
                return -1;
            }
        }
    }
    return 0;
}

static void handle_predict(router_t *r, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    if (h->model && h->model[0] && strcmp(h->model, r->model)) {
        client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_NOT_FOUND,
                     "model '%s' is not served here (this router serves '%s')", h->model, r->model);
        return;
    }
    rversion_t *v = servable(r, h->model_version);
    if (!v) {
        char avail[256];
        list_available(r, avail, sizeof avail);
        if (h->model_version)
            client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_NOT_FOUND,
                         "model '%s' has no version %llu available (available: %s)", r->model,
                         (unsigned long long)h->model_version, avail);
        else
            client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_UNAVAILABLE,
                         "model '%s' has no version loaded yet", r->model);
        return;
    }
    int slots = v->spec.n_slots;
    size_t want = slots ? 2 : 1;
    if (h->n_tensors != want) {
        if (slots)
            client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                         "PREDICT to model '%s' takes two tensors, the dense features (F32 [rows, %d]) and "
                         "the categorical ids (U64 [rows, %d]), not %zu",
                         r->model, v->spec.input_dim, slots, h->n_tensors);
        else
            client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                         "PREDICT takes exactly one input tensor [rows, %d], not %zu", v->spec.input_dim,
                         h->n_tensors);
        return;
    }
    const Tessera__TensorDesc *d = h->tensors[0];
    if (d->dtype != TESSERA__DTYPE__DTYPE_F32 || d->shape[1] != (uint64_t)v->spec.input_dim ||
        d->shape[0] == 0 || d->shape[0] > (1u << 24)) {
        client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                     "input is %s [%llu, %llu]; model '%s' version %llu takes F32 [rows >= 1, %d]",
                     d->dtype == TESSERA__DTYPE__DTYPE_F32 ? "F32" : "U64", (unsigned long long)d->shape[0],
                     (unsigned long long)d->shape[1], r->model, (unsigned long long)v->number,
                     v->spec.input_dim);
        return;
    }
    if (slots) {
        const Tessera__TensorDesc *di = h->tensors[1];
        if (di->dtype != TESSERA__DTYPE__DTYPE_U64 || di->shape[0] != d->shape[0] ||
            di->shape[1] != (uint64_t)slots) {
            client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                         "ids are %s [%llu, %llu]; model '%s' version %llu takes U64 [%llu, %d] (one id per "
                         "categorical slot, %llu for none)",
                         di->dtype == TESSERA__DTYPE__DTYPE_U64 ? "U64" : "F32",
                         (unsigned long long)di->shape[0], (unsigned long long)di->shape[1], r->model,
                         (unsigned long long)v->number, (unsigned long long)d->shape[0], slots,
                         (unsigned long long)PREDICT_ID_MISSING);
            return;
        }
        char why[512];
        if (wire_align_frame(&m->frames[1])) {
            client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED,
                         "out of memory");
            return;
        }
        if (check_ids(v, zmq_msg_data(&m->frames[1]), (size_t)d->shape[0], why, sizeof why)) {
            client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "%s",
                         why);
            return;
        }
    }
    if (r->q_len == r->o->serve_max_queue) {
        client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED,
                     "the router's queue is full (%d requests waiting): retry later", r->q_len);
        return;
    }
    if (wire_align_frame(&m->frames[0])) {
        client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED,
                     "out of memory");
        return;
    }
    request_t *q = &r->queue[(r->q_head + r->q_len++) % r->o->serve_max_queue];
    zmq_msg_init(&q->identity);
    zmq_msg_move(&q->identity, &m->identity);
    zmq_msg_init(&q->frame);
    zmq_msg_move(&q->frame, &m->frames[0]);
    q->has_ids = slots > 0;
    if (q->has_ids) {
        zmq_msg_init(&q->ids);
        zmq_msg_move(&q->ids, &m->frames[1]);
    }
    q->request_id = h->request_id;
    q->version = v->number; /* the version it was checked against, not "the default when it runs" */
    q->rows = (int)d->shape[0];
    q->arrival = now_s();
    double deadline_ms = h->deadline_ms ? (double)h->deadline_ms : (double)r->o->serve_deadline_ms;
    q->deadline = q->arrival + deadline_ms / 1000.0;
}

static void handle_status(router_t *r, wire_msg_t *m) {
    const Tessera__Header *h = m->hdr;
    if (h->model && h->model[0] && strcmp(h->model, r->model)) {
        client_error(r, &m->identity, h->request_id, TESSERA__ERROR_CODE__ERR_NOT_FOUND,
                     "model '%s' is not served here (this router serves '%s')", h->model, r->model);
        return;
    }
    Tessera__ModelStatus st;
    tessera__model_status__init(&st);
    st.name = r->model;
    st.default_version = r->default_version;
    int nv = 0;
    for (rversion_t *v = r->versions; v; v = v->next)
        nv++;
    Tessera__VersionStatus vs[nv ? nv : 1], *vp[nv ? nv : 1];
    int k = 0;
    for (rversion_t *v = r->versions; v; v = v->next, k++) {
        tessera__version_status__init(&vs[k]);
        vs[k].version = v->number;
        vs[k].state = (char *)vstate_names[v->state];
        vs[k].path = v->path;
        vs[k].message = v->message;
        vp[k] = &vs[k];
    }
    st.n_versions = (size_t)nv;
    st.versions = vp;
    Tessera__ReplicaStatus rs[r->n_rep], *rpp[r->n_rep];
    for (int i = 0; i < r->n_rep; i++) {
        tessera__replica_status__init(&rs[i]);
        rs[i].shard = (uint32_t)r->rep[i].shard;
        rs[i].replica = (uint32_t)r->rep[i].replica;
        rs[i].endpoint = r->rep[i].endpoint;
        rs[i].up = r->rep[i].up;
        rpp[i] = &rs[i];
    }
    st.n_replicas = (size_t)r->n_rep;
    st.replicas = rpp;
    rversion_t *dv = servable(r, 0);
    if (!dv) dv = r->versions && r->versions->job && r->versions->spec.n_layers ? r->versions : NULL;
    if (dv) {
        st.input_dim = (uint32_t)dv->spec.input_dim;
        st.outputs = (uint32_t)dv->spec.classes;
        st.placement = dv->on_shards ? "shards" : "router";
        st.categorical_slots = (uint32_t)dv->spec.n_slots;
        st.input_mean = dv->job->mean;
        st.input_std = dv->job->std;
    }
    st.requests = r->requests;
    st.errors = r->errors;
    st.batches = r->batches;
    st.queue_depth = (uint32_t)r->q_len;
    st.max_queue = (uint32_t)r->o->serve_max_queue;
    Tessera__Header out;
    wire_header_init(&out, TESSERA__KIND__KIND_STATUS);
    out.request_id = h->request_id;
    out.model = r->model;
    out.status = &st;
    wire_send(r->front, &m->identity, &out, NULL, 0);
}

static void handle_client(router_t *r) {
    wire_msg_t m;
    Tessera__ErrorCode code;
    char err[512];
    int rc = wire_recv(r->front, 1, (size_t)r->o->serve_max_request_mb << 20, &m, &code, err, sizeof err);
    if (rc) {
        if (r->errors < 10 || r->errors % 1000 == 0)
            log_warn("rejected request error=%s detail=\"%s\"", wire_error_name(code), err);
        if (rc == -TS_EPROTO && m.has_identity)
            client_error(r, &m.identity, m.hdr ? m.hdr->request_id : 0, code, "%s", err);
        else
            r->errors++;
        wire_msg_free(&m);
        return;
    }
    const Tessera__Header *h = m.hdr;
    switch (h->kind) {
    case TESSERA__KIND__KIND_PREDICT: handle_predict(r, &m); break;
    case TESSERA__KIND__KIND_STATUS: handle_status(r, &m); break;
    case TESSERA__KIND__KIND_LIVE:
    case TESSERA__KIND__KIND_PING:
        wire_send_simple(r->front, &m.identity, h->request_id, TESSERA__KIND__KIND_OK);
        break;
    case TESSERA__KIND__KIND_READY:
        if (h->model && h->model[0] && strcmp(h->model, r->model))
            client_error(r, &m.identity, h->request_id, TESSERA__ERROR_CODE__ERR_NOT_FOUND,
                         "model '%s' is not served here (this router serves '%s')", h->model, r->model);
        else if (servable(r, 0))
            wire_send_simple(r->front, &m.identity, h->request_id, TESSERA__KIND__KIND_OK);
        else
            client_error(r, &m.identity, h->request_id, TESSERA__ERROR_CODE__ERR_UNAVAILABLE,
                         "no version of model '%s' is available yet", r->model[0] ? r->model : "(none)");
        break;
    default:
        client_error(r, &m.identity, h->request_id, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                     "the router does not handle %s (PREDICT, STATUS, LIVE, READY)", wire_kind_name(h->kind));
    }
    wire_msg_free(&m);
}

static void free_request(request_t *q) {
    zmq_msg_close(&q->identity);
    zmq_msg_close(&q->frame);
    if (q->has_ids) zmq_msg_close(&q->ids);
    q->has_ids = 0;
}

static void free_buffer(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* Runs one batch: the head of the queue and the requests right behind it for the same version, up to
 * max_batch rows (a larger request runs alone, in chunks). Expired requests are answered
 * DEADLINE_EXCEEDED. */
static void run_batch(router_t *r) {
    int Q = r->o->serve_max_queue, maxb = r->o->serve_max_batch;
    double t = now_s();
    request_t *head = &r->queue[r->q_head];
    rversion_t *v = servable(r, head->version);
    if (!v || t > head->deadline) {
        if (!v)
            client_error(r, &head->identity, head->request_id, TESSERA__ERROR_CODE__ERR_NOT_FOUND,
                         "version %llu was unloaded before the request ran",
                         (unsigned long long)head->version);
        else
            client_error(r, &head->identity, head->request_id, TESSERA__ERROR_CODE__ERR_DEADLINE_EXCEEDED,
                         "deadline exceeded after %.1f ms in the queue", (t - head->arrival) * 1e3);
        free_request(head);
        r->q_head = (r->q_head + 1) % Q;
        r->q_len--;
        return;
    }
    int n = 1, rows = head->rows;
    while (n < r->q_len && head->rows <= maxb) {
        request_t *q = &r->queue[(r->q_head + n) % Q];
        if (servable(r, q->version) != v || t > q->deadline || rows + q->rows > maxb) break;
        rows += q->rows;
        n++;
    }
    int in = v->spec.input_dim, classes = v->spec.classes, slots = v->spec.n_slots;
    float **out = XCALLOC((size_t)n, sizeof *out);
    char err[512] = "";
    double t0 = now_s();
    int failed = 0;
    if (head->rows > maxb) { /* one large request, in chunks */
        out[0] = XMALLOC((size_t)head->rows * (size_t)classes * sizeof(float));
        const float *x = zmq_msg_data(&head->frame);
        for (int b = 0; b < head->rows && !failed; b += maxb) {
            int c = head->rows - b < maxb ? head->rows - b : maxb;
            memcpy(r->xbuf, x + (size_t)b * (size_t)in, (size_t)c * (size_t)in * sizeof(float));
            if (head->has_ids)
                memcpy(v->ids, (const uint64_t *)zmq_msg_data(&head->ids) + (size_t)b * (size_t)slots,
                       (size_t)c * (size_t)slots * sizeof(uint64_t));
            failed = evaluate(r, v, c, err, sizeof err);
            if (!failed)
                memcpy(out[0] + (size_t)b * (size_t)classes, v->logits,
                       (size_t)c * (size_t)classes * sizeof(float));
        }
    } else {
        size_t off = 0, row = 0;
        for (int i = 0; i < n; i++) {
            request_t *q = &r->queue[(r->q_head + i) % Q];
            memcpy(r->xbuf + off, zmq_msg_data(&q->frame), (size_t)q->rows * (size_t)in * sizeof(float));
            if (q->has_ids)
                memcpy(v->ids + row * (size_t)slots, zmq_msg_data(&q->ids),
                       (size_t)q->rows * (size_t)slots * sizeof(uint64_t));
            off += (size_t)q->rows * (size_t)in;
            row += (size_t)q->rows;
        }
        failed = evaluate(r, v, rows, err, sizeof err);
        off = 0;
        for (int i = 0; i < n && !failed; i++) {
            request_t *q = &r->queue[(r->q_head + i) % Q];
            size_t bytes = (size_t)q->rows * (size_t)classes * sizeof(float);
            out[i] = XMALLOC(bytes);
            memcpy(out[i], v->logits + off, bytes);
            off += (size_t)q->rows * (size_t)classes;
        }
    }
    uint64_t compute_us = (uint64_t)((now_s() - t0) * 1e6);
    r->batches++;
    observe(&r->batch_rows, rows);
    r->rows += (uint64_t)rows;
    for (int i = 0; i < n; i++) {
        request_t *q = &r->queue[(r->q_head + i) % Q];
        if (failed) {
            client_error(r, &q->identity, q->request_id, TESSERA__ERROR_CODE__ERR_UNAVAILABLE, "%s", err);
        } else {
            Tessera__Header h;
            wire_header_init(&h, TESSERA__KIND__KIND_PREDICTION);
            h.request_id = q->request_id;
            h.model_version = v->number;
            h.model = r->model;
            h.compute_us = compute_us;
            h.batch_rows = (uint32_t)rows;
            Tessera__TensorDesc d, *dp = &d;
            uint64_t shape[2];
            wire_desc_init(&d, shape, 0, "logits", 0, (uint64_t)q->rows, (uint64_t)classes);
            h.n_tensors = 1;
            h.tensors = &dp;
            wire_buf_t b = {out[i], (size_t)q->rows * (size_t)classes * sizeof(float), free_buffer, NULL};
            out[i] = NULL;
            wire_send(r->front, &q->identity, &h, &b, 1);
            r->requests++;
            observe(&r->latency, now_s() - q->arrival);
        }
        free(out[i]);
        free_request(q);
    }
    free(out);
    r->q_head = (r->q_head + n) % Q;
    r->q_len -= n;
}

/* Whether the queue's head should run now: a full batch is waiting, or the oldest request has waited
 * max_delay (0: at once). */
static int batch_due(router_t *r, double *wait_s) {
    if (!r->q_len) return 0;
    double delay = r->o->serve_max_delay_us / 1e6;
    if (delay <= 0) return 1;
    int rows = 0;
    for (int i = 0; i < r->q_len && rows < r->o->serve_max_batch; i++)
        rows += r->queue[(r->q_head + i) % r->o->serve_max_queue].rows;
    if (rows >= r->o->serve_max_batch) return 1;
    double left = r->queue[r->q_head].arrival + delay - now_s();
    if (left <= 0) return 1;
    if (left < *wait_s) *wait_s = left;
    return 0;
}

/* ---- metrics (serve.metrics_listen) ---- */

static void put_histogram(FILE *f, const router_t *r, const char *name, const char *help,
                          const histogram_t *h) {
    metrics_put_family(f, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i <= h->n; i++) {
        cum += h->count[i];
        fprintf(f, "%s_bucket{model=\"", name);
        metrics_put_label(f, r->model);
        if (i < h->n)
            fprintf(f, "\",le=\"%g\"} %llu\n", h->le[i], (unsigned long long)cum);
        else
            fprintf(f, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    fprintf(f, "%s_sum{model=\"", name);
    metrics_put_label(f, r->model);
    fprintf(f, "\"} %.17g\n%s_count{model=\"", h->sum, name);
    metrics_put_label(f, r->model);
    fprintf(f, "\"} %llu\n", (unsigned long long)cum);
}

/* Rebuilds the page /metrics serves from the router's counters and state. */
static void publish_metrics(router_t *r) {
    char *page = NULL, extra[160];
    size_t len = 0;
    FILE *f = open_memstream(&page, &len);
    if (!f) return;
    metrics_put_family(f, "tessera_serve_requests_total", "counter",
                       "Predict requests answered with predictions.");
    metrics_put_sample(f, "model", r->model, "tessera_serve_requests_total", NULL, (double)r->requests);
    metrics_put_family(f, "tessera_serve_errors_total", "counter",
                       "Requests answered with an error, by error code.");
    for (int c = 1; c < N_CODES; c++) {
        const char *name = wire_error_name(c);
        if (!strcmp(name, "ERR_INVALID")) continue;
        snprintf(extra, sizeof extra, "code=\"%s\"", name + 4); /* without ERR_ */
        metrics_put_sample(f, "model", r->model, "tessera_serve_errors_total", extra,
                           (double)r->errors_by_code[c]);
    }
    put_histogram(f, r, "tessera_serve_request_duration_seconds",
                  "Time from a predict request's arrival to its prediction being sent.", &r->latency);
    metrics_put_family(f, "tessera_serve_batches_total", "counter", "Batches evaluated.");
    metrics_put_sample(f, "model", r->model, "tessera_serve_batches_total", NULL, (double)r->batches);
    put_histogram(f, r, "tessera_serve_batch_rows", "Rows per evaluated batch.", &r->batch_rows);
    metrics_put_family(f, "tessera_serve_queue_depth", "gauge", "Requests waiting to run.");
    metrics_put_sample(f, "model", r->model, "tessera_serve_queue_depth", NULL, r->q_len);
    metrics_put_family(f, "tessera_serve_queue_capacity", "gauge",
                       "serve.max_queue: beyond it requests are refused.");
    metrics_put_sample(f, "model", r->model, "tessera_serve_queue_capacity", NULL, r->o->serve_max_queue);
    metrics_put_family(f, "tessera_serve_default_version", "gauge",
                       "The version requests without one get (0: none available yet).");
    metrics_put_sample(f, "model", r->model, "tessera_serve_default_version", NULL,
                       (double)r->default_version);
    metrics_put_family(f, "tessera_serve_version_info", "gauge",
                       "Each known version and its state (value 1).");
    for (rversion_t *v = r->versions; v; v = v->next) {
        snprintf(extra, sizeof extra, "version=\"%llu\",state=\"%s\"", (unsigned long long)v->number,
                 vstate_names[v->state]);
        metrics_put_sample(f, "model", r->model, "tessera_serve_version_info", extra, 1);
    }
    metrics_put_family(f, "tessera_serve_replica_up", "gauge",
                       "Whether each shard replica answers the router's pings.");
    for (int i = 0; i < r->n_rep; i++) {
        snprintf(extra, sizeof extra, "shard=\"%d\",replica=\"%d\"", r->rep[i].shard, r->rep[i].replica);
        metrics_put_sample(f, "model", r->model, "tessera_serve_replica_up", extra, r->rep[i].up);
    }
    metrics_put_family(f, "process_start_time_seconds", "gauge",
                       "When the router started, in seconds since the epoch.");
    fprintf(f, "process_start_time_seconds %.3f\n", r->started);
    fclose(f);
    metrics_http_publish(r->http, page, len, servable(r, 0) != NULL);
    free(page);
}

static void metrics_init(router_t *r) {
    static const double latency_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    r->latency.n = (int)(sizeof latency_le / sizeof latency_le[0]);
    memcpy(r->latency.le, latency_le, sizeof latency_le);
    r->batch_rows.n = 0;
    for (double b = 1; b < r->o->serve_max_batch && r->batch_rows.n < MAX_BUCKETS - 1; b *= 2)
        r->batch_rows.le[r->batch_rows.n++] = b;
    r->batch_rows.le[r->batch_rows.n++] = r->o->serve_max_batch;
    r->started = unix_s();
}

/* ---- setup and loop ---- */

static int open_sockets(router_t *r, void *zctx) {
    const router_config_t *c = r->cfg;
    r->front = zmq_socket(zctx, ZMQ_ROUTER);
    int linger = 500;
    zmq_setsockopt(r->front, ZMQ_LINGER, &linger, sizeof linger);
    /* Requests up to max_request_mb get a clear error; far larger ones are cut off by ZeroMQ. */
    int64_t hard = (int64_t)(c->opts->serve_max_request_mb << 20) * 4;
    zmq_setsockopt(r->front, ZMQ_MAXMSGSIZE, &hard, sizeof hard);
    int hwm = 100000;
    zmq_setsockopt(r->front, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(r->front, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_bind(r->front, c->opts->serve_listen)) {
        log_error("cannot listen on %s: %s", c->opts->serve_listen, zmq_strerror(zmq_errno()));
        return -TS_EIO;
    }
    r->n_rep = c->n_shards * c->n_replicas;
    r->rep = XCALLOC((size_t)r->n_rep, sizeof *r->rep);
    r->items = XCALLOC((size_t)r->n_rep + 1, sizeof *r->items);
    r->items[0] = (zmq_pollitem_t){r->front, 0, ZMQ_POLLIN, 0};
    for (int i = 0; i < r->n_rep; i++) {
        replica_t *p = &r->rep[i];
        p->shard = i / c->n_replicas;
        p->replica = i % c->n_replicas;
        snprintf(p->endpoint, sizeof p->endpoint, "%s", c->shard_endpoints[i]);
        p->sock = zmq_socket(zctx, ZMQ_DEALER);
        int zero = 0, one = 1, ivl = 100;
        zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(p->sock, ZMQ_SNDTIMEO, &zero, sizeof zero);
        zmq_setsockopt(p->sock, ZMQ_IMMEDIATE, &one, sizeof one); /* no queueing for a dead replica */
        zmq_setsockopt(p->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
        if (zmq_connect(p->sock, p->endpoint)) {
            log_error("cannot connect to shard %d replica %d at %s: %s", p->shard, p->replica, p->endpoint,
                      zmq_strerror(zmq_errno()));
            return -TS_EIO;
        }
        r->items[i + 1] = (zmq_pollitem_t){p->sock, 0, ZMQ_POLLIN, 0};
    }
    return 0;
}

static void shutdown_shards(router_t *r) {
    for (int i = 0; i < r->n_rep; i++) {
        Tessera__Header h;
        wire_header_init(&h, TESSERA__KIND__KIND_SHUTDOWN);
        h.request_id = ++r->next_id;
        h.role = (char *)r->cfg->role;
        if (can_send(r->rep[i].sock)) wire_send(r->rep[i].sock, NULL, &h, NULL, 0);
        zmq_pollitem_t it = {r->rep[i].sock, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 1000);
    }
}

int router_run(const router_config_t *cfg, void *zctx) {
    router_t rt, *r = &rt;
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    r->o = cfg->opts;
    if (cfg->model_name) snprintf(r->model, sizeof r->model, "%s", cfg->model_name);
    char err[8192];
    r->be = backend_create("cpu", r->o->serve_threads, err, sizeof err);
    if (!r->be) {
        log_error("router: %s", err);
        return -TS_EINVAL;
    }
    if (config_check_serve(r->o, err, sizeof err)) {
        log_error("router: %s", err);
        backend_free(r->be);
        return -TS_EINVAL;
    }
    r->queue = XCALLOC((size_t)r->o->serve_max_queue, sizeof *r->queue);
    r->rr = XCALLOC((size_t)cfg->n_shards, sizeof *r->rr);
    int rc = open_sockets(r, zctx);
    metrics_init(r);
    if (!rc && r->o->serve_metrics_listen[0]) {
        r->http = metrics_http_start(r->o->serve_metrics_listen, err, sizeof err);
        if (!r->http) {
            log_error("router: %s", err);
            rc = -TS_EINVAL;
        } else
            log_info("router metrics endpoint=http://%s/metrics", r->o->serve_metrics_listen);
    }
    size_t xcap = 0;
    if (!rc && cfg->initial_version) {
        rversion_t *v = XCALLOC(1, sizeof *v);
        v->number = cfg->initial_version;
        v->job = XCALLOC(1, sizeof *v->job);
        *v->job = *cfg->initial_job;
        v->started = now_s();
        r->versions = v;
        rc = version_prepare(r, v, err, sizeof err);
        if (rc) log_error("cannot serve version %llu: %s", (unsigned long long)v->number, err);
        for (int i = 0; i < r->n_rep; i++)
            replica_add(&r->rep[i], v->number); /* the training shards hold it already */
    }
    log_info("router listening endpoint=%s shards=%d replicas=%d max_batch=%d max_delay_us=%d max_queue=%d "
             "cache_mb=%g versions=%s watch=%s",
             r->o->serve_listen, cfg->n_shards, cfg->n_replicas, r->o->serve_max_batch,
             r->o->serve_max_delay_us, r->o->serve_max_queue, r->o->serve_cache_mb, r->o->serve_versions,
             cfg->ckpt_root ? cfg->ckpt_root : "(none)");
    double next_report = now_s() + 10;
    uint64_t last_requests = 0;
    while (!rc && !r->stop && !(cfg->stop_flag && *cfg->stop_flag)) {
        /* The input buffer fits the widest version's batch. */
        for (rversion_t *v = r->versions; v; v = v->next)
            if (v->spec.n_layers && (size_t)v->spec.input_dim * (size_t)r->o->serve_max_batch > xcap) {
                xcap = (size_t)v->spec.input_dim * (size_t)r->o->serve_max_batch;
                free(r->xbuf);
                r->xbuf = XMALLOC(xcap * sizeof(float));
            }
        double wait = PING_INTERVAL_S;
        int due = batch_due(r, &wait);
        int n = zmq_poll(r->items, r->n_rep + 1, due ? 0 : (long)(wait * 1000) + 1);
        if (n < 0 && zmq_errno() != EINTR) {
            log_error("zmq_poll failed: %s", zmq_strerror(zmq_errno()));
            rc = -TS_EIO;
            break;
        }
        for (int budget = 0; budget < 4096; budget++) {
            if (!wire_readable(r->front)) break;
            handle_client(r);
        }
        for (int i = 0; i < r->n_rep; i++)
            drain_replica(r, i);
        for (rversion_t *v = r->versions; v; v = v->next)
            maybe_fetch(r, v);
        double t = now_s();
        ping_replicas(r);
        if (t >= r->next_scan) {
            scan_checkpoints(r);
            r->next_scan = t + r->o->serve_poll_s;
        }
        unload_retired(r);
        for (int k = 0; k < 64 && batch_due(r, &wait); k++)
            run_batch(r);
        if (r->http && t >= r->next_publish) {
            publish_metrics(r);
            r->next_publish = t + METRICS_EVERY_S;
        }
        if (t >= next_report) {
            log_info("serving version=%llu requests=%llu rps=%.0f errors=%llu batches=%llu mean_batch=%.1f "
                     "queue=%d",
                     (unsigned long long)r->default_version, (unsigned long long)r->requests,
                     (double)(r->requests - last_requests) / 10.0, (unsigned long long)r->errors,
                     (unsigned long long)r->batches, r->batches ? (double)r->rows / (double)r->batches : 0.0,
                     r->q_len);
            last_requests = r->requests;
            next_report = t + 10;
        }
    }
    /* Every request gets exactly one reply, even when the router stops under it. */
    while (r->q_len) {
        request_t *q = &r->queue[r->q_head];
        client_error(r, &q->identity, q->request_id, TESSERA__ERROR_CODE__ERR_UNAVAILABLE,
                     "the router is stopping");
        free_request(q);
        r->q_head = (r->q_head + 1) % r->o->serve_max_queue;
        r->q_len--;
    }
    log_info("router stopping requests=%llu errors=%llu batches=%llu", (unsigned long long)r->requests,
             (unsigned long long)r->errors, (unsigned long long)r->batches);
    metrics_http_stop(r->http);
    if (cfg->shutdown_shards) shutdown_shards(r);
    while (r->versions)
        remove_version(r, r->versions);
    for (int i = 0; i < r->n_rep; i++) {
        if (r->rep[i].sock) zmq_close(r->rep[i].sock);
        free(r->rep[i].loaded);
    }
    if (r->front) zmq_close(r->front);
    free(r->rep);
    free(r->items);
    free(r->pending);
    free(r->queue);
    free(r->rr);
    free(r->xbuf);
    backend_free(r->be);
    return rc;
}
