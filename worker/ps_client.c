#include "ps_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "backend.h"
#include "check.h"
#include "log.h"
#include "util.h"
#include "wire.h"
#include "xregion.h"

int ps_client_init(ps_client_t *c, void *zctx, char (*endpoints)[CLUSTER_ENDPOINT_LEN], int n_shards,
                   const model_spec_t *spec, const shard_map_t *map, int worker, double timeout_s,
                   size_t max_message_bytes, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->n_shards = n_shards;
    c->spec = spec;
    c->map = map;
    c->worker = worker;
    c->timeout_s = timeout_s;
    c->max_message_bytes = max_message_bytes;
    c->socks = XCALLOC((size_t)n_shards, sizeof *c->socks);
    c->request_of = XCALLOC((size_t)n_shards, sizeof *c->request_of);
    c->parts_out = XCALLOC((size_t)n_shards, sizeof *c->parts_out);
    c->parts_sent =
        XCALLOC((size_t)n_shards * (size_t)(spec->n_tensors ? spec->n_tensors : 1), sizeof *c->parts_sent);
    c->final_hi = spec->n_tensors;
    c->parts_from = spec->n_tensors;
    for (int k = 0; k < n_shards; k++) {
        c->socks[k] = zmq_socket(zctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(c->socks[k], ZMQ_LINGER, &linger, sizeof linger);
        if (!c->socks[k] || zmq_connect(c->socks[k], endpoints[k])) {
            snprintf(err, errlen, "cannot connect to shard %d at %s: %s", k, endpoints[k],
                     zmq_strerror(zmq_errno()));
            ps_client_free(c);
            return -TS_EIO;
        }
    }
    return 0;
}

void ps_client_free(ps_client_t *c) {
    if (!c || !c->socks) return;
    for (int k = 0; k < c->n_shards; k++)
        if (c->socks[k]) zmq_close(c->socks[k]);
    free(c->socks);
    free(c->request_of);
    free(c->parts_out);
    free(c->parts_sent);
    free(c->local);
    free(c->local_dev);
    if (!c->stage_filled) free(c->stage);
    memset(c, 0, sizeof *c);
}

/* Sends one request of `kind` to shard k, with its slices of tensors [t_lo, t_hi) of `grads` when that
 * is not NULL and then the row gradients of `sb` (its ids and gradients owned by shard k, one pair per
 * table). A PUSH_PART's reply is counted in parts_out[k]; any other is the one request_of[k] awaits. */
static int send_request(ps_client_t *c, int k, Tessera__Kind kind, int64_t clock, const float *grads,
                        int t_lo, int t_hi, const sparse_batch_t *sb) {
    const model_spec_t *s = c->spec;
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.request_id = ++c->next_request;
    if (kind == TESSERA__KIND__KIND_PUSH_PART) {
        c->parts_sent[(size_t)k * (size_t)s->n_tensors + (size_t)c->parts_out[k]++] =
            (part_sent_t){h.request_id, t_lo, t_hi};
    } else
        c->request_of[k] = h.request_id;
    h.sender = c->worker;
    h.clock = clock;
    if (kind == TESSERA__KIND__KIND_PUSH_PULL) {
        h.checkpoint_clock = c->ckpt_request;
        h.stop_after_checkpoint = c->ckpt_request_stop;
        h.stop_requested = c->stop_requested;
        h.checkpoint_requested = c->ckpt_asked;
    }
    if (kind == TESSERA__KIND__KIND_SPARSE_PULL) h.read_only = c->read_only;
    if (kind == TESSERA__KIND__KIND_PULL) h.full_precision = c->full_precision;
    int nt = 0, cap = (grads ? s->n_tensors : 0) + (sb ? 2 * sb->n_tables : 0) + 1;
    Tessera__TensorDesc descs[cap], *dptr[cap];
    uint64_t shapes[2 * cap];
    wire_buf_t bufs[cap];
    for (int t = t_lo; grads && t < t_hi; t++) {
        row_range_t r = shard_map_range(c->map, t, k);
        if (r.row_end == r.row_begin || s->tensors[t].remote) continue;
        const tensor_info_t *ti = &s->tensors[t];
        wire_desc_init(&descs[nt], &shapes[2 * nt], (uint32_t)t, NULL, r.row_begin, r.row_end - r.row_begin,
                       ti->cols);
        dptr[nt] = &descs[nt];
        const float *g = grads + ti->offset + r.row_begin * ti->cols;
        c->bytes_sent += descs[nt].nbytes;
        if (c->local && c->local[k] && grads == c->region_grads) { /* the shard reads it where it is */
            descs[nt].in_region = 1;
            bufs[nt] = (wire_buf_t){NULL, 0, NULL, NULL};
            c->bytes_local += descs[nt].nbytes;
        } else if (c->grad_bf16) { /* a tensor's slice goes out once per clock: its stage is free again */
            if (!c->stage) c->stage = XMALLOC((s->n_floats ? s->n_floats : 1) * sizeof *c->stage);
            size_t n = (size_t)(r.row_end - r.row_begin) * ti->cols, at = (size_t)(g - grads);
            if (!c->stage_filled) bf16_from_f32(c->stage + at, g, n);
            descs[nt].dtype = TESSERA__DTYPE__DTYPE_BF16;
            descs[nt].nbytes = n * sizeof *c->stage;
            bufs[nt] = (wire_buf_t){c->stage + at, descs[nt].nbytes, NULL, NULL};
            c->bytes_sent -= n * sizeof(float) - descs[nt].nbytes; /* half the bytes */
        } else
            bufs[nt] = (wire_buf_t){g, descs[nt].nbytes, NULL, NULL};
        nt++;
    }
    for (int t = 0; sb && t < sb->n_tables; t++) {
        const sb_table_t *st = &sb->t[t];
        int b = st->shard_off[k], n = st->shard_off[k + 1] - b;
        if (n == 0) continue;
        wire_desc_ids(&descs[nt], &shapes[2 * nt], (uint32_t)t, (uint64_t)n);
        bufs[nt] = (wire_buf_t){st->ids + b, descs[nt].nbytes, NULL, NULL};
        dptr[nt] = &descs[nt];
        c->bytes_sent += descs[nt++].nbytes;
        if (kind != TESSERA__KIND__KIND_PUSH_PULL) continue;
        wire_desc_init(&descs[nt], &shapes[2 * nt], (uint32_t)t, NULL, 0, (uint64_t)n, (uint64_t)st->dim);
        bufs[nt] = (wire_buf_t){st->grads + (size_t)b * (size_t)st->dim, descs[nt].nbytes, NULL, NULL};
        dptr[nt] = &descs[nt];
        c->bytes_sent += descs[nt++].nbytes;
    }
    h.n_tensors = (size_t)nt;
    h.tensors = dptr;
    return wire_send(c->socks[k], NULL, &h, bufs, (size_t)nt);
}

/* Shard k's slices of tensors [t_lo, t_hi): how many frames a reply of them has. */
static size_t slices_of(const ps_client_t *c, int k, int t_lo, int t_hi) {
    size_t n = 0;
    for (int t = t_lo; t < t_hi; t++) {
        row_range_t r = shard_map_range(c->map, t, k);
        n += r.row_end > r.row_begin && !c->spec->tensors[t].remote;
    }
    return n;
}

/* Copies shard k's slices of tensors [t_lo, t_hi) from a PARAMS reply into `params`, checking each
 * against the shard map. */
static int take_slices(ps_client_t *c, int k, const wire_msg_t *m, float *params, int t_lo, int t_hi,
                       char *err, size_t errlen) {
    const model_spec_t *s = c->spec;
    size_t i = 0;
    for (int t = t_lo; t < t_hi; t++) {
        row_range_t r = shard_map_range(c->map, t, k);
        if (r.row_end == r.row_begin || s->tensors[t].remote) continue;
        const tensor_info_t *ti = &s->tensors[t];
        const Tessera__TensorDesc *d = i < m->hdr->n_tensors ? m->hdr->tensors[i] : NULL;
        if (!d || d->id != (uint32_t)t || d->row_begin != r.row_begin ||
            d->shape[0] != r.row_end - r.row_begin || d->shape[1] != ti->cols) {
            snprintf(err, errlen, "shard %d sent parameters that do not match the shard map (tensor %s)", k,
                     ti->name);
            return -TS_EPROTO;
        }
        size_t at = ti->offset + r.row_begin * ti->cols;
        const float *src = zmq_msg_data(&m->frames[i]);
        if (d->dtype == TESSERA__DTYPE__DTYPE_BF16) { /* only with params16: wire_recv_keep kept it */
            memcpy(c->params16 + at, src, d->nbytes);
            c->taken_bf16 = 1;
            i++;
            continue;
        }
        c->taken_bf16 = 0;
        if (d->in_region) { /* the shard wrote them into the region already */
            if (!c->local || !c->local[k]) {
                snprintf(err, errlen,
                         "shard %d sent %s in_region, but it has not mapped this worker's region", k,
                         ti->name);
                return -TS_EPROTO;
            }
            src = c->region_params + at;
            c->bytes_received += d->nbytes;
            c->bytes_local += d->nbytes;
            if (c->local_dev[k]) { /* ... into the device region, where the model reads them */
                i++;
                continue;
            }
        }
        if (params + at != src) memcpy(params + at, src, d->nbytes);
        i++;
    }
    if (i != m->hdr->n_tensors) {
        snprintf(err, errlen, "shard %d sent %zu tensors, expected %zu", k, m->hdr->n_tensors, i);
        return -TS_EPROTO;
    }
    c->bytes_received += m->frame_bytes; /* as they came: bfloat16 frames count half */
    if (c->params_taken) c->params_taken(c->params_taken_ctx, k, t_lo, t_hi);
    return 0;
}

/* A PARAMS reply to a pull or push: every slice of shard k, or (BSP, after parts whose replies brought
 * the rest) those of tensors [0, final_hi); then what the reply announces. */
static int take_params(ps_client_t *c, int k, const wire_msg_t *m, void *ctx, char *err, size_t errlen) {
    int all = c->spec->n_tensors;
    int hi = m->hdr->n_tensors == slices_of(c, k, 0, all) ? all : c->final_hi;
    int rc = take_slices(c, k, m, ctx, 0, hi, err, errlen);
    if (rc) return rc;
    c->peer_stop |= m->hdr->stop_requested;
    /* A request from before the newest checkpoint this worker knows of was served by it. */
    c->peer_ckpt |= m->hdr->checkpoint_requested && m->hdr->last_checkpoint >= c->ckpt_seen;
    if (m->hdr->checkpoint_clock > 0) {
        c->ckpt_announced = m->hdr->checkpoint_clock;
        c->ckpt_announced_stop |= m->hdr->stop_after_checkpoint;
        if (m->hdr->missed_checkpoint_clock > c->ckpt_missed)
            c->ckpt_missed = m->hdr->missed_checkpoint_clock;
        if (c->ckpt_announced > c->ckpt_seen) c->ckpt_seen = c->ckpt_announced;
    }
    return 0;
}

static int take_rows(ps_client_t *c, int k, const wire_msg_t *m, void *ctx, char *err, size_t errlen) {
    int rc = sparse_batch_take_rows(ctx, k, m, err, errlen);
    for (size_t f = 0; !rc && f < m->nframes; f++)
        c->bytes_received += zmq_msg_size(&m->frames[f]);
    return rc;
}

/* The answer `m` of shard k to one of its outstanding PUSH_PARTs. */
/* The index among shard k's outstanding PUSH_PARTs of request `id`, or -1. */
static int part_of(const ps_client_t *c, int k, uint64_t id) {
    const part_sent_t *ps = c->parts_sent + (size_t)k * (size_t)c->spec->n_tensors;
    for (int j = 0; j < c->parts_out[k]; j++)
        if (ps[j].request_id == id) return j;
    return -1;
}

static int take_part_reply(ps_client_t *c, int k, const wire_msg_t *m, int j, char *err, size_t errlen) {
    part_sent_t *ps = c->parts_sent + (size_t)k * (size_t)c->spec->n_tensors;
    part_sent_t p = ps[j];
    memmove(ps + j, ps + j + 1, (size_t)(c->parts_out[k] - j - 1) * sizeof *ps);
    c->parts_out[k]--;
    if (m->hdr->kind == TESSERA__KIND__KIND_OK) return 0;
    if (m->hdr->kind == TESSERA__KIND__KIND_PARAMS)
        return take_slices(c, k, m, c->part_params, p.t_lo, p.t_hi, err, errlen);
    if (m->hdr->kind == TESSERA__KIND__KIND_ERROR) {
        snprintf(err, errlen, "shard %d refused a part of the push: %s: %s", k,
                 wire_error_name(m->hdr->error_code), m->hdr->error_message);
        return -TS_EREMOTE;
    }
    snprintf(err, errlen, "shard %d answered a part of the push with %s", k, wire_kind_name(m->hdr->kind));
    return -TS_EPROTO;
}

/* What a reply of shard k is taken by: 0, or an error with a message. */
typedef int (*take_fn)(ps_client_t *c, int k, const wire_msg_t *m, void *ctx, char *err, size_t errlen);

/* Waits for the reply of `kind` of every shard k with asked[k] (NULL: all), handing each to take. An
 * ERROR reply fails the call, or with `refusable` leaves that shard out (a warning). */
static int gather_replies(ps_client_t *c, const int *asked, Tessera__Kind want, take_fn take, void *ctx,
                          int refusable, char *err, size_t errlen) {
    int n = c->n_shards, left = 0;
    zmq_pollitem_t items[n];
    int done[n];
    for (int k = 0; k < n; k++) {
        items[k] = (zmq_pollitem_t){c->socks[k], 0, ZMQ_POLLIN, 0};
        done[k] = asked && !asked[k];
        left += !done[k];
    }
    double deadline = now_s() + c->timeout_s;
    while (left > 0) {
        long wait_ms = (long)((deadline - now_s()) * 1000);
        if (wait_ms <= 0) {
            snprintf(err, errlen, "no %s from %d of %d shards within %.0f s", wire_kind_name(want), left, n,
                     c->timeout_s);
            return -TS_ETIMEDOUT;
        }
        if (zmq_poll(items, n, wait_ms) < 0) {
            if (zmq_errno() == EINTR) continue;
            snprintf(err, errlen, "zmq_poll: %s", zmq_strerror(zmq_errno()));
            return -TS_EIO;
        }
        for (int k = 0; k < n; k++) {
            if (done[k] || !(items[k].revents & ZMQ_POLLIN)) continue;
            wire_msg_t m;
            Tessera__ErrorCode code;
            char why[512];
            int rc = wire_recv_keep(c->socks[k], 0, c->max_message_bytes, c->params16 != NULL, &m, &code, why,
                                    sizeof why);
            if (rc) {
                snprintf(err, errlen, "malformed reply from shard %d: %s", k, why);
            } else if (m.hdr->request_id != c->request_of[k] && part_of(c, k, m.hdr->request_id) >= 0) {
                /* A PUSH_PART's answer (before its push's): KIND_OK when the shard holds it for the
                 * push (SSP), PARAMS with its slices' update when every worker's are in (BSP); an
                 * error fails the push. */
                rc = take_part_reply(c, k, &m, part_of(c, k, m.hdr->request_id), err, errlen);
                wire_msg_free(&m);
                if (rc) return rc;
                continue;
            } else if (m.hdr->request_id != c->request_of[k]) {
                wire_msg_free(&m); /* a stale reply to an abandoned request */
                continue;
            } else if (m.hdr->kind == TESSERA__KIND__KIND_ERROR && refusable) {
                log_warn("shard %d refused the request and is left out of it: %s: %s", k,
                         wire_error_name(m.hdr->error_code), m.hdr->error_message);
            } else if (m.hdr->kind == TESSERA__KIND__KIND_ERROR) {
                snprintf(err, errlen, "shard %d: %s: %s", k, wire_error_name(m.hdr->error_code),
                         m.hdr->error_message);
                rc = -TS_EREMOTE;
            } else if (m.hdr->kind != want) {
                snprintf(err, errlen, "shard %d answered %s, expected %s", k, wire_kind_name(m.hdr->kind),
                         wire_kind_name(want));
                rc = -TS_EPROTO;
            } else {
                rc = take(c, k, &m, ctx, err, errlen);
            }
            wire_msg_free(&m);
            if (rc) return rc;
            done[k] = 1;
            left--;
        }
    }
    return 0;
}

static int take_attach(ps_client_t *c, int k, const wire_msg_t *m, void *ctx, char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    c->local_dev[k] = m->hdr->attached_device && c->sent_device_handle; /* only what was offered */
    c->local[k] = m->hdr->attached || c->local_dev[k];
    *(int *)ctx += c->local[k];
    c->n_local_dev += c->local_dev[k];
    if (!c->local[k])
        log_debug("shard %d keeps to the wire: %s", k, m->hdr->error_message ? m->hdr->error_message : "");
    return 0;
}

int ps_client_attach(ps_client_t *c, const char *path, size_t bytes, float *params, float *grads,
                     const unsigned char *device_handle, int *n_attached, char *err, size_t errlen) {
    char key[XREGION_KEY_LEN];
    xregion_host_key(key);
    free(c->local);
    free(c->local_dev);
    c->local = XCALLOC((size_t)c->n_shards, sizeof *c->local);
    c->local_dev = XCALLOC((size_t)c->n_shards, sizeof *c->local_dev);
    c->n_local_dev = 0;
    c->region_params = params;
    c->region_grads = grads;
    *n_attached = 0;
    c->sent_device_handle = device_handle != NULL;
    for (int k = 0; k < c->n_shards; k++) {
        Tessera__Header h;
        wire_header_init(&h, TESSERA__KIND__KIND_ATTACH);
        h.request_id = c->request_of[k] = ++c->next_request;
        h.sender = c->worker;
        h.path = (char *)path;
        h.region_bytes = bytes;
        h.host_key = key;
        if (device_handle) {
            h.device_handle = (ProtobufCBinaryData){BACKEND_IPC_HANDLE, (uint8_t *)device_handle};
        }
        if (wire_send(c->socks[k], NULL, &h, NULL, 0)) {
            snprintf(err, errlen, "cannot send to shard %d", k);
            return -TS_EIO;
        }
    }
    /* a shard that cannot attach (an older one, or one holding a push) leaves that shard to the wire */
    return gather_replies(c, NULL, TESSERA__KIND__KIND_OK, take_attach, n_attached, 1, err, errlen);
}

int ps_client_push_part(ps_client_t *c, int64_t clock, const float *grads, float *params, int t_begin,
                        char *err, size_t errlen) {
    if (t_begin >= c->parts_from) return 0;
    c->part_params = params;
    for (int k = 0; k < c->n_shards; k++) {
        int any = 0;
        for (int t = t_begin; t < c->parts_from && !any; t++) {
            row_range_t r = shard_map_range(c->map, t, k);
            any = r.row_end > r.row_begin && !c->spec->tensors[t].remote;
        }
        if (any &&
            send_request(c, k, TESSERA__KIND__KIND_PUSH_PART, clock, grads, t_begin, c->parts_from, NULL)) {
            snprintf(err, errlen, "cannot send to shard %d", k);
            return -TS_EIO;
        }
    }
    c->parts_from = t_begin;
    return 0;
}

int ps_client_push_pull(ps_client_t *c, int64_t clock, const float *grads, const sparse_batch_t *sb,
                        float *params, char *err, size_t errlen) {
    for (int k = 0; k < c->n_shards; k++)
        if ((!c->only || c->only[k]) && send_request(c, k, TESSERA__KIND__KIND_PUSH_PULL, clock, grads, 0,
                                                     c->parts_from, sb && sb->n_tables ? sb : NULL)) {
            snprintf(err, errlen, "cannot send to shard %d", k);
            return -TS_EIO;
        }
    c->final_hi = c->parts_from;
    c->parts_from = c->spec->n_tensors;
    int rc = gather_replies(c, c->only, TESSERA__KIND__KIND_PARAMS, take_params, params, 0, err, errlen);
    for (int k = 0; !rc && k < c->n_shards; k++)
        if (c->parts_out[k]) {
            snprintf(err, errlen, "shard %d answered the push before %d of its parts", k, c->parts_out[k]);
            rc = -TS_EPROTO;
        }
    return rc;
}

int ps_client_sparse_pull(ps_client_t *c, sparse_batch_t *sb, int read_only, char *err, size_t errlen) {
    if (!sb->n_tables) return 0;
    for (int k = 0; k < c->n_shards; k++) {
        c->read_only = read_only;
        if (send_request(c, k, TESSERA__KIND__KIND_SPARSE_PULL, 0, NULL, 0, 0, sb)) {
            snprintf(err, errlen, "cannot send to shard %d", k);
            return -TS_EIO;
        }
    }
    return gather_replies(c, NULL, TESSERA__KIND__KIND_SPARSE_ROWS, take_rows, sb, 0, err, errlen);
}

int ps_client_pull(ps_client_t *c, int64_t clock, float *params, char *err, size_t errlen) {
    for (int k = 0; k < c->n_shards; k++)
        if ((!c->only || c->only[k]) &&
            send_request(c, k, TESSERA__KIND__KIND_PULL, clock, NULL, 0, 0, NULL)) {
            snprintf(err, errlen, "cannot send to shard %d", k);
            return -TS_EIO;
        }
    return gather_replies(c, c->only, TESSERA__KIND__KIND_PARAMS, take_params, params, 0, err, errlen);
}

static int take_fence(ps_client_t *c, int k, const wire_msg_t *m, void *ctx, char *err, size_t errlen) {
    (void)c;
    (void)k;
    (void)err;
    (void)errlen;
    int64_t *cut = ctx;
    if (m->hdr->clock > *cut) *cut = m->hdr->clock;
    return 0;
}

int ps_client_cut_query(ps_client_t *c, int64_t grace, int64_t *cut, char *err, size_t errlen) {
    *cut = 0;
    for (int k = 0; k < c->n_shards; k++) /* every shard: a node_reduce worker's own shards are not all */
        if (send_request(c, k, TESSERA__KIND__KIND_CUT_QUERY, grace, NULL, 0, 0, NULL)) {
            snprintf(err, errlen, "cannot send to shard %d", k);
            return -TS_EIO;
        }
    return gather_replies(c, NULL, TESSERA__KIND__KIND_OK, take_fence, cut, 0, err, errlen);
}

/* ---- model-parallel linear layers: the products that need the weight, computed by its shards ---- */

typedef struct {
    int t, batch, bwd;
    float *y;      /* fwd: [batch, out], filled column block by column block */
    float **parts; /* bwd: per shard, its dx_k [batch, in] (NULL: no dx asked) */
} layer_call_t;

static int take_activations(ps_client_t *c, int k, const wire_msg_t *m, void *ctx, char *err, size_t errlen) {
    layer_call_t *lc = ctx;
    const tensor_info_t *ti = &c->spec->tensors[lc->t];
    row_range_t r = shard_map_range(c->map, lc->t, k);
    uint64_t cols = lc->bwd ? ti->cols : r.row_end - r.row_begin;
    size_t want = lc->bwd && !lc->parts ? 0 : 1;
    const Tessera__TensorDesc *d = m->hdr->n_tensors ? m->hdr->tensors[0] : NULL;
    if (m->hdr->n_tensors != want || (d && (d->id != (uint32_t)lc->t || d->row_begin != r.row_begin ||
                                            d->shape[0] != (uint64_t)lc->batch || d->shape[1] != cols))) {
        snprintf(err, errlen, "shard %d answered a %s of %s that does not match the request", k,
                 lc->bwd ? "LAYER_BWD" : "LAYER_FWD", ti->name);
        return -TS_EPROTO;
    }
    if (!d) return 0;
    const float *src = zmq_msg_data((zmq_msg_t *)&m->frames[0]);
    c->bytes_received += d->nbytes;
    if (lc->bwd) {
        memcpy(lc->parts[k], src, d->nbytes);
        return 0;
    }
    for (int b = 0; b < lc->batch; b++) /* shard k's outputs are columns [row_begin, row_end) of y */
        memcpy(lc->y + (size_t)b * ti->rows + r.row_begin, src + (size_t)b * cols, cols * sizeof(float));
    return 0;
}

/* Sends a LAYER_FWD / LAYER_BWD of tensor t to shard k with the given frames (zero-copy: they must live
 * until the replies are in). */
static int send_layer(ps_client_t *c, int k, Tessera__Kind kind, int64_t clock, int t, int no_dx,
                      const float *const *data, const uint64_t (*shape)[2], int n) {
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.request_id = c->request_of[k] = ++c->next_request;
    h.sender = c->worker;
    h.clock = clock;
    h.tensor = (uint32_t)t;
    h.no_input_grad = no_dx;
    Tessera__TensorDesc d[2], *dp[2] = {&d[0], &d[1]};
    uint64_t shapes[4];
    wire_buf_t bufs[2];
    for (int i = 0; i < n; i++) {
        wire_desc_init(&d[i], &shapes[2 * i], (uint32_t)t, NULL, 0, shape[i][0], shape[i][1]);
        bufs[i] = (wire_buf_t){data[i], d[i].nbytes, NULL, NULL};
        c->bytes_sent += d[i].nbytes;
    }
    h.n_tensors = (size_t)n;
    h.tensors = dp;
    return wire_send(c->socks[k], NULL, &h, bufs, (size_t)n) ? -TS_EIO : 0;
}

int ps_client_layer_fwd(ps_client_t *c, int64_t clock, int t, const float *x, int batch, float *y, char *err,
                        size_t errlen) {
    const tensor_info_t *ti = &c->spec->tensors[t];
    int asked[c->n_shards];
    for (int k = 0; k < c->n_shards; k++) {
        row_range_t r = shard_map_range(c->map, t, k);
        asked[k] = r.row_end > r.row_begin;
        const float *data[1] = {x};
        const uint64_t shape[1][2] = {{(uint64_t)batch, ti->cols}};
        if (asked[k] && send_layer(c, k, TESSERA__KIND__KIND_LAYER_FWD, clock, t, 0, data, shape, 1)) {
            snprintf(err, errlen, "cannot send to shard %d", k);
            return -TS_EIO;
        }
    }
    layer_call_t lc = {.t = t, .batch = batch, .y = y};
    return gather_replies(c, asked, TESSERA__KIND__KIND_ACTIVATIONS, take_activations, &lc, 0, err, errlen);
}

int ps_client_layer_bwd(ps_client_t *c, int64_t clock, int t, const float *x, const float *dy, int batch,
                        float *dx, char *err, size_t errlen) {
    const tensor_info_t *ti = &c->spec->tensors[t];
    int S = c->n_shards, asked[S], rc = 0;
    float *dyk[S], *parts[S];
    for (int k = 0; k < S; k++) {
        row_range_t r = shard_map_range(c->map, t, k);
        uint64_t rows = r.row_end - r.row_begin;
        asked[k] = rows > 0;
        dyk[k] = parts[k] = NULL;
        if (!asked[k] || rc) continue;
        dyk[k] = XMALLOC((size_t)batch * rows * sizeof(float)); /* shard k's columns of dy */
        for (int b = 0; b < batch; b++)
            memcpy(dyk[k] + (size_t)b * rows, dy + (size_t)b * ti->rows + r.row_begin, rows * sizeof(float));
        if (dx) parts[k] = XMALLOC((size_t)batch * ti->cols * sizeof(float));
        const float *data[2] = {x, dyk[k]};
        const uint64_t shape[2][2] = {{(uint64_t)batch, ti->cols}, {(uint64_t)batch, rows}};
        if (send_layer(c, k, TESSERA__KIND__KIND_LAYER_BWD, clock, t, dx == NULL, data, shape, 2)) {
            snprintf(err, errlen, "cannot send to shard %d", k);
            rc = -TS_EIO;
        }
    }
    layer_call_t lc = {.t = t, .batch = batch, .bwd = 1, .parts = dx ? parts : NULL};
    if (!rc)
        rc = gather_replies(c, asked, TESSERA__KIND__KIND_ACTIVATIONS, take_activations, &lc, 0, err, errlen);
    /* dx = sum over shards of dy_k W_k, in shard order: the same bits whatever order replies came in. */
    size_t n = (size_t)batch * ti->cols;
    int first = 1;
    for (int k = 0; k < S; k++) {
        if (!rc && dx && parts[k]) {
            if (first)
                memcpy(dx, parts[k], n * sizeof(float));
            else
                for (size_t i = 0; i < n; i++)
                    dx[i] += parts[k][i];
            first = 0;
        }
        free(dyk[k]);
        free(parts[k]);
    }
    return rc;
}
