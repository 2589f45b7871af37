/* libtessera_client: see tessera_client.h. One DEALER socket per client. Every request carries a
 * fresh request_id and replies are matched on it, so a late reply to a request that timed out is
 * dropped instead of being taken for the answer to a later one. */
#include "tessera_client.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "util.h"
#include "wire.h"

#define TSC_DEFAULT_TIMEOUT_MS 5000
#define TSC_MAX_REPLY_BYTES    ((size_t)1 << 31)

struct tsc_client {
    void *ctx, *sock;
    int timeout_ms;
    int sndtimeo; /* the ZMQ_SNDTIMEO now set on sock (-2: unknown) */
    uint64_t next_id;
    char err[512];
};

static int fail(tsc_client_t *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(tsc_client_t *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return code;
}

tsc_client_t *tsc_connect(const char *endpoint, char *err, size_t errlen) {
    if (!endpoint || !*endpoint) {
        if (err && errlen) snprintf(err, errlen, "no endpoint given");
        return NULL;
    }
    tsc_client_t *c = calloc(1, sizeof *c);
    if (!c) {
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->timeout_ms = TSC_DEFAULT_TIMEOUT_MS;
    c->sndtimeo = -2;
    int linger = 0;
    const char *what = NULL;
    if (!(c->ctx = zmq_ctx_new()))
        what = "zmq_ctx_new";
    else if (!(c->sock = zmq_socket(c->ctx, ZMQ_DEALER)))
        what = "zmq_socket";
    else if (zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger))
        what = "zmq_setsockopt(ZMQ_LINGER)";
    else if (zmq_connect(c->sock, endpoint))
        what = "zmq_connect";
    if (what) {
        if (err && errlen)
            snprintf(err, errlen, "cannot connect to %s: %s: %s", endpoint, what, zmq_strerror(zmq_errno()));
        tsc_close(c);
        return NULL;
    }
    return c;
}

void tsc_close(tsc_client_t *c) {
    if (!c) return;
    if (c->sock) zmq_close(c->sock); /* linger 0: queued requests are dropped */
    if (c->ctx) zmq_ctx_term(c->ctx);
    free(c);
}

void tsc_set_timeout(tsc_client_t *c, int ms) {
    if (c && ms > 0) c->timeout_ms = ms;
}

const char *tsc_error(const tsc_client_t *c) {
    return c ? c->err : "no client";
}

const char *tsc_code_name(int code) {
    static const char *const names[] = {"OK",
                                        "INVALID_ARGUMENT",
                                        "NOT_FOUND",
                                        "UNAVAILABLE",
                                        "RESOURCE_EXHAUSTED",
                                        "DEADLINE_EXCEEDED",
                                        "FAILED_PRECONDITION",
                                        "VERSION_MISMATCH",
                                        "INTERNAL"};
    if (code >= 0 && code < (int)(sizeof names / sizeof names[0])) return names[code];
    if (code == TSC_TIMEOUT) return "TIMEOUT";
    if (code == TSC_IO) return "IO";
    return "UNKNOWN";
}

static void free_copy(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* Sets how long a send may block: the client's timeout for blocking calls, 0 for pipelined ones
 * (a full queue must not stall the caller's event loop). */
static int set_send_timeout(tsc_client_t *c, int ms) {
    if (c->sndtimeo == ms) return TSC_OK;
    if (zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &ms, sizeof ms))
        return fail(c, TSC_IO, "zmq_setsockopt(ZMQ_SNDTIMEO): %s", zmq_strerror(zmq_errno()));
    c->sndtimeo = ms;
    return TSC_OK;
}

/* Sends request `h` under a new request_id (returned in *id), with x[rows, cols] as its tensor when
 * x is not NULL. The tensor is copied: ZeroMQ may still hold it after the caller gives up. */
static int send_request(tsc_client_t *c, Tessera__Header *h, const float *x, size_t rows, size_t cols,
                        const uint64_t *ids, size_t slots, int send_timeout_ms, uint64_t *id) {
    c->err[0] = '\0';
    int rc = set_send_timeout(c, send_timeout_ms);
    if (rc) return rc;
    if (!send_timeout_ms) { /* check first: wire_send would log every refused send */
        int events;
        size_t len = sizeof events;
        if (zmq_getsockopt(c->sock, ZMQ_EVENTS, &events, &len))
            return fail(c, TSC_IO, "zmq_getsockopt(ZMQ_EVENTS): %s", zmq_strerror(zmq_errno()));
        if (!(events & ZMQ_POLLOUT))
            return fail(c, TSC_IO,
                        "cannot queue the request: send queue full (the server is not reading fast enough)");
    }
    h->request_id = *id = ++c->next_id;
    Tessera__TensorDesc desc[2], *descs[2] = {&desc[0], &desc[1]};
    uint64_t shape[4];
    wire_buf_t buf[2] = {{NULL, 0, free_copy, NULL}, {NULL, 0, free_copy, NULL}};
    size_t n = 0;
    if (x) {
        if (!rows || !cols) return fail(c, TSC_INVALID_ARGUMENT, "empty input (%zu x %zu)", rows, cols);
        if (rows > SIZE_MAX / sizeof(float) / cols) return fail(c, TSC_INVALID_ARGUMENT, "input too large");
        if (ids && (!slots || rows > SIZE_MAX / sizeof(uint64_t) / slots))
            return fail(c, TSC_INVALID_ARGUMENT, "bad ids shape (%zu x %zu)", rows, slots);
        wire_desc_init(&desc[0], &shape[0], 0, NULL, 0, rows, cols);
        n = 1;
        if (ids) {
            wire_desc_ids(&desc[1], &shape[2], 0, rows);
            desc[1].shape[1] = slots;
            desc[1].nbytes = rows * slots * sizeof(uint64_t);
            n = 2;
        }
        const void *src[2] = {x, ids};
        for (size_t i = 0; i < n; i++) {
            void *copy = malloc(desc[i].nbytes);
            if (!copy) {
                free((void *)buf[0].data);
                return fail(c, TSC_IO, "out of memory copying %zu bytes of input", (size_t)desc[i].nbytes);
            }
            memcpy(copy, src[i], desc[i].nbytes);
            buf[i].data = copy;
            buf[i].nbytes = desc[i].nbytes;
        }
        h->n_tensors = n;
        h->tensors = descs;
    }
    if (wire_send(c->sock, NULL, h, buf, n)) {
        int e = zmq_errno();
        if (e == EAGAIN)
            return fail(c, send_timeout_ms ? TSC_TIMEOUT : TSC_IO,
                        "cannot queue the request: send queue full (the server is not reading fast enough)");
        return fail(c, TSC_IO, "send: %s", zmq_strerror(e));
    }
    return TSC_OK;
}

/* Waits until `deadline` (now_s() time) for the next well-formed reply. TSC_OK with *m filled
 * (release with wire_msg_free) and *id its request; TSC_IO for a malformed reply to request *id
 * (*id != 0) or a failed socket (*id == 0); TSC_TIMEOUT when nothing arrived, or early when a
 * signal interrupted the wait. Messages without a readable header are dropped. */
static int next_reply(tsc_client_t *c, double deadline, wire_msg_t *m, uint64_t *id) {
    *id = 0;
    for (;;) {
        double left = deadline - now_s();
        long ms = left <= 0 ? 0 : (long)(left * 1000.0 + 0.999);
        zmq_pollitem_t item = {.socket = c->sock, .events = ZMQ_POLLIN};
        int n = zmq_poll(&item, 1, ms);
        if (n < 0) {
            if (zmq_errno() == EINTR) return TSC_TIMEOUT;
            return fail(c, TSC_IO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        if (n == 0) {
            if (now_s() >= deadline) return TSC_TIMEOUT;
            continue;
        }
        Tessera__ErrorCode code;
        char err[256];
        int rc = wire_recv(c->sock, 0, TSC_MAX_REPLY_BYTES, m, &code, err, sizeof err);
        if (rc == 0) {
            *id = m->hdr->request_id;
            return TSC_OK;
        }
        uint64_t bad_id = m->hdr ? m->hdr->request_id : 0;
        wire_msg_free(m);
        if (rc == -TS_EIO) return fail(c, TSC_IO, "receive: %s", err);
        if (bad_id) {
            *id = bad_id;
            return fail(c, TSC_IO, "malformed reply: %s", err);
        }
        /* no header to say which request it answers: nobody to report it to */
    }
}

/* Turns a reply into an outcome: TSC_OK when it has kind `want` (m is kept), else the server's
 * error code or TSC_IO with the message (m is released). */
static int check_reply(tsc_client_t *c, wire_msg_t *m, Tessera__Kind want) {
    const Tessera__Header *h = m->hdr;
    int rc = TSC_OK;
    if (h->kind == TESSERA__KIND__KIND_ERROR) {
        int code = (int)h->error_code;
        rc = code > 0 && code < TSC_TIMEOUT ? code : TSC_INTERNAL;
        fail(c, rc, "%s", h->error_message && *h->error_message ? h->error_message : tsc_code_name(rc));
    } else if (h->kind != want) {
        rc = fail(c, TSC_IO, "unexpected reply %s, expected %s", wire_kind_name(h->kind),
                  wire_kind_name(want));
    }
    if (rc) wire_msg_free(m);
    return rc;
}

/* One blocking call: sends `h` (with x[rows, cols] when x is not NULL) and waits up to the client's
 * timeout for its reply, dropping replies to other requests. TSC_OK with *m holding a reply of kind
 * `want` (release with wire_msg_free); otherwise the outcome with its message, and *m is empty. */
static int call(tsc_client_t *c, Tessera__Header *h, const float *x, size_t rows, size_t cols,
                const uint64_t *ids, size_t slots, Tessera__Kind want, wire_msg_t *m) {
    memset(m, 0, sizeof *m);
    double deadline = now_s() + c->timeout_ms / 1000.0;
    uint64_t id = 0;
    int rc = send_request(c, h, x, rows, cols, ids, slots, c->timeout_ms, &id);
    if (rc) return rc;
    for (;;) {
        uint64_t got;
        rc = next_reply(c, deadline, m, &got);
        if (rc == TSC_TIMEOUT) {
            if (now_s() < deadline) continue; /* interrupted by a signal */
            return fail(c, TSC_TIMEOUT, "no reply to %s within %d ms", wire_kind_name(h->kind),
                        c->timeout_ms);
        }
        if (rc == TSC_IO && !got) return rc; /* the socket failed */
        if (got != id) {
            if (rc == TSC_OK) wire_msg_free(m);
            continue; /* stale: a reply to a request given up on */
        }
        if (rc) return rc;
        return check_reply(c, m, want);
    }
}

/* Copies the single [rows, cols] tensor of a PREDICTION reply into *out; releases m. */
static int take_prediction(tsc_client_t *c, wire_msg_t *m, tsc_result_t *out) {
    const Tessera__Header *h = m->hdr;
    int rc = TSC_OK;
    if (h->n_tensors != 1 || m->nframes != 1) {
        rc = fail(c, TSC_IO, "malformed reply: a prediction with %zu tensors", h->n_tensors);
        goto out;
    }
    const Tessera__TensorDesc *d = h->tensors[0];
    out->outputs = malloc(d->nbytes ? d->nbytes : 1);
    if (!out->outputs) {
        rc = fail(c, TSC_IO, "out of memory for a reply of %llu bytes", (unsigned long long)d->nbytes);
        goto out;
    }
    memcpy(out->outputs, zmq_msg_data(&m->frames[0]), d->nbytes);
    out->rows = d->shape[0];
    out->cols = d->shape[1];
    out->version = h->model_version;
    out->compute_us = h->compute_us;
    out->batch_rows = h->batch_rows;
out:
    wire_msg_free(m);
    return rc;
}

static void predict_header(Tessera__Header *h, const tsc_client_t *c, const char *model, uint64_t version) {
    wire_header_init(h, TESSERA__KIND__KIND_PREDICT);
    h->model = (char *)(model ? model : "");
    h->model_version = version;
    h->deadline_ms = (uint32_t)c->timeout_ms;
}

int tsc_predict(tsc_client_t *c, const char *model, uint64_t version, const float *x, size_t rows,
                size_t cols, tsc_result_t *out) {
    return tsc_predict_ids(c, model, version, x, rows, cols, NULL, 0, out);
}

int tsc_predict_ids(tsc_client_t *c, const char *model, uint64_t version, const float *x, size_t rows,
                    size_t cols, const uint64_t *ids, size_t slots, tsc_result_t *out) {
    memset(out, 0, sizeof *out);
    if (!x) return fail(c, TSC_INVALID_ARGUMENT, "no input");
    Tessera__Header h;
    predict_header(&h, c, model, version);
    wire_msg_t m;
    int rc = call(c, &h, x, rows, cols, ids, slots, TESSERA__KIND__KIND_PREDICTION, &m);
    if (rc) return rc;
    rc = take_prediction(c, &m, out);
    if (!rc && out->rows != rows) {
        rc = fail(c, TSC_IO, "malformed reply: %zu rows of predictions for %zu inputs", out->rows, rows);
        tsc_result_free(out);
    }
    return rc;
}

int tsc_predict_send(tsc_client_t *c, const char *model, uint64_t version, const float *x, size_t rows,
                     size_t cols, uint64_t *request_id) {
    *request_id = 0;
    if (!x) return fail(c, TSC_INVALID_ARGUMENT, "no input");
    Tessera__Header h;
    predict_header(&h, c, model, version);
    return send_request(c, &h, x, rows, cols, NULL, 0, 0, request_id);
}

int tsc_predict_recv(tsc_client_t *c, int timeout_ms, uint64_t *request_id, tsc_result_t *out) {
    memset(out, 0, sizeof *out);
    c->err[0] = '\0';
    wire_msg_t m;
    int rc = next_reply(c, now_s() + (timeout_ms > 0 ? timeout_ms : 0) / 1000.0, &m, request_id);
    if (rc == TSC_TIMEOUT) return fail(c, TSC_TIMEOUT, "no reply within %d ms", timeout_ms);
    if (rc) return rc;
    rc = check_reply(c, &m, TESSERA__KIND__KIND_PREDICTION);
    return rc ? rc : take_prediction(c, &m, out);
}

void tsc_result_free(tsc_result_t *r) {
    if (!r) return;
    free(r->outputs);
    memset(r, 0, sizeof *r);
}

/* A request without payload whose answer is KIND_OK. */
static int call_ok(tsc_client_t *c, Tessera__Kind kind, const char *model) {
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.model = (char *)(model ? model : "");
    wire_msg_t m;
    int rc = call(c, &h, NULL, 0, 0, NULL, 0, TESSERA__KIND__KIND_OK, &m);
    if (!rc) wire_msg_free(&m);
    return rc;
}

int tsc_live(tsc_client_t *c) {
    return call_ok(c, TESSERA__KIND__KIND_LIVE, NULL);
}

int tsc_ready(tsc_client_t *c, const char *model) {
    return call_ok(c, TESSERA__KIND__KIND_READY, model);
}

/* STATUS of `model`: TSC_OK with *m holding a reply that has a status (release with wire_msg_free). */
static int call_status(tsc_client_t *c, const char *model, wire_msg_t *m) {
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_STATUS);
    h.model = (char *)(model ? model : "");
    int rc = call(c, &h, NULL, 0, 0, NULL, 0, TESSERA__KIND__KIND_STATUS, m);
    if (!rc && !m->hdr->status) {
        wire_msg_free(m);
        rc = fail(c, TSC_IO, "malformed reply: STATUS without a model status");
    }
    return rc;
}

int tsc_model_info(tsc_client_t *c, const char *model, tsc_model_info_t *info) {
    memset(info, 0, sizeof *info);
    wire_msg_t m;
    int rc = call_status(c, model, &m);
    if (rc) return rc;
    const Tessera__ModelStatus *s = m.hdr->status;
    info->input_dim = s->input_dim;
    info->outputs = s->outputs;
    info->default_version = s->default_version;
    info->input_mean = s->input_mean;
    info->input_std = s->input_std;
    info->categorical_slots = s->categorical_slots;
    wire_msg_free(&m);
    return TSC_OK;
}

static int add_str(cJSON *o, const char *k, const char *v) {
    return cJSON_AddStringToObject(o, k, v ? v : "") != NULL;
}

static int add_num(cJSON *o, const char *k, double v) {
    return cJSON_AddNumberToObject(o, k, v) != NULL;
}

/* The ModelStatus as a cJSON object with the proto's field names; NULL when out of memory. */
static cJSON *status_to_json(const Tessera__ModelStatus *s) {
    cJSON *o = cJSON_CreateObject();
    int ok = o && add_str(o, "name", s->name) && add_num(o, "default_version", (double)s->default_version);
    cJSON *versions = ok ? cJSON_AddArrayToObject(o, "versions") : NULL;
    ok = ok && versions;
    for (size_t i = 0; ok && i < s->n_versions; i++) {
        const Tessera__VersionStatus *v = s->versions[i];
        cJSON *e = cJSON_CreateObject();
        ok = e && cJSON_AddItemToArray(versions, e);
        if (!ok) cJSON_Delete(e);
        ok = ok && add_num(e, "version", (double)v->version) && add_str(e, "state", v->state) &&
             add_str(e, "path", v->path) && add_str(e, "message", v->message);
    }
    cJSON *replicas = ok ? cJSON_AddArrayToObject(o, "replicas") : NULL;
    ok = ok && replicas;
    for (size_t i = 0; ok && i < s->n_replicas; i++) {
        const Tessera__ReplicaStatus *r = s->replicas[i];
        cJSON *e = cJSON_CreateObject();
        ok = e && cJSON_AddItemToArray(replicas, e);
        if (!ok) cJSON_Delete(e);
        ok = ok && add_num(e, "shard", r->shard) && add_num(e, "replica", r->replica) &&
             add_str(e, "endpoint", r->endpoint) && cJSON_AddBoolToObject(e, "up", r->up);
    }
    ok = ok && add_num(o, "input_dim", s->input_dim) && add_num(o, "outputs", s->outputs) &&
         add_str(o, "placement", s->placement) && add_num(o, "requests", (double)s->requests) &&
         add_num(o, "errors", (double)s->errors) && add_num(o, "batches", (double)s->batches) &&
         add_num(o, "queue_depth", s->queue_depth) && add_num(o, "max_queue", s->max_queue) &&
         add_num(o, "input_mean", s->input_mean) && add_num(o, "input_std", s->input_std) &&
         add_num(o, "categorical_slots", s->categorical_slots);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

int tsc_status_json(tsc_client_t *c, const char *model, char **json) {
    *json = NULL;
    wire_msg_t m;
    int rc = call_status(c, model, &m);
    if (rc) return rc;
    cJSON *o = status_to_json(m.hdr->status);
    wire_msg_free(&m);
    *json = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return *json ? TSC_OK : fail(c, TSC_IO, "out of memory formatting the status");
}
