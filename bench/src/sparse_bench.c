/* tessera-bench-sparse: sparse pull and push throughput of real shards against a raw ZeroMQ floor.
 *
 * For each shard count S, in one process: S shards (ps_server_run on its own thread, with its own ZeroMQ
 * context, as each would have in its own process) on tcp://127.0.0.1 ROUTER sockets, serving a model
 * with one dynamic table (emb -> linear out=1 -> sigmoid_bce), and S echo threads on ROUTER sockets of
 * their own. Batches of Zipf-distributed ids are built with sparse_batch_build, then, interleaved and
 * --reps times each, --rounds rounds are timed of:
 *   tessera pull  ps_client_sparse_pull (SPARSE_PULL -> SPARSE_ROWS)
 *   raw pull      per shard one DEALER frame of the same ids; the echo thread replies with one frame of
 *                 the size of that shard's rows; the client copies it into the batch's rows
 *   tessera push  ps_client_push_pull with the batch's row gradients (BSP, one worker: every push is
 *                 applied before the reply)
 *   raw push      per shard the same ids and gradient frames; the echo replies with a frame of the size
 *                 of that shard's dense parameters (what PARAMS carries back)
 * Each rep measures Tessera and raw back to back (alternating which goes first). Reported: the median
 * rows/s and payload GB/s of the reps (pull rows * dim * 4 bytes, push rows * (dim * 4 + 8)), the ratio of
 * the medians, and the median of each rep's paired ratio with its range. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "config.h"
#include "data_ctr.h"
#include "log.h"
#include "model.h"
#include "optim.h"
#include "ps_client.h"
#include "server.h"
#include "shard_map.h"
#include "sparse_batch.h"
#include "util.h"
#include "wire.h"

#define CMD         "tessera-bench-sparse"
#define MAX_SHARDS  16
#define MAX_COUNTS  8
#define MAX_MESSAGE ((size_t)256 << 20)

static const char *const usage =
    "usage: tessera-bench-sparse [options]\n"
    "\n"
    "Sparse pull and push throughput of in-process shards over tcp://127.0.0.1, against a raw\n"
    "ZeroMQ DEALER/ROUTER echo with the same message sizes, per shard count.\n"
    "\n"
    "  --shards LIST    shard counts, comma-separated (default 1,2,4)\n"
    "  --ids N          id universe: ids 0..N-1 (default 1000000)\n"
    "  --zipf S         id distribution Zipf(S) over the universe (default 1.05)\n"
    "  --batch B        examples per batch, one id each (default 4096)\n"
    "  --batches K      distinct batches, cycled through (default 16)\n"
    "  --dim D          floats per row (default 64)\n"
    "  --optimizer O    the table's optimizer: adagrad or sgd (default adagrad)\n"
    "  --rounds N       timed rounds per measurement (default 800)\n"
    "  --warmup N       untimed rounds before each measurement (default 20)\n"
    "  --reps R         measurements of each configuration, interleaved (default 15)\n"
    "  --seed N         seed of the ids and of the tables (default 1)\n"
    "  --commit STR     recorded in the JSON\n"
    "  --json FILE      also write the results as JSON to FILE\n";

typedef struct {
    int n_counts, counts[MAX_COUNTS];
    long ids, batch, batches, dim, rounds, warmup, reps, seed;
    double zipf;
    const char *optimizer, *json, *commit;
} opts_t;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, CMD ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* For zmq_* calls returning -1 on failure: ZMQ_CHECK logs the call and site; a benchmark then stops. */
#define ZCHECK(call)                                                                                         \
    do {                                                                                                     \
        if (ZMQ_CHECK(call) < 0) exit(1);                                                                    \
    } while (0)

/* ---- ids ------------------------------------------------------------------------------------------ */

/* A dataset of n_ex examples with one slot holding one id each, ids Zipf(s) over [0, universe) (id =
 * rank - 1, so id 0 is the most frequent; placement hashes the id, so that does not skew the shards). */
static void make_dataset(ctr_dataset_t *d, const opts_t *o) {
    size_t n = (size_t)o->ids, n_ex = (size_t)(o->batch * o->batches);
    double *cdf = XMALLOC(n * sizeof *cdf), sum = 0;
    for (size_t k = 0; k < n; k++)
        cdf[k] = sum += pow((double)(k + 1), -o->zipf);
    memset(d, 0, sizeof *d);
    d->n = n_ex;
    d->n_slots = 1;
    d->label = XCALLOC(n_ex, sizeof *d->label);
    d->bag_off = XMALLOC((n_ex + 1) * sizeof *d->bag_off);
    d->ids = XMALLOC(n_ex * sizeof *d->ids);
    snprintf(d->path, sizeof d->path, "zipf(%g) over %ld ids", o->zipf, o->ids);
    rng_t r;
    rng_seed(&r, (uint64_t)o->seed);
    for (size_t i = 0; i < n_ex; i++) {
        double u = (double)(rng_next(&r) >> 11) * 0x1p-53 * sum;
        size_t lo = 0, hi = n - 1; /* the first k with cdf[k] > u */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cdf[mid] > u)
                hi = mid;
            else
                lo = mid + 1;
        }
        d->bag_off[i] = i;
        d->ids[i] = lo;
    }
    d->bag_off[n_ex] = n_ex;
    free(cdf);
}

/* The job: one embedding_bag layer over the only slot, a linear layer to one logit, sigmoid_bce. */
static void make_spec(model_spec_t *spec, job_config_t *cfg, const opts_t *o) {
    config_defaults(cfg);
    snprintf(cfg->data_format, sizeof cfg->data_format, "criteo");
    cfg->dense_features = 0;
    cfg->sparse_features = 1;
    cfg->seed = (uint64_t)o->seed;
    snprintf(cfg->opt_type, sizeof cfg->opt_type, "%s", o->optimizer);
    cfg->lr = 0.01;
    cfg->n_layers = 3;
    cfg->layers[0] = (layer_cfg_t){
        .name = "emb", .type = "embedding_bag", .slot_begin = 0, .slot_end = 1, .dim = (int)o->dim};
    snprintf(cfg->layers[0].mode, sizeof cfg->layers[0].mode, "sum");
    cfg->layers[1] = (layer_cfg_t){.name = "top", .type = "linear", .out = 1};
    cfg->layers[2] = (layer_cfg_t){.name = "loss", .type = "sigmoid_bce"};
    char err[512];
    if (model_spec_init(spec, cfg, err, sizeof err)) die("model: %s", err);
    if (spec->n_tables != 1) die("model: expected one table, got %d", spec->n_tables);
}

/* ---- shards and echo threads -------------------------------------------------------------------- */

typedef struct {
    void *ctx, *router;
    char endpoint[CLUSTER_ENDPOINT_LEN];
    ps_server_t *srv;
    pthread_t th;
    int rc;
} shard_t;

static void *shard_main(void *p) {
    shard_t *s = p;
    s->rc = ps_server_run(s->srv);
    return NULL;
}

/* A ROUTER on an ephemeral loopback port of a fresh context (one I/O thread, as a shard process has). */
static void *bind_loopback(void **ctx, char endpoint[CLUSTER_ENDPOINT_LEN], int prepare) {
    *ctx = zmq_ctx_new();
    if (!*ctx) die("zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    void *sock = zmq_socket(*ctx, ZMQ_ROUTER);
    if (!sock) die("zmq_socket: %s", zmq_strerror(zmq_errno()));
    int linger = 0;
    ZCHECK(zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger));
    if (prepare && ps_server_prepare_socket(sock, MAX_MESSAGE)) exit(1);
    ZCHECK(zmq_bind(sock, "tcp://127.0.0.1:*"));
    size_t len = CLUSTER_ENDPOINT_LEN;
    ZCHECK(zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, endpoint, &len));
    return sock;
}

static void shard_start(shard_t *s, const model_spec_t *spec, const shard_map_t *map, const job_config_t *cfg,
                        int shard) {
    memset(s, 0, sizeof *s);
    s->router = bind_loopback(&s->ctx, s->endpoint, 1);
    ps_config_t pc = {.spec = spec,
                      .map = map,
                      .shard = shard,
                      .n_workers = 1,
                      .staleness = 0,
                      .seed = cfg->seed,
                      .max_message_bytes = MAX_MESSAGE};
    optim_from_config(&pc.opt, cfg);
    char err[512];
    s->srv = ps_server_create(&pc, s->router, NULL, err, sizeof err);
    if (!s->srv) die("shard %d: %s", shard, err);
    int rc = pthread_create(&s->th, NULL, shard_main, s);
    if (rc) die("pthread_create: %s", strerror(rc));
}

/* Stops a shard the way the scheduler does (SHUTDOWN from role "scheduler") and frees it. */
static void shard_stop(shard_t *s, void *client_ctx) {
    void *d = zmq_socket(client_ctx, ZMQ_DEALER);
    if (!d) die("zmq_socket: %s", zmq_strerror(zmq_errno()));
    int linger = 0;
    ZCHECK(zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger));
    ZCHECK(zmq_connect(d, s->endpoint));
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_SHUTDOWN);
    h.role = "scheduler";
    h.request_id = 1;
    if (wire_send(d, NULL, &h, NULL, 0)) die("cannot send SHUTDOWN to %s", s->endpoint);
    zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 10000) != 1) die("shard at %s did not acknowledge SHUTDOWN", s->endpoint);
    wire_msg_t m;
    Tessera__ErrorCode code;
    char err[256];
    if (wire_recv(d, 0, 1 << 20, &m, &code, err, sizeof err) || m.hdr->kind != TESSERA__KIND__KIND_OK)
        die("shard at %s: unexpected answer to SHUTDOWN", s->endpoint);
    wire_msg_free(&m);
    ZCHECK(zmq_close(d));
    int rc = pthread_join(s->th, NULL);
    if (rc) die("pthread_join: %s", strerror(rc));
    if (s->rc) die("shard at %s: its loop returned %d", s->endpoint, s->rc);
    ps_server_free(s->srv);
    ZCHECK(zmq_close(s->router));
    ZCHECK(zmq_ctx_term(s->ctx));
}

/* The raw floor's server: answers a one-frame request of k ids with one frame of k rows, and a request of
 * more frames (a push: ids, gradients) with one frame of push_reply bytes. Replies are sent zero-copy
 * from one preallocated buffer (its contents do not matter), so the thread does nothing ZeroMQ does not. */
typedef struct {
    void *ctx, *router;
    char endpoint[CLUSTER_ENDPOINT_LEN];
    char *buf;
    size_t buf_bytes, row_bytes, push_reply;
    pthread_t th;
    int failed;
} echo_t;

static void *echo_main(void *p) {
    echo_t *e = p;
    for (;;) {
        zmq_msg_t id, f;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, e->router, 0) < 0) { /* ETERM: the context is shutting down */
            zmq_msg_close(&id);
            break;
        }
        size_t frames = 0, first = 0;
        int more = 1;
        while (more) {
            zmq_msg_init(&f);
            if (zmq_msg_recv(&f, e->router, 0) < 0) {
                zmq_msg_close(&f);
                zmq_msg_close(&id);
                goto out;
            }
            if (frames++ == 0) first = zmq_msg_size(&f);
            more = zmq_msg_more(&f);
            zmq_msg_close(&f);
        }
        size_t reply = frames == 1 ? first / sizeof(uint64_t) * e->row_bytes : e->push_reply;
        if (reply > e->buf_bytes) {
            e->failed = 1;
            reply = e->buf_bytes;
        }
        zmq_msg_t r;
        if (zmq_msg_send(&id, e->router, ZMQ_SNDMORE) < 0 ||
            zmq_msg_init_data(&r, e->buf, reply, NULL, NULL)) {
            zmq_msg_close(&id);
            break;
        }
        if (zmq_msg_send(&r, e->router, 0) < 0) {
            zmq_msg_close(&r);
            break;
        }
    }
out:
    zmq_close(e->router);
    return NULL;
}

static void echo_start(echo_t *e, size_t buf_bytes, size_t row_bytes, size_t push_reply) {
    memset(e, 0, sizeof *e);
    e->router = bind_loopback(&e->ctx, e->endpoint, 0);
    e->buf_bytes = buf_bytes > push_reply ? buf_bytes : push_reply;
    e->buf = XCALLOC(e->buf_bytes, 1);
    e->row_bytes = row_bytes;
    e->push_reply = push_reply;
    int rc = pthread_create(&e->th, NULL, echo_main, e);
    if (rc) die("pthread_create: %s", strerror(rc));
}

static void echo_stop(echo_t *e) {
    ZCHECK(zmq_ctx_shutdown(e->ctx)); /* the thread's blocking receive returns ETERM */
    int rc = pthread_join(e->th, NULL);
    if (rc) die("pthread_join: %s", strerror(rc));
    ZCHECK(zmq_ctx_term(e->ctx));
    if (e->failed) die("echo thread: a reply larger than its buffer was asked for");
    free(e->buf);
}

/* ---- the client side ------------------------------------------------------------------------------ */

typedef struct {
    int S;
    const model_spec_t *spec;
    shard_map_t map;
    shard_t shards[MAX_SHARDS];
    echo_t echoes[MAX_SHARDS];
    void *ctx;          /* the client's */
    ps_client_t ps;     /* Tessera */
    void **raw;         /* [S] DEALERs to the echo threads */
    sparse_batch_t *sb; /* [batches] */
    int n_sb;
    float *dense_grads, *params;
    int64_t clock;
} bench_t;

enum { SYS_TESSERA, SYS_RAW, N_SYS };
enum { OP_PULL, OP_PUSH, N_OP };
static const char *const sys_name[N_SYS] = {"tessera", "raw"};
static const char *const op_name[N_OP] = {"pull", "push"};

/* One raw round: every shard's share of the batch's ids (and gradients, for a push) out on its own
 * DEALER at once, then every reply gathered; a pull's rows are copied into the batch, as Tessera does. */
static void raw_round(bench_t *b, sparse_batch_t *sb, int op) {
    sb_table_t *t = &sb->t[0];
    size_t rowb = (size_t)t->dim * sizeof(float);
    for (int k = 0; k < b->S; k++) {
        size_t off = (size_t)t->shard_off[k], n = (size_t)(t->shard_off[k + 1] - t->shard_off[k]);
        zmq_msg_t f;
        ZCHECK(zmq_msg_init_data(&f, t->ids + off, n * sizeof(uint64_t), NULL, NULL));
        ZCHECK(zmq_msg_send(&f, b->raw[k], op == OP_PUSH ? ZMQ_SNDMORE : 0));
        if (op == OP_PUSH) {
            ZCHECK(zmq_msg_init_data(&f, t->grads + off * (size_t)t->dim, n * rowb, NULL, NULL));
            ZCHECK(zmq_msg_send(&f, b->raw[k], 0));
        }
    }
    zmq_pollitem_t items[MAX_SHARDS];
    int done[MAX_SHARDS] = {0}, left = b->S;
    for (int k = 0; k < b->S; k++)
        items[k] = (zmq_pollitem_t){b->raw[k], 0, ZMQ_POLLIN, 0};
    while (left > 0) {
        if (zmq_poll(items, b->S, 30000) <= 0) die("raw echo: no reply within 30 s");
        for (int k = 0; k < b->S; k++) {
            if (done[k] || !(items[k].revents & ZMQ_POLLIN)) continue;
            zmq_msg_t m;
            zmq_msg_init(&m);
            ZCHECK(zmq_msg_recv(&m, b->raw[k], 0));
            size_t off = (size_t)t->shard_off[k], n = (size_t)(t->shard_off[k + 1] - t->shard_off[k]);
            if (op == OP_PULL) {
                if (zmq_msg_size(&m) != n * rowb)
                    die("raw echo: reply of %zu bytes for %zu rows", zmq_msg_size(&m), n);
                memcpy(t->rows + off * (size_t)t->dim, zmq_msg_data(&m), n * rowb);
            }
            zmq_msg_close(&m);
            done[k] = 1;
            left--;
        }
    }
}

static void tessera_round(bench_t *b, sparse_batch_t *sb, int op) {
    char err[1024];
    int rc = op == OP_PULL
                 ? ps_client_sparse_pull(&b->ps, sb, 0, err, sizeof err)
                 : ps_client_push_pull(&b->ps, b->clock, b->dense_grads, sb, b->params, err, sizeof err);
    if (rc) die("%s: %s", op == OP_PULL ? "sparse pull" : "push", err);
    if (op == OP_PUSH) b->clock++;
}

/* Runs `warmup` untimed then `rounds` timed rounds, cycling through the batches from the first; returns
 * the seconds and adds the rows moved to *rows. */
static double measure(bench_t *b, int sys, int op, long warmup, long rounds, uint64_t *rows) {
    for (long r = 0; r < warmup; r++) {
        sparse_batch_t *sb = &b->sb[r % b->n_sb];
        if (sys == SYS_TESSERA)
            tessera_round(b, sb, op);
        else
            raw_round(b, sb, op);
    }
    double t0 = now_s();
    for (long r = 0; r < rounds; r++) {
        sparse_batch_t *sb = &b->sb[r % b->n_sb];
        if (sys == SYS_TESSERA)
            tessera_round(b, sb, op);
        else
            raw_round(b, sb, op);
        *rows += (uint64_t)sb->t[0].n;
    }
    return now_s() - t0;
}

/* Every row of batch 0 changes when a push of nonzero gradients is applied: checks that pushes reach the
 * tables (BSP with one worker applies each at once) and that pulls see the result. */
static void check_push_applied(bench_t *b) {
    sparse_batch_t *sb = &b->sb[0];
    sb_table_t *t = &sb->t[0];
    size_t nf = (size_t)t->n * (size_t)t->dim;
    float *before = XMALLOC(nf * sizeof *before);
    tessera_round(b, sb, OP_PULL);
    memcpy(before, t->rows, nf * sizeof *before);
    tessera_round(b, sb, OP_PUSH);
    tessera_round(b, sb, OP_PULL);
    size_t same = 0;
    for (int i = 0; i < t->n; i++)
        same += !memcmp(before + (size_t)i * (size_t)t->dim, t->rows + (size_t)i * (size_t)t->dim,
                        (size_t)t->dim * sizeof(float));
    free(before);
    if (same) die("after a push, %zu of %d pulled rows did not change", same, t->n);
}

/* Bytes of the dense parameters shard k sends back in PARAMS (the raw push's reply size). */
static size_t dense_reply_bytes(const bench_t *b, int k) {
    size_t n = 0;
    for (int t = 0; t < b->spec->n_tensors; t++) {
        row_range_t r = shard_map_range(&b->map, t, k);
        n += (size_t)((r.row_end - r.row_begin) * b->spec->tensors[t].cols) * sizeof(float);
    }
    return n;
}

typedef struct {
    int S;
    double unique_mean; /* unique ids per batch */
    int unique_min, unique_max;
    double per_shard_min, per_shard_max; /* mean rows per shard per batch, smallest and largest shard */
    double secs[N_SYS][N_OP][64];
    uint64_t rows[N_SYS][N_OP][64];
} result_t;

static void bench_run(const opts_t *o, const model_spec_t *spec, const job_config_t *cfg,
                      const ctr_dataset_t *d, int S, result_t *res) {
    bench_t b;
    memset(&b, 0, sizeof b);
    b.S = S;
    b.spec = spec;
    uint64_t *trows = XMALLOC((size_t)spec->n_tensors * sizeof *trows);
    for (int t = 0; t < spec->n_tensors; t++)
        trows[t] = spec->tensors[t].rows;
    if (shard_map_init(&b.map, trows, spec->n_tensors, S)) die("shard map for %d shards", S);
    free(trows);
    b.ctx = zmq_ctx_new();
    if (!b.ctx) die("zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    for (int k = 0; k < S; k++)
        shard_start(&b.shards[k], spec, &b.map, cfg, k);
    for (int k = 0; k < S; k++)
        echo_start(&b.echoes[k], (size_t)o->batch * (size_t)o->dim * sizeof(float),
                   (size_t)o->dim * sizeof(float), dense_reply_bytes(&b, k));

    char endpoints[MAX_SHARDS][CLUSTER_ENDPOINT_LEN], err[512];
    for (int k = 0; k < S; k++)
        snprintf(endpoints[k], sizeof endpoints[k], "%s", b.shards[k].endpoint);
    if (ps_client_init(&b.ps, b.ctx, endpoints, S, spec, &b.map, 0, 30.0, MAX_MESSAGE, err, sizeof err))
        die("%s", err);
    b.raw = XCALLOC((size_t)S, sizeof *b.raw);
    for (int k = 0; k < S; k++) {
        b.raw[k] = zmq_socket(b.ctx, ZMQ_DEALER);
        if (!b.raw[k]) die("zmq_socket: %s", zmq_strerror(zmq_errno()));
        int linger = 0;
        ZCHECK(zmq_setsockopt(b.raw[k], ZMQ_LINGER, &linger, sizeof linger));
        ZCHECK(zmq_connect(b.raw[k], b.echoes[k].endpoint));
    }

    /* The batches, grouped by owning shard for this S; row gradients a small constant. */
    b.n_sb = (int)o->batches;
    b.sb = XCALLOC((size_t)b.n_sb, sizeof *b.sb);
    uint32_t *ex = XMALLOC((size_t)o->batch * sizeof *ex);
    res->S = S;
    res->unique_min = (int)o->batch;
    res->unique_max = 0;
    double sum = 0, *per_shard = XCALLOC((size_t)S, sizeof *per_shard);
    for (int i = 0; i < b.n_sb; i++) {
        for (long e = 0; e < o->batch; e++)
            ex[e] = (uint32_t)(i * o->batch + e);
        sparse_batch_init(&b.sb[i], spec, S, (int)o->batch);
        sparse_batch_build(&b.sb[i], d, ex, (int)o->batch);
        sb_table_t *t = &b.sb[i].t[0];
        for (size_t j = 0; j < (size_t)t->n * (size_t)t->dim; j++)
            t->grads[j] = 1e-3f;
        sum += t->n;
        if (t->n < res->unique_min) res->unique_min = t->n;
        if (t->n > res->unique_max) res->unique_max = t->n;
        for (int k = 0; k < S; k++)
            per_shard[k] += t->shard_off[k + 1] - t->shard_off[k];
    }
    res->unique_mean = sum / b.n_sb;
    res->per_shard_min = res->per_shard_max = per_shard[0] / b.n_sb;
    for (int k = 1; k < S; k++) {
        res->per_shard_min = fmin(res->per_shard_min, per_shard[k] / b.n_sb);
        res->per_shard_max = fmax(res->per_shard_max, per_shard[k] / b.n_sb);
    }
    free(per_shard);
    free(ex);
    b.dense_grads = XCALLOC(spec->n_floats, sizeof(float));
    b.params = XCALLOC(spec->n_floats, sizeof(float));

    /* Warm-up: every batch pulled once creates all its rows, so no timed round creates any. */
    for (int i = 0; i < b.n_sb; i++)
        tessera_round(&b, &b.sb[i], OP_PULL);
    check_push_applied(&b);

    /* Each rep measures both systems back to back, in alternating order, so that a change in what the
     * machine gives this process (a 2-core VM's neighbours, frequency) falls on both alike. */
    for (long rep = 0; rep < o->reps; rep++)
        for (int op = 0; op < N_OP; op++)
            for (int i = 0; i < N_SYS; i++) {
                int sys = rep % 2 ? N_SYS - 1 - i : i;
                res->rows[sys][op][rep] = 0;
                res->secs[sys][op][rep] =
                    measure(&b, sys, op, o->warmup, o->rounds, &res->rows[sys][op][rep]);
            }

    for (int i = 0; i < b.n_sb; i++)
        sparse_batch_free(&b.sb[i]);
    free(b.sb);
    free(b.dense_grads);
    free(b.params);
    for (int k = 0; k < S; k++)
        ZCHECK(zmq_close(b.raw[k]));
    free(b.raw);
    ps_client_free(&b.ps);
    for (int k = 0; k < S; k++)
        shard_stop(&b.shards[k], b.ctx);
    for (int k = 0; k < S; k++)
        echo_stop(&b.echoes[k]);
    ZCHECK(zmq_ctx_term(b.ctx));
    shard_map_free(&b.map);
}

/* ---- report --------------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, long n) {
    if (n < 1) return 0;
    double s[64];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Payload bytes of one row: its floats, and for a push its id too. */
static double row_payload(const opts_t *o, int op) {
    return (double)o->dim * sizeof(float) + (op == OP_PUSH ? sizeof(uint64_t) : 0);
}

/* rows/s of each rep, and the median. */
static double rows_per_s(const opts_t *o, const result_t *r, int sys, int op, double *each) {
    for (long i = 0; i < o->reps; i++)
        each[i] = r->secs[sys][op][i] > 0 ? (double)r->rows[sys][op][i] / r->secs[sys][op][i] : 0;
    return median(each, o->reps);
}

/* The ratio tessera / raw of each rep (the two measured back to back): its median, smallest, largest. */
static double paired_ratio(const opts_t *o, const result_t *r, int op, double *lo, double *hi) {
    double t[64], w[64], q[64];
    rows_per_s(o, r, SYS_TESSERA, op, t);
    rows_per_s(o, r, SYS_RAW, op, w);
    *lo = INFINITY;
    *hi = 0;
    for (long i = 0; i < o->reps; i++) {
        q[i] = w[i] > 0 ? t[i] / w[i] : 0;
        *lo = fmin(*lo, q[i]);
        *hi = fmax(*hi, q[i]);
    }
    return median(q, o->reps);
}

static void print_table(const opts_t *o, const result_t *res, int n) {
    printf("\n%-6s %-4s %10s %14s %12s %10s %12s %10s %7s %13s\n", "shards", "op", "rows/batch",
           "tessera rows/s", "tessera GB/s", "tessera ms", "raw rows/s", "raw GB/s", "ratio", "paired ratio");
    for (int i = 0; i < n; i++)
        for (int op = 0; op < N_OP; op++) {
            double each[64], lo, hi;
            double t = rows_per_s(o, &res[i], SYS_TESSERA, op, each),
                   r = rows_per_s(o, &res[i], SYS_RAW, op, each);
            double bpr = row_payload(o, op), q = paired_ratio(o, &res[i], op, &lo, &hi);
            printf("%-6d %-4s %10.0f %14.0f %12.3f %10.3f %12.0f %10.3f %7.2f %4.2f %.2f-%.2f\n", res[i].S,
                   op_name[op], res[i].unique_mean, t, t * bpr / 1e9,
                   t > 0 ? res[i].unique_mean / t * 1e3 : 0, r, r * bpr / 1e9, r > 0 ? t / r : 0, q, lo, hi);
        }
    printf(
        "\nGB = 1e9 bytes of row payload: pull rows x %ld x 4, push rows x (%ld x 4 + 8). Medians of %ld "
        "reps of\n"
        "%ld rounds; tessera ms = time per batch; ratio = tessera / raw of the medians; paired ratio = the\n"
        "median (smallest-largest) of each rep's tessera / raw, the two measured back to back.\n",
        o->dim, o->dim, o->reps, o->rounds);
}

static void *json_alloc(size_t n) {
    return XMALLOC(n);
}

static void cpu_model(char *out, size_t len) {
    snprintf(out, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            const char *v = strchr(line, ':');
            if (v) {
                snprintf(out, len, "%s", v + 2);
                out[strcspn(out, "\n")] = 0;
            }
            break;
        }
    fclose(f);
}

static void write_json(const opts_t *o, const result_t *res, int n) {
    cJSON_InitHooks(&(cJSON_Hooks){.malloc_fn = json_alloc, .free_fn = free}); /* no silent OOM */
    cJSON *j = cJSON_CreateObject();
    char buf[256];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(j, "benchmark", "sparse");
    cJSON_AddStringToObject(j, "date_utc", buf);
    cJSON_AddStringToObject(j, "commit", o->commit ? o->commit : "unknown");
    cpu_model(buf, sizeof buf);
    cJSON_AddStringToObject(j, "cpu", buf);
    cJSON_AddNumberToObject(j, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddStringToObject(j, "transport",
                            "tcp://127.0.0.1, every shard and echo thread in this process with "
                            "its own ZeroMQ context (1 I/O thread)");
    cJSON *c = cJSON_AddObjectToObject(j, "config");
    cJSON_AddNumberToObject(c, "ids", (double)o->ids);
    cJSON_AddNumberToObject(c, "zipf", o->zipf);
    cJSON_AddNumberToObject(c, "batch", (double)o->batch);
    cJSON_AddNumberToObject(c, "batches", (double)o->batches);
    cJSON_AddNumberToObject(c, "dim", (double)o->dim);
    cJSON_AddStringToObject(c, "optimizer", o->optimizer);
    cJSON_AddNumberToObject(c, "rounds", (double)o->rounds);
    cJSON_AddNumberToObject(c, "warmup", (double)o->warmup);
    cJSON_AddNumberToObject(c, "reps", (double)o->reps);
    cJSON_AddNumberToObject(c, "seed", (double)o->seed);
    cJSON_AddStringToObject(j, "metric",
                            "row payload GB/s (1e9 bytes): pull rows*dim*4, push rows*(dim*4+8); "
                            "median of reps");
    cJSON *arr = cJSON_AddArrayToObject(j, "results");
    for (int i = 0; i < n; i++) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, s);
        cJSON_AddNumberToObject(s, "shards", res[i].S);
        cJSON_AddNumberToObject(s, "unique_rows_per_batch_mean", res[i].unique_mean);
        cJSON_AddNumberToObject(s, "unique_rows_per_batch_min", res[i].unique_min);
        cJSON_AddNumberToObject(s, "unique_rows_per_batch_max", res[i].unique_max);
        cJSON_AddNumberToObject(s, "rows_per_shard_min", res[i].per_shard_min);
        cJSON_AddNumberToObject(s, "rows_per_shard_max", res[i].per_shard_max);
        for (int op = 0; op < N_OP; op++) {
            cJSON *po = cJSON_AddObjectToObject(s, op_name[op]);
            double med[N_SYS];
            for (int sys = 0; sys < N_SYS; sys++) {
                double each[64];
                med[sys] = rows_per_s(o, &res[i], sys, op, each);
                cJSON *ps = cJSON_AddObjectToObject(po, sys_name[sys]);
                cJSON_AddNumberToObject(ps, "rows_per_s", med[sys]);
                cJSON_AddNumberToObject(ps, "gb_per_s", med[sys] * row_payload(o, op) / 1e9);
                cJSON_AddNumberToObject(ps, "ms_per_batch",
                                        med[sys] > 0 ? res[i].unique_mean / med[sys] * 1e3 : 0);
                cJSON *runs = cJSON_AddArrayToObject(ps, "runs_rows_per_s");
                for (long r = 0; r < o->reps; r++)
                    cJSON_AddItemToArray(runs, cJSON_CreateNumber(each[r]));
            }
            cJSON_AddNumberToObject(po, "ratio_tessera_over_raw",
                                    med[SYS_RAW] > 0 ? med[SYS_TESSERA] / med[SYS_RAW] : 0);
            double lo, hi, q = paired_ratio(o, &res[i], op, &lo, &hi);
            cJSON *pr = cJSON_AddObjectToObject(po, "paired_ratio");
            cJSON_AddNumberToObject(pr, "median", q);
            cJSON_AddNumberToObject(pr, "min", lo);
            cJSON_AddNumberToObject(pr, "max", hi);
        }
    }
    char *text = cJSON_Print(j);
    FILE *f = fopen(o->json, "w");
    if (!f) die("cannot write %s: %s", o->json, strerror(errno));
    int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
    bad |= fclose(f) != 0;
    if (bad) die("cannot write %s: %s", o->json, strerror(errno));
    cJSON_free(text);
    cJSON_Delete(j);
}

/* ---- main ----------------------------------------------------------------------------------------- */

static int parse_counts(const char *s, opts_t *o) {
    o->n_counts = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > MAX_SHARDS || o->n_counts == MAX_COUNTS) break;
        o->counts[o->n_counts++] = (int)v;
        if (*end == 0) return 0;
        if (*end != ',') break;
        p = end + 1;
    }
    fprintf(stderr, CMD ": --shards takes up to %d comma-separated counts in 1..%d, got '%s'\n", MAX_COUNTS,
            MAX_SHARDS, s);
    return -1;
}

int main(int argc, char **argv) {
    opts_t o = {.ids = 1000000,
                .batch = 4096,
                .batches = 16,
                .dim = 64,
                .rounds = 800,
                .warmup = 20,
                .reps = 15,
                .seed = 1,
                .zipf = 1.05,
                .optimizer = "adagrad"};
    parse_counts("1,2,4", &o);
    static const struct option longopts[] = {{"shards", required_argument, 0, 's'},
                                             {"ids", required_argument, 0, 'i'},
                                             {"zipf", required_argument, 0, 'z'},
                                             {"batch", required_argument, 0, 'b'},
                                             {"batches", required_argument, 0, 'k'},
                                             {"dim", required_argument, 0, 'd'},
                                             {"optimizer", required_argument, 0, 'o'},
                                             {"rounds", required_argument, 0, 'n'},
                                             {"warmup", required_argument, 0, 'w'},
                                             {"reps", required_argument, 0, 'r'},
                                             {"seed", required_argument, 0, 'S'},
                                             {"commit", required_argument, 0, 'c'},
                                             {"json", required_argument, 0, 'j'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case 's': bad = parse_counts(optarg, &o); break;
        case 'i': bad = cli_parse_long(CMD, "--ids", optarg, 1, 100000000, &o.ids); break;
        case 'z': bad = cli_parse_double(CMD, "--zipf", optarg, 0, 10, &o.zipf); break;
        case 'b': bad = cli_parse_long(CMD, "--batch", optarg, 1, 1 << 20, &o.batch); break;
        case 'k': bad = cli_parse_long(CMD, "--batches", optarg, 1, 1024, &o.batches); break;
        case 'd': bad = cli_parse_long(CMD, "--dim", optarg, 2, 4096, &o.dim); break;
        case 'n': bad = cli_parse_long(CMD, "--rounds", optarg, 1, 10000000, &o.rounds); break;
        case 'w': bad = cli_parse_long(CMD, "--warmup", optarg, 0, 10000000, &o.warmup); break;
        case 'r': bad = cli_parse_long(CMD, "--reps", optarg, 1, 64, &o.reps); break;
        case 'S': bad = cli_parse_long(CMD, "--seed", optarg, 0, 1L << 62, &o.seed); break;
        case 'o':
            if (strcmp(optarg, "adagrad") && strcmp(optarg, "sgd")) {
                fprintf(stderr, CMD ": --optimizer takes adagrad or sgd, got '%s'\n", optarg);
                bad = 1;
            }
            o.optimizer = optarg;
            break;
        case 'c': o.commit = optarg; break;
        case 'j': o.json = optarg; break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, CMD ": unexpected argument '%s'\n%s", argv[optind], usage);
        return 2;
    }
    if ((double)o.batch * (double)o.batches > 4e9) die("--batch x --batches must stay below 4e9 examples");
    log_set_level(
        LOG_WARN); /* the shards' start and stop lines are noise here; TESSERA_LOG_LEVEL overrides */
    log_init_from_env();
    log_set_identity("bench", 0);

    static job_config_t cfg; /* large: the job text buffer */
    model_spec_t spec;
    make_spec(&spec, &cfg, &o);
    ctr_dataset_t d;
    make_dataset(&d, &o);
    printf(CMD ": ids Zipf(%g) over %ld, batch %ld (x %ld distinct), dim %ld, %s, %ld reps x %ld rounds "
               "(+%ld warm-up), shards",
           o.zipf, o.ids, o.batch, o.batches, o.dim, o.optimizer, o.reps, o.rounds, o.warmup);
    for (int i = 0; i < o.n_counts; i++)
        printf("%s%d", i ? "," : " ", o.counts[i]);
    printf(", %ld cores\n", sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);

    result_t *res = XCALLOC((size_t)o.n_counts, sizeof *res);
    for (int i = 0; i < o.n_counts; i++) {
        double t0 = now_s();
        bench_run(&o, &spec, &cfg, &d, o.counts[i], &res[i]);
        printf("  %d shard(s): %.0f unique rows per batch (%d-%d), %.0f-%.0f per shard, %.1f s\n",
               o.counts[i], res[i].unique_mean, res[i].unique_min, res[i].unique_max, res[i].per_shard_min,
               res[i].per_shard_max, now_s() - t0);
        fflush(stdout);
    }
    print_table(&o, res, o.n_counts);
    if (o.json) {
        write_json(&o, res, o.n_counts);
        printf("wrote %s\n", o.json);
    }
    free(res);
    ctr_dataset_free(&d);
    model_spec_free(&spec);
    return 0;
}
