/* A real shard (ps_server_run on a ZeroMQ ROUTER over TCP loopback, in a thread) against garbage,
 * truncated frames, wrong tensor sizes, wrong clocks and oversized messages: each gets an error reply
 * or is dropped, and the shard keeps serving. Then the BSP and SSP clock rules. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "expect.h"
#include "model.h"
#include "optim.h"
#include "server.h"
#include "shard_map.h"
#include "sparse_table.h"
#include "util.h"
#include "wire.h"
#include "xregion.h"

typedef struct {
    ps_server_t *srv;
    int rc;
} thread_arg_t;

static void *serve(void *p) {
    thread_arg_t *a = p;
    a->rc = ps_server_run(a->srv);
    return NULL;
}

static void *ctx;
static model_spec_t spec;
static shard_map_t map;

typedef struct {
    void *router;
    char endpoint[128];
    ps_server_t *srv;
    pthread_t th;
    thread_arg_t arg;
} shard_t;

static void shard_start(shard_t *s, int shard, int workers, int staleness) {
    s->router = zmq_socket(ctx, ZMQ_ROUTER);
    ps_server_prepare_socket(s->router, 64 << 10);
    zmq_bind(s->router, "tcp://127.0.0.1:*");
    size_t len = sizeof s->endpoint;
    zmq_getsockopt(s->router, ZMQ_LAST_ENDPOINT, s->endpoint, &len);
    optim_t opt = {.kind = OPT_SGD, .lr = 0.5f};
    ps_config_t pc = {.spec = &spec,
                      .map = &map,
                      .shard = shard,
                      .n_workers = workers,
                      .staleness = staleness,
                      .opt = opt,
                      .seed = 9,
                      .max_message_bytes = 64 << 10};
    char err[256];
    s->srv = ps_server_create(&pc, s->router, NULL, err, sizeof err);
    EXPECT(s->srv != NULL, "create: %s", err);
    s->arg.srv = s->srv;
    pthread_create(&s->th, NULL, serve, &s->arg);
}

static void *client(const char *endpoint) {
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(d, endpoint);
    return d;
}

/* Receives one reply within `ms`; returns its header kind, or -1 on timeout. *code gets the error. */
static int reply(void *d, long ms, int *code, float *params, size_t *nfloats) {
    zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) != 1) return -1;
    wire_msg_t m;
    Tessera__ErrorCode c;
    char err[256];
    int rc = wire_recv(d, 0, 1 << 24, &m, &c, err, sizeof err);
    int kind = rc ? -2 : (int)m.hdr->kind;
    *code = rc ? -1 : (int)m.hdr->error_code;
    if (!rc && kind == TESSERA__KIND__KIND_ERROR)
        fprintf(stderr, "  shard answered %s: %s\n", wire_error_name(*code), m.hdr->error_message);
    size_t off = 0;
    for (size_t i = 0; !rc && params && i < m.nframes; i++) {
        memcpy(params + off, zmq_msg_data(&m.frames[i]), zmq_msg_size(&m.frames[i]));
        off += zmq_msg_size(&m.frames[i]) / sizeof(float);
    }
    if (nfloats) *nfloats = off;
    wire_msg_free(&m);
    return kind;
}

/* Sends a request with tensors [t_lo, t_hi) shaped like shard `k`'s slices (or `bad_rows` rows for the
 * first). */
static void request_range(void *d, Tessera__Kind kind, int sender, int64_t clock, int k, const float *value,
                          int bad_rows, int drop_last_frame, int t_lo, int t_hi) {
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.sender = sender;
    h.clock = clock;
    h.request_id = 1;
    h.role = kind == TESSERA__KIND__KIND_SHUTDOWN ? "scheduler" : "worker";
    Tessera__TensorDesc desc[8], *dp[8];
    uint64_t shapes[16];
    wire_buf_t bufs[8];
    static float data[1024];
    int nt = 0;
    for (int t = t_lo; value && t < t_hi && t < spec.n_tensors; t++) {
        row_range_t r = shard_map_range(&map, t, k);
        if (r.row_end == r.row_begin || spec.tensors[t].remote) continue; /* remote weights are not pushed */
        uint64_t rows = (nt == 0 && bad_rows) ? (uint64_t)bad_rows : r.row_end - r.row_begin;
        tessera__tensor_desc__init(&desc[nt]);
        desc[nt].id = (uint32_t)t;
        desc[nt].dtype = TESSERA__DTYPE__DTYPE_F32;
        shapes[2 * nt] = rows;
        shapes[2 * nt + 1] = spec.tensors[t].cols;
        desc[nt].n_shape = 2;
        desc[nt].shape = &shapes[2 * nt];
        desc[nt].row_begin = r.row_begin;
        desc[nt].nbytes = rows * spec.tensors[t].cols * sizeof(float);
        for (size_t i = 0; i < desc[nt].nbytes / sizeof(float); i++)
            data[i] = *value;
        dp[nt] = &desc[nt];
        bufs[nt] = (wire_buf_t){data, desc[nt].nbytes, NULL, NULL};
        nt++;
    }
    h.n_tensors = (size_t)nt;
    h.tensors = dp;
    wire_send(d, NULL, &h, bufs, (size_t)(nt - (drop_last_frame ? 1 : 0)));
}

static void request(void *d, Tessera__Kind kind, int sender, int64_t clock, int k, const float *value,
                    int bad_rows, int drop_last_frame) {
    request_range(d, kind, sender, clock, k, value, bad_rows, drop_last_frame, 0, spec.n_tensors);
}

static void stop(shard_t *s) {
    void *d = client(s->endpoint);
    request(d, TESSERA__KIND__KIND_SHUTDOWN, -1, 0, 0, NULL, 0, 0);
    int code;
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_OK, "shutdown acknowledged");
    pthread_join(s->th, NULL);
    EXPECT(s->arg.rc == 0, "server loop returned %d", s->arg.rc);
    zmq_close(d);
    ps_server_free(s->srv);
    zmq_close(s->router);
}

static void test_robustness(void) {
    shard_t s;
    shard_start(&s, 0, 1, 0);
    void *d = client(s.endpoint);
    int code;
    float p0[64], p[64];
    size_t n0, n;
    float one = 1.0f;

    request(d, TESSERA__KIND__KIND_PING, -1, 0, 0, NULL, 0, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_OK, "ping");

    zmq_send(d, "\xff\x13garbage\x00\x01", 11, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
           "random bytes answered with INVALID_ARGUMENT");

    request(d, TESSERA__KIND__KIND_PULL, 0, 0, 0, NULL, 0, 0);
    EXPECT(reply(d, 2000, &code, p0, &n0) == TESSERA__KIND__KIND_PARAMS, "initial pull");
    /* shard 0 of 2 holds rows [0,2) of fc.weight [3,4] and row [0,1) of fc.bias [3,1] */
    EXPECT(n0 == 2 * 4 + 1, "shard 0 holds %zu floats", n0);
    float expect_w[8];
    model_spec_init_rows(&spec, 0, 0, 2, 9, expect_w);
    EXPECT(!memcmp(p0, expect_w, sizeof expect_w), "initial values are the deterministic ones");

    request(d, TESSERA__KIND__KIND_PUSH_PULL, 0, 0, 0, &one, 3, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
           "wrong tensor size rejected");
    request(d, TESSERA__KIND__KIND_PUSH_PULL, 0, 0, 0, &one, 0, 1);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
           "truncated frames rejected");
    request(d, TESSERA__KIND__KIND_PUSH_PULL, 0, 5, 0, &one, 0, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
           "wrong clock rejected");
    request(d, TESSERA__KIND__KIND_PUSH_PULL, 7, 0, 0, &one, 0, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
           "unknown worker rejected");
    request(d, TESSERA__KIND__KIND_REPORT, 0, 0, 0, NULL, 0, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR, "kind a shard does not serve");

    /* Oversized: a frame above ZMQ_MAXMSGSIZE makes ZeroMQ drop the connection; no reply. */
    void *big = client(s.endpoint);
    size_t bytes = 256 << 10;
    char *junk = calloc(1, bytes);
    zmq_send(big, junk, bytes, 0);
    free(junk);
    EXPECT(reply(big, 500, &code, NULL, NULL) == -1, "oversized message dropped without a reply");
    zmq_close(big);

    /* Nothing above changed the state: the valid push applies exactly one SGD step, p - 0.5 * 1. */
    request(d, TESSERA__KIND__KIND_PUSH_PULL, 0, 0, 0, &one, 0, 0);
    EXPECT(reply(d, 2000, &code, p, &n) == TESSERA__KIND__KIND_PARAMS && n == n0, "valid push after garbage");
    for (size_t i = 0; i < n0; i++)
        EXPECT_NEAR(p[i], p0[i] - 0.5f, 1e-6);

    /* A pull for a clock no worker will reach is refused, not queued forever. */
    request(d, TESSERA__KIND__KIND_PULL, -1, 1000000, 0, NULL, 0, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
           "pull far in the future refused");
    /* Only the scheduler may stop a shard. */
    {
        Tessera__Header h;
        wire_header_init(&h, TESSERA__KIND__KIND_SHUTDOWN);
        h.role = "worker";
        wire_send(d, NULL, &h, NULL, 0);
        EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR,
               "shutdown from a worker refused");
    }
    /* A peer that asks for parameters and never reads them cannot stall updates (replies are sent
     * from snapshots, not from the live parameters). */
    void *lazy = client(s.endpoint);
    int hwm = 1;
    zmq_setsockopt(lazy, ZMQ_RCVHWM, &hwm, sizeof hwm);
    for (int i = 0; i < 200; i++)
        request(lazy, TESSERA__KIND__KIND_PULL, -1, 0, 0, NULL, 0, 0);
    double t0 = now_s();
    request(d, TESSERA__KIND__KIND_PUSH_PULL, 0, 1, 0, &one, 0, 0);
    EXPECT(reply(d, 2000, &code, p, &n) == TESSERA__KIND__KIND_PARAMS, "push while a peer does not read");
    EXPECT(now_s() - t0 < 0.5, "push took %.3f s with a non-reading peer", now_s() - t0);
    for (size_t i = 0; i < n0; i++)
        EXPECT_NEAR(p[i], p0[i] - 1.0f, 1e-6);
    zmq_close(lazy);

    /* A fresh client is served too. */
    void *d2 = client(s.endpoint);
    request(d2, TESSERA__KIND__KIND_PING, -1, 0, 0, NULL, 0, 0);
    EXPECT(reply(d2, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_OK,
           "new client served after the garbage");
    zmq_close(d2);
    zmq_close(d);
    stop(&s);
}

/* BSP with two workers: worker 0's push waits for worker 1's; the step uses the mean gradient. */
static void test_bsp(void) {
    shard_t s;
    shard_start(&s, 1, 2, 0);
    void *w0 = client(s.endpoint), *w1 = client(s.endpoint);
    int code;
    float p0[64], p[64];
    size_t n0, n;
    request(w0, TESSERA__KIND__KIND_PULL, 0, 0, 1, NULL, 0, 0);
    EXPECT(reply(w0, 2000, &code, p0, &n0) == TESSERA__KIND__KIND_PARAMS, "pull");
    float g0 = 1.0f, g1 = 3.0f;
    request(w0, TESSERA__KIND__KIND_PUSH_PULL, 0, 0, 1, &g0, 0, 0);
    EXPECT(reply(w0, 300, &code, NULL, NULL) == -1, "BSP: worker 0 waits for worker 1");
    request(w0, TESSERA__KIND__KIND_PUSH_PULL, 0, 1, 1, &g0, 0, 0);
    EXPECT(reply(w0, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
           "BSP: a second push before the others is refused");
    request(w1, TESSERA__KIND__KIND_PUSH_PULL, 1, 0, 1, &g1, 0, 0);
    EXPECT(reply(w1, 2000, &code, p, &n) == TESSERA__KIND__KIND_PARAMS, "worker 1 answered");
    for (size_t i = 0; i < n0; i++)
        EXPECT_NEAR(p[i], p0[i] - 0.5f * 2.0f, 1e-6); /* mean gradient 2 */
    EXPECT(reply(w0, 2000, &code, p, &n) == TESSERA__KIND__KIND_PARAMS, "worker 0 released");
    EXPECT_NEAR(p[0], p0[0] - 1.0f, 1e-6);
    /* A request still waiting when the shard stops is answered UNAVAILABLE, not dropped. */
    request(w0, TESSERA__KIND__KIND_PUSH_PULL, 0, 1, 1, &g0, 0, 0);
    EXPECT(reply(w0, 300, &code, NULL, NULL) == -1, "BSP: waiting for worker 1 again");
    zmq_close(w1);
    stop(&s);
    EXPECT(reply(w0, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_UNAVAILABLE,
           "waiting request answered UNAVAILABLE at shutdown");
    zmq_close(w0);
}

/* SSP with bound 1: a worker may run one clock ahead of the slowest, not two. */
/* Worker `sender`'s push of `clock` (every gradient 1) on shard 0's slices; the reply's kind within `ms`
 * (-1: none yet; it may still come, to reply()). */
static int pushed(void *d, int sender, int64_t clock, long ms) {
    float g = 1.0f;
    int code;
    request(d, TESSERA__KIND__KIND_PUSH_PULL, sender, clock, 0, &g, 0, 0);
    return reply(d, ms, &code, NULL, NULL);
}

static void test_ssp(void) {
    shard_t s;
    shard_start(&s, 0, 2, 1);
    void *w0 = client(s.endpoint), *w1 = client(s.endpoint);
    int code;
    const int params = TESSERA__KIND__KIND_PARAMS;
    EXPECT(pushed(w0, 0, 0, 2000) == params, "SSP: clock 1 allowed (slowest at 0)");
    EXPECT(pushed(w0, 0, 1, 300) == -1, "SSP: clock 2 waits while the slowest is at 0");
    EXPECT(pushed(w1, 1, 0, 2000) == params, "worker 1 answered");
    EXPECT(reply(w0, 2000, &code, NULL, NULL) == params, "SSP: worker 0 released");
    zmq_close(w0);
    zmq_close(w1);
    stop(&s);
}

/* ASP: worker 0's CUT_QUERY fences the shard at its furthest worker's clock + the grace, and the fence
 * holds only other workers' pushes at or past it, until worker 0's next push. Only worker 0, in SSP/ASP,
 * may ask. */
static void test_cut_fence(void) {
    shard_t s;
    shard_start(&s, 0, 2, CFG_STALENESS_INF);
    void *w0 = client(s.endpoint), *w1 = client(s.endpoint);
    int code;
    const int params = TESSERA__KIND__KIND_PARAMS;
    for (int c = 0; c < 3; c++)
        EXPECT(pushed(w1, 1, c, 2000) == params, "ASP: worker 1 runs ahead");
    request(w1, TESSERA__KIND__KIND_CUT_QUERY, 1, 2, 0, NULL, 0, 0);
    EXPECT(reply(w1, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
           "CUT_QUERY from worker 1 refused");
    request(w0, TESSERA__KIND__KIND_CUT_QUERY, 0, 0, 0, NULL, 0, 0);
    EXPECT(reply(w0, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR,
           "CUT_QUERY with no grace refused");
    request(w0, TESSERA__KIND__KIND_CUT_QUERY, 0, 2, 0, NULL, 0, 0);
    zmq_pollitem_t it = {w0, 0, ZMQ_POLLIN, 0};
    EXPECT(zmq_poll(&it, 1, 2000) == 1, "CUT_QUERY answered");
    wire_msg_t m;
    Tessera__ErrorCode c;
    char err[256];
    EXPECT(wire_recv(w0, 0, 1 << 20, &m, &c, err, sizeof err) == 0 && m.hdr->kind == TESSERA__KIND__KIND_OK &&
               m.hdr->clock == 5,
           "the fence is the furthest clock (3) + the grace (2)");
    wire_msg_free(&m);
    EXPECT(pushed(w1, 1, 3, 2000) == params, "a push below the fence goes on");
    EXPECT(pushed(w1, 1, 4, 2000) == params, "the last push below the fence too");
    EXPECT(pushed(w1, 1, 5, 300) == -1, "a push at the fence waits");
    EXPECT(pushed(w0, 0, 0, 2000) == params, "worker 0's push is never fenced");
    EXPECT(reply(w1, 2000, &code, NULL, NULL) == params,
           "worker 0's push lifts the fence: the held push is answered");
    zmq_close(w0);
    zmq_close(w1);
    stop(&s);

    shard_start(&s, 0, 2, 0);
    w0 = client(s.endpoint);
    request(w0, TESSERA__KIND__KIND_CUT_QUERY, 0, 2, 0, NULL, 0, 0);
    EXPECT(reply(w0, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR, "BSP: CUT_QUERY refused");
    zmq_close(w0);
    stop(&s);
}

static int answered(void *d, int kind, int code_want, const char *what) {
    int code;
    int got = reply(d, 2000, &code, NULL, NULL);
    EXPECT(got == kind && (kind != TESSERA__KIND__KIND_ERROR || code == code_want),
           "%s (got kind %d code %d)", what, got, code);
    return got;
}

/* Overlapped pushes: PUSH_PARTs of some slices, then the PUSH_PULL with the rest, make the same step as
 * one whole push. In BSP a part is answered with its slices' update once every worker's part of them
 * is in, and the push's reply brings only the other slices; in SSP a part is answered KIND_OK and the
 * push's reply brings everything. Parts that repeat a slice, miss the shard's slices, come at the
 * wrong clock or out of order (not from the last slice back), and a push that repeats a part's slice,
 * are refused. Two workers. */
static void test_push_parts(void) {
    for (int staleness = 0; staleness <= 1; staleness++) {
        shard_t s;
        shard_start(&s, 0, 2, staleness);
        void *w0 = client(s.endpoint), *w1 = client(s.endpoint);
        /* tensor 0 is fc.weight (shard 0: rows 0-1, 8 floats), tensor 1 fc.bias (row 0, 1 float) */
        int code, bias = 1;
        float p0[64], p[64], one = 1.0f, three = 3.0f;
        size_t n0, n;
        request(w0, TESSERA__KIND__KIND_PULL, 0, 0, 0, NULL, 0, 0);
        EXPECT(reply(w0, 2000, &code, p0, &n0) == TESSERA__KIND__KIND_PARAMS && n0 == 9, "pull");
        request_range(w0, TESSERA__KIND__KIND_PUSH_PART, 0, 0, 0, &one, 0, 0, bias, bias + 1);
        if (staleness == 0)
            EXPECT(reply(w0, 300, &code, NULL, NULL) == -1, "BSP: the bias part waits for worker 1's");
        else
            answered(w0, TESSERA__KIND__KIND_OK, 0, "SSP: the bias part is held for the push");
        request_range(w0, TESSERA__KIND__KIND_PUSH_PART, 0, 0, 0, &one, 0, 0, bias, bias + 1);
        answered(w0, TESSERA__KIND__KIND_ERROR, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
                 "a second part of the same slice is refused");
        request_range(w0, TESSERA__KIND__KIND_PUSH_PART, 0, 0, 0, &one, 3, 0, 0, 1);
        answered(w0, TESSERA__KIND__KIND_ERROR, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                 "a part that is not one of the shard's slices is refused");
        request_range(w0, TESSERA__KIND__KIND_PUSH_PART, 0, 3, 0, &one, 0, 0, 0, 1);
        answered(w0, TESSERA__KIND__KIND_ERROR, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
                 "a part at another clock is refused");
        request_range(w0, TESSERA__KIND__KIND_PUSH_PART, 0, 0, 0, NULL, 0, 0, 0, 0);
        answered(w0, TESSERA__KIND__KIND_ERROR, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                 "a part without tensors is refused");
        request_range(w1, TESSERA__KIND__KIND_PUSH_PART, 1, 0, 0, &three, 0, 0, 0, 1);
        answered(w1, TESSERA__KIND__KIND_ERROR, TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
                 "a part that is not the last slices is refused");
        request(w0, TESSERA__KIND__KIND_PUSH_PULL, 0, 0, 0, &one, 0, 0);
        answered(w0, TESSERA__KIND__KIND_ERROR, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                 "a push that repeats a part's slice is refused");
        request_range(w0, TESSERA__KIND__KIND_PUSH_PULL, 0, 0, 0, &one, 0, 0, 0, bias);
        if (staleness == 0) {
            EXPECT(reply(w0, 300, &code, NULL, NULL) == -1, "BSP: the completed push waits for worker 1");
            request_range(w1, TESSERA__KIND__KIND_PUSH_PART, 1, 0, 0, &three, 0, 0, bias, bias + 1);
            /* Every worker's bias is in: both parts are answered with the bias's step (mean gradient 2). */
            EXPECT(reply(w1, 2000, &code, p, &n) == TESSERA__KIND__KIND_PARAMS && n == 1,
                   "BSP: w1's part answered");
            EXPECT_NEAR(p[0], p0[8] - 1.0f, 1e-6);
            EXPECT(reply(w0, 2000, &code, p, &n) == TESSERA__KIND__KIND_PARAMS && n == 1,
                   "BSP: w0's part answered");
            EXPECT_NEAR(p[0], p0[8] - 1.0f, 1e-6);
            EXPECT(reply(w0, 300, &code, NULL, NULL) == -1, "BSP: w0's push still waits for worker 1's");
            request_range(w1, TESSERA__KIND__KIND_PUSH_PULL, 1, 0, 0, &three, 0, 0, 0, bias);
            for (int k = 0; k < 2; k++) { /* the pushes' replies bring the weight only */
                EXPECT(reply(k ? w1 : w0, 2000, &code, p, &n) == TESSERA__KIND__KIND_PARAMS && n == 8,
                       "BSP: worker %d's push answered with the weight (n=%zu)", k, n);
                for (size_t i = 0; i < 8; i++)
                    EXPECT_NEAR(p[i], p0[i] - 1.0f, 1e-6);
            }
            request(w0, TESSERA__KIND__KIND_PULL, 0, 1, 0, NULL, 0, 0);
            EXPECT(reply(w0, 2000, &code, p, &n) == TESSERA__KIND__KIND_PARAMS && n == 9,
                   "a pull after: all");
            for (size_t i = 0; i < n0; i++)
                EXPECT_NEAR(p[i], p0[i] - 1.0f, 1e-6);
        } else {
            EXPECT(reply(w0, 2000, &code, p, &n) == TESSERA__KIND__KIND_PARAMS && n == n0, "SSP: answered");
            for (size_t i = 0; i < n0; i++) /* its own step, the part's slice included */
                EXPECT_NEAR(p[i], p0[i] - 0.5f, 1e-6);
            /* The next clock starts with no parts held: a whole push is taken (and waits for worker 1,
             * one clock behind). */
            request(w0, TESSERA__KIND__KIND_PUSH_PULL, 0, 1, 0, &one, 0, 0);
            request(w1, TESSERA__KIND__KIND_PUSH_PULL, 1, 0, 0, &three, 0, 0);
            answered(w1, TESSERA__KIND__KIND_PARAMS, 0, "SSP: worker 1 answered");
            answered(w0, TESSERA__KIND__KIND_PARAMS, 0, "SSP: the next whole push is taken");
        }
        zmq_close(w0);
        zmq_close(w1);
        stop(&s);
    }
}

/* Sends SPARSE_PULL (or, with grads, PUSH_PULL of the dense `value` slices followed by one sparse pair)
 * for ids[0..n) of table `table`, with the ids described as `dtype` and `cols` columns. */
static void sparse_request(void *d, Tessera__Kind kind, int table, const uint64_t *ids, size_t n, int dtype,
                           int cols, const float *grads, int dim, int read_only, int64_t clock) {
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.sender = 0;
    h.request_id = 2;
    h.role = "worker";
    h.read_only = read_only;
    h.clock = clock;
    Tessera__TensorDesc desc[8], *dp[8];
    uint64_t shapes[16];
    wire_buf_t bufs[8];
    static float dense[4096];
    int nt = 0;
    for (int t = 0; grads && t < spec.n_tensors; t++) {
        row_range_t r = shard_map_range(&map, t, 0);
        wire_desc_init(&desc[nt], &shapes[2 * nt], (uint32_t)t, NULL, r.row_begin, r.row_end - r.row_begin,
                       spec.tensors[t].cols);
        bufs[nt] = (wire_buf_t){dense, desc[nt].nbytes, NULL, NULL};
        nt++;
    }
    wire_desc_ids(&desc[nt], &shapes[2 * nt], (uint32_t)table, n);
    desc[nt].dtype = dtype;
    shapes[2 * nt + 1] = (uint64_t)cols;
    desc[nt].nbytes = n * (uint64_t)cols * 8;
    bufs[nt] = (wire_buf_t){ids, desc[nt].nbytes, NULL, NULL};
    nt++;
    if (grads) {
        wire_desc_init(&desc[nt], &shapes[2 * nt], (uint32_t)table, NULL, 0, n, (uint64_t)dim);
        bufs[nt] = (wire_buf_t){grads, desc[nt].nbytes, NULL, NULL};
        nt++;
    }
    for (int i = 0; i < nt; i++)
        dp[i] = &desc[i];
    h.n_tensors = (size_t)nt;
    h.tensors = dp;
    wire_send(d, NULL, &h, bufs, (size_t)nt);
}

/* Sparse tables on a real shard: pulls create rows with their initial values, a push updates only the
 * rows it names (lazily), malformed sparse requests get errors, and the memory budget refuses growth
 * with a message naming it, while the shard keeps serving. */
static void test_sparse(void) {
    model_spec_t dense_spec = spec;
    shard_map_t dense_map = map;
    job_config_t cfg;
    config_defaults(&cfg);
    snprintf(cfg.data_format, sizeof cfg.data_format, "criteo");
    snprintf(cfg.opt_type, sizeof cfg.opt_type, "sgd");
    cfg.lr = 0.5;
    cfg.dense_features = 2;
    cfg.sparse_features = 1;
    cfg.n_layers = 3;
    cfg.layers[0] =
        (layer_cfg_t){.name = "emb", .type = "embedding_bag", .slot_begin = 0, .slot_end = 1, .dim = 4};
    cfg.layers[1] = (layer_cfg_t){.name = "fc", .type = "linear", .out = 1};
    cfg.layers[2] = (layer_cfg_t){.name = "loss", .type = "sigmoid_bce"};
    char err[256];
    EXPECT(model_spec_init(&spec, &cfg, err, sizeof err) == 0, "sparse spec: %s", err);
    uint64_t rows[2] = {1, 1};
    shard_map_init(&map, rows, 2, 1);
    shard_t s;
    shard_start(&s, 0, 1, 0);
    void *d = client(s.endpoint);
    int code;
    const uint64_t ids[2] = {5, 9};
    float got[8], init[8];
    sparse_table_cfg_t tc = {
        .name = "emb.slot0", .table = 0, .dim = 4, .bound = spec.tables[0].bound, .seed = 9};
    sparse_row_init(&tc, 5, init);
    sparse_row_init(&tc, 9, init + 4);
    size_t nf = 0;
    sparse_request(d, TESSERA__KIND__KIND_SPARSE_PULL, 0, ids, 2, TESSERA__DTYPE__DTYPE_U64, 1, NULL, 4, 0,
                   0);
    EXPECT(reply(d, 2000, &code, got, &nf) == TESSERA__KIND__KIND_SPARSE_ROWS && nf == 8, "sparse pull: %zu",
           nf);
    EXPECT(!memcmp(got, init, sizeof init), "new rows hold their initial values");
    /* push a gradient of 1 for id 5 only: SGD lr 0.5 moves it by -0.5, id 9 stays */
    float g[4] = {1, 1, 1, 1};
    sparse_request(d, TESSERA__KIND__KIND_PUSH_PULL, 0, ids, 1, TESSERA__DTYPE__DTYPE_U64, 1, g, 4, 0, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_PARAMS, "push with a sparse pair");
    sparse_request(d, TESSERA__KIND__KIND_SPARSE_PULL, 0, ids, 2, TESSERA__DTYPE__DTYPE_U64, 1, NULL, 4, 0,
                   0);
    EXPECT(reply(d, 2000, &code, got, &nf) == TESSERA__KIND__KIND_SPARSE_ROWS, "pull after push");
    EXPECT_NEAR(got[0], init[0] - 0.5f, 1e-6);
    EXPECT(!memcmp(got + 4, init + 4, 4 * sizeof(float)), "an untouched row is not updated (lazy)");
    /* malformed sparse requests: errors, and the shard keeps serving */
    sparse_request(d, TESSERA__KIND__KIND_SPARSE_PULL, 7, ids, 2, TESSERA__DTYPE__DTYPE_U64, 1, NULL, 4, 0,
                   0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
           "unknown table");
    sparse_request(d, TESSERA__KIND__KIND_SPARSE_PULL, 0, ids, 1, TESSERA__DTYPE__DTYPE_U64, 2, NULL, 4, 0,
                   0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR, "ids shaped [n, 2]");
    sparse_request(d, TESSERA__KIND__KIND_PULL, 0, ids, 2, TESSERA__DTYPE__DTYPE_U64, 1, NULL, 4, 0, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR,
           "U64 tensors outside sparse kinds");
    sparse_request(d, TESSERA__KIND__KIND_PUSH_PULL, 0, ids, 2, TESSERA__DTYPE__DTYPE_U64, 1, g, 3, 0, 1);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR,
           "row gradients of the wrong width");
    /* read_only: an unseen id gets its initial value and is not created */
    const uint64_t fresh[1] = {77};
    sparse_row_init(&tc, 77, init);
    sparse_request(d, TESSERA__KIND__KIND_SPARSE_PULL, 0, fresh, 1, TESSERA__DTYPE__DTYPE_U64, 1, NULL, 4, 1,
                   0);
    EXPECT(reply(d, 2000, &code, got, &nf) == TESSERA__KIND__KIND_SPARSE_ROWS && !memcmp(got, init, 16),
           "read-only pull of an unseen id");
    zmq_close(d);
    stop(&s);

    /* a budget of 2 KB: the first pull of 64 new rows is refused, naming the budget */
    s.router = zmq_socket(ctx, ZMQ_ROUTER);
    zmq_bind(s.router, "tcp://127.0.0.1:*");
    size_t len = sizeof s.endpoint;
    zmq_getsockopt(s.router, ZMQ_LAST_ENDPOINT, s.endpoint, &len);
    ps_config_t pc = {.spec = &spec,
                      .map = &map,
                      .n_workers = 1,
                      .opt = {.kind = OPT_SGD, .lr = 0.5f},
                      .seed = 9,
                      .memory_bytes = 2048,
                      .max_message_bytes = 64 << 10};
    s.srv = ps_server_create(&pc, s.router, NULL, err, sizeof err);
    EXPECT(s.srv != NULL, "create with a budget: %s", err);
    s.arg.srv = s.srv;
    pthread_create(&s.th, NULL, serve, &s.arg);
    d = client(s.endpoint);
    uint64_t many[64];
    for (int i = 0; i < 64; i++)
        many[i] = (uint64_t)i * 1000;
    sparse_request(d, TESSERA__KIND__KIND_SPARSE_PULL, 0, many, 64, TESSERA__DTYPE__DTYPE_U64, 1, NULL, 4, 0,
                   0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED,
           "over the budget: code %d", code);
    request(d, TESSERA__KIND__KIND_PING, 0, 0, 0, NULL, 0, 0);
    EXPECT(reply(d, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_OK, "the shard still answers");
    zmq_close(d);
    stop(&s);
    shard_map_free(&map);
    model_spec_free(&spec);
    spec = dense_spec;
    map = dense_map;
}

/* A LAYER_FWD (x) or LAYER_BWD (x, dy) of tensor t; returns the reply's kind with its floats in out. */
static int layer_call(void *d, Tessera__Kind kind, int sender, int64_t clock, uint32_t t, const float *x,
                      uint64_t batch, uint64_t in, const float *dy, uint64_t out_w, float *out, size_t *n,
                      int *code) {
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.sender = sender;
    h.clock = clock;
    h.request_id = 1;
    h.tensor = t;
    Tessera__TensorDesc desc[2], *dp[2] = {&desc[0], &desc[1]};
    uint64_t shapes[4];
    wire_buf_t bufs[2];
    wire_desc_init(&desc[0], &shapes[0], t, NULL, 0, batch, in);
    bufs[0] = (wire_buf_t){x, desc[0].nbytes, NULL, NULL};
    if (dy) {
        wire_desc_init(&desc[1], &shapes[2], t, NULL, 0, batch, out_w);
        bufs[1] = (wire_buf_t){dy, desc[1].nbytes, NULL, NULL};
    }
    h.n_tensors = dy ? 2 : 1;
    h.tensors = dp;
    wire_send(d, NULL, &h, bufs, h.n_tensors);
    return reply(d, 2000, code, out, n);
}

/* A model-parallel linear weight (3 x 4): the shard computes x W^T and dy W, keeps each worker's dW
 * for the step, applies the workers' mean with the pushes, and never sends the weight. */
static void test_model_parallel(void) {
    model_spec_t saved = spec;
    shard_map_t saved_map = map;
    job_config_t cfg;
    config_defaults(&cfg);
    cfg.input_dim = 4;
    cfg.n_layers = 2;
    cfg.layers[0] = (layer_cfg_t){.name = "fc", .type = "linear", .out = 3, .model_parallel = 1};
    cfg.layers[1] = (layer_cfg_t){.name = "loss", .type = "softmax_xent"};
    char err[256];
    EXPECT(model_spec_init(&spec, &cfg, err, sizeof err) == 0, "spec: %s", err);
    EXPECT(spec.tensors[0].remote && !spec.tensors[1].remote && spec.n_floats == 3 &&
               spec.remote_floats == 12,
           "the weight is remote, the bias local");
    uint64_t rows[2] = {3, 3};
    shard_map_init(&map, rows, 2, 1);
    shard_t s;
    shard_start(&s, 0, 2, 0);
    void *w0 = client(s.endpoint), *w1 = client(s.endpoint);
    int code;
    float W[12], out[64];
    size_t n;
    model_spec_init_rows(&spec, 0, 0, 3, 9, W);
    request(w0, TESSERA__KIND__KIND_PULL, 0, 0, 0, NULL, 0, 0);
    EXPECT(reply(w0, 2000, &code, out, &n) == TESSERA__KIND__KIND_PARAMS && n == 3,
           "a pull sends the bias only");
    const float x[8] = {1, 2, 3, 4, -1, 0, 0.5f, 2}, dy[6] = {1, 0, -1, 0.5f, 2, 0};
    EXPECT(layer_call(w0, TESSERA__KIND__KIND_LAYER_FWD, 0, 0, 0, x, 2, 4, NULL, 0, out, &n, &code) ==
                   TESSERA__KIND__KIND_ACTIVATIONS &&
               n == 6,
           "LAYER_FWD answers [2, 3]");
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 3; j++) {
            float y = 0;
            for (int i = 0; i < 4; i++)
                y += x[b * 4 + i] * W[j * 4 + i];
            EXPECT_NEAR(out[b * 3 + j], y, 1e-5);
        }
    EXPECT(layer_call(w0, TESSERA__KIND__KIND_LAYER_BWD, 0, 0, 0, x, 2, 4, dy, 3, out, &n, &code) ==
                   TESSERA__KIND__KIND_ACTIVATIONS &&
               n == 8,
           "LAYER_BWD answers dx [2, 4]");
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 4; i++) {
            float v = 0;
            for (int j = 0; j < 3; j++)
                v += dy[b * 3 + j] * W[j * 4 + i];
            EXPECT_NEAR(out[b * 4 + i], v, 1e-5);
        }
    EXPECT(layer_call(w0, TESSERA__KIND__KIND_LAYER_BWD, 0, 0, 0, x, 2, 4, dy, 3, out, &n, &code) ==
                   TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
           "a second backward pass of the same step is refused");
    EXPECT(layer_call(w0, TESSERA__KIND__KIND_LAYER_FWD, 0, 0, 0, x, 2, 3, NULL, 0, out, &n, &code) ==
                   TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
           "x of the wrong width is refused");
    EXPECT(layer_call(w0, TESSERA__KIND__KIND_LAYER_FWD, 0, 0, 1, x, 2, 1, NULL, 0, out, &n, &code) ==
                   TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
           "a data-parallel tensor has no LAYER_FWD");
    float zero = 0;
    request(w1, TESSERA__KIND__KIND_PUSH_PULL, 1, 0, 0, &zero, 0, 0);
    EXPECT(reply(w1, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
           "a push before the worker's backward pass is refused");
    /* Worker 1's dy is zero: the step applies the mean of (dW0, 0) with SGD lr 0.5. */
    const float dy0[6] = {0};
    EXPECT(layer_call(w1, TESSERA__KIND__KIND_LAYER_BWD, 1, 0, 0, x, 2, 4, dy0, 3, out, &n, &code) ==
               TESSERA__KIND__KIND_ACTIVATIONS,
           "worker 1's backward pass");
    request(w0, TESSERA__KIND__KIND_PUSH_PULL, 0, 0, 0, &zero, 0, 0);
    request(w1, TESSERA__KIND__KIND_PUSH_PULL, 1, 0, 0, &zero, 0, 0);
    EXPECT(reply(w0, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_PARAMS, "step applied (worker 0)");
    EXPECT(reply(w1, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_PARAMS, "step applied (worker 1)");
    const float e0[4] = {1, 0, 0, 0};
    EXPECT(layer_call(w0, TESSERA__KIND__KIND_LAYER_FWD, 0, 1, 0, e0, 1, 4, NULL, 0, out, &n, &code) ==
               TESSERA__KIND__KIND_ACTIVATIONS,
           "forward after the step");
    for (int j = 0; j < 3; j++) { /* column 0 of W - 0.5 * mean(dW): dW0 = dy^T x */
        float dw = dy[j] * x[0] + dy[3 + j] * x[4];
        EXPECT_NEAR(out[j], W[j * 4] - 0.5f * dw / 2, 1e-5);
    }
    zmq_close(w0);
    zmq_close(w1);
    stop(&s);
    shard_map_free(&map);
    model_spec_free(&spec);
    spec = saved;
    map = saved_map;
}

/* ---- local exchange: ATTACH and in_region slices ---- */

/* ATTACH from worker 0; returns the reply's attached (or -1: no OK), its reason into why. */
static int attach(void *d, const char *path, uint64_t bytes, const char *key, char *why, size_t whylen) {
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_ATTACH);
    h.request_id = 7;
    h.sender = 0;
    h.path = (char *)path;
    h.region_bytes = bytes;
    h.host_key = (char *)key;
    wire_send(d, NULL, &h, NULL, 0);
    zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 2000) != 1) return -1;
    wire_msg_t m;
    Tessera__ErrorCode c;
    char err[256];
    int rc = wire_recv(d, 0, 1 << 20, &m, &c, err, sizeof err);
    int attached = rc || m.hdr->kind != TESSERA__KIND__KIND_OK ? -1 : (int)m.hdr->attached;
    snprintf(why, whylen, "%s", !rc && m.hdr->error_message ? m.hdr->error_message : "");
    wire_msg_free(&m);
    return attached;
}

/* A request of `kind` from worker 0 with shard k's slices in_region (empty frames); `id` overrides the
 * first tensor's id when >= 0. */
static void push_in_region(void *d, Tessera__Kind kind, int64_t clock, int k, int id) {
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.sender = 0;
    h.clock = clock;
    h.request_id = 1;
    Tessera__TensorDesc desc[8], *dp[8];
    uint64_t shapes[16];
    wire_buf_t bufs[8];
    int nt = 0;
    for (int t = 0; t < spec.n_tensors; t++) {
        row_range_t r = shard_map_range(&map, t, k);
        if (r.row_end == r.row_begin) continue;
        wire_desc_init(&desc[nt], &shapes[2 * nt], (uint32_t)(nt == 0 && id >= 0 ? id : t), NULL, r.row_begin,
                       r.row_end - r.row_begin, spec.tensors[t].cols);
        desc[nt].in_region = 1;
        dp[nt] = &desc[nt];
        bufs[nt] = (wire_buf_t){NULL, 0, NULL, NULL};
        nt++;
    }
    h.n_tensors = (size_t)nt;
    h.tensors = dp;
    wire_send(d, NULL, &h, bufs, (size_t)nt);
}

/* Receives a PARAMS reply; returns how many of its descriptors were in_region (-1: no PARAMS). */
static int params_in_region(void *d) {
    zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 2000) != 1) return -1;
    wire_msg_t m;
    Tessera__ErrorCode c;
    char err[256];
    int rc = wire_recv(d, 0, 1 << 20, &m, &c, err, sizeof err), n = -1;
    if (!rc && m.hdr->kind == TESSERA__KIND__KIND_PARAMS) {
        n = 0;
        for (size_t i = 0; i < m.hdr->n_tensors; i++)
            n += m.hdr->tensors[i]->in_region && zmq_msg_size(&m.frames[i]) == 0;
    }
    wire_msg_free(&m);
    return n;
}

static void test_local_exchange(void) {
    shard_t s;
    shard_start(&s, 1, 1, 0);
    void *w = client(s.endpoint), *other = client(s.endpoint);
    int code;
    char key[XREGION_KEY_LEN], why[512], err[256];
    xregion_host_key(key);
    size_t bytes = xregion_bytes(spec.n_floats);
    xregion_t r;
    EXPECT(xregion_create(&r, bytes, err, sizeof err) == 0, "region: %s", err);
    float *params = r.base, *grads = params + xregion_grads_offset(spec.n_floats);

    push_in_region(w, TESSERA__KIND__KIND_PUSH_PULL, 0, 1, -1);
    EXPECT(reply(w, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_FAILED_PRECONDITION,
           "in_region before ATTACH is refused");
    EXPECT(attach(w, r.path, bytes, "other-host/net:1", why, sizeof why) == 0 && strstr(why, "another host"),
           "another host's worker is not attached (%s)", why);
    EXPECT(attach(w, r.path, bytes + 4096, key, why, sizeof why) == 0 && strstr(why, "bytes"),
           "a region of the wrong size is refused (%s)", why);
    EXPECT(attach(w, "/nonexistent/region", bytes, key, why, sizeof why) == 0 && strstr(why, "cannot open"),
           "a path that does not open is refused (%s)", why);
    char fifo[] = "/tmp/tessera-fifo-XXXXXX"; /* opened without blocking the shard, then refused */
    EXPECT(mkdtemp(fifo) != NULL, "temporary directory");
    char fifo_path[64];
    snprintf(fifo_path, sizeof fifo_path, "%s/f", fifo);
    EXPECT(mkfifo(fifo_path, 0600) == 0, "mkfifo");
    EXPECT(attach(w, fifo_path, bytes, key, why, sizeof why) == 0 && strstr(why, "not a Tessera"),
           "a FIFO is refused (%s)", why);
    unlink(fifo_path);
    rmdir(fifo);
    char file[] = "/tmp/tessera-xregion-XXXXXX"; /* a file of the right size, not a region: never mapped */
    int fd = mkstemp(file);
    EXPECT(fd >= 0 && ftruncate(fd, (off_t)bytes) == 0, "temporary file");
    char via[64];
    snprintf(via, sizeof via, "/proc/self/fd/%d", fd);
    EXPECT(attach(w, file, bytes, key, why, sizeof why) == 0 && strstr(why, "not a Tessera"),
           "a plain file is refused (%s)", why);
    EXPECT(attach(w, via, bytes, key, why, sizeof why) == 0 && strstr(why, "not a Tessera"),
           "a plain file through /proc is refused (%s)", why);
    close(fd);
    unlink(file);
    int mfd = memfd_create("tessera-exchange", MFD_CLOEXEC); /* the right name and size, unsealed */
    EXPECT(mfd >= 0 && ftruncate(mfd, (off_t)bytes) == 0, "memfd");
    snprintf(via, sizeof via, "/proc/%ld/fd/%d", (long)getpid(), mfd);
    EXPECT(attach(w, via, bytes, key, why, sizeof why) == 0 && strstr(why, "not sealed"),
           "an unsealed memfd is refused (%s)", why);
    close(mfd);
    EXPECT(attach(w, r.path, bytes, key, why, sizeof why) == 1, "the same host's region is attached (%s)",
           why);

    /* A pull: the parameters arrive in the region, the frames empty; a non-worker gets them in frames. */
    float p0[64];
    size_t n0;
    request(other, TESSERA__KIND__KIND_PULL, -1, 0, 1, NULL, 0, 0);
    EXPECT(reply(other, 2000, &code, p0, &n0) == TESSERA__KIND__KIND_PARAMS, "pull by a non-worker");
    request(w, TESSERA__KIND__KIND_PULL, 0, 0, 1, NULL, 0, 0);
    EXPECT(params_in_region(w) == 2, "the worker's pull answered with 2 in_region slices");
    size_t at = 0;
    for (int t = 0; t < spec.n_tensors; t++) {
        row_range_t rr = shard_map_range(&map, t, 1);
        size_t off = spec.tensors[t].offset + rr.row_begin * spec.tensors[t].cols;
        for (size_t i = 0; i < (rr.row_end - rr.row_begin) * spec.tensors[t].cols; i++, at++) {
            EXPECT(params[off + i] == p0[at], "tensor %d float %zu in the region: %g, pulled %g", t, i,
                   params[off + i], p0[at]);
            grads[off + i] = 2.0f;
        }
    }
    EXPECT(at == n0 && n0 > 0, "%zu of %zu floats checked", at, n0);

    /* A push read from the region: SGD (lr 0.5) steps by 1.0, written back into the region. */
    push_in_region(w, TESSERA__KIND__KIND_PUSH_PULL, 0, 1, 7);
    EXPECT(reply(w, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
           "an in_region slice of no tensor is refused");
    push_in_region(w, TESSERA__KIND__KIND_PUSH_PULL, 0, 1, -1);
    EXPECT(params_in_region(w) == 2, "the push answered in_region");
    at = 0;
    for (int t = 0; t < spec.n_tensors; t++) {
        row_range_t rr = shard_map_range(&map, t, 1);
        size_t off = spec.tensors[t].offset + rr.row_begin * spec.tensors[t].cols;
        for (size_t i = 0; i < (rr.row_end - rr.row_begin) * spec.tensors[t].cols; i++, at++)
            EXPECT_NEAR(params[off + i], p0[at] - 1.0f, 1e-6);
    }
    /* While a push of the worker waits (BSP, 2 workers would; here: a part held for the push), it cannot
     * attach again: the held frames may be views of its region. */
    push_in_region(w, TESSERA__KIND__KIND_PUSH_PART, 1, 1, -1);
    EXPECT(params_in_region(w) == 2, "a part answered in_region");
    EXPECT(attach(w, r.path, bytes, key, why, sizeof why) == -1 && strstr(why, "in flight"),
           "no second ATTACH while a part is held (%s)", why);
    /* in_region with bytes in the frame is malformed. */
    float g = 1.0f;
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_PUSH_PULL);
    h.sender = 0;
    h.clock = 1;
    h.request_id = 2;
    Tessera__TensorDesc d;
    uint64_t shape[2];
    wire_desc_init(&d, shape, 0, NULL, 0, 1, 1);
    d.in_region = 1;
    Tessera__TensorDesc *dp = &d;
    h.n_tensors = 1;
    h.tensors = &dp;
    wire_buf_t b = {&g, sizeof g, NULL, NULL};
    wire_send(w, NULL, &h, &b, 1);
    EXPECT(reply(w, 2000, &code, NULL, NULL) == TESSERA__KIND__KIND_ERROR &&
               code == TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
           "in_region with a full frame is malformed");
    zmq_close(w);
    zmq_close(other);
    stop(&s);
    xregion_close(&r); /* after the shard let go of its mapping */
}

int main(void) {
    job_config_t cfg;
    config_defaults(&cfg);
    cfg.input_dim = 4;
    cfg.n_layers = 2;
    cfg.layers[0] = (layer_cfg_t){.name = "fc", .type = "linear", .out = 3};
    cfg.layers[1] = (layer_cfg_t){.name = "loss", .type = "softmax_xent"};
    char err[256];
    EXPECT(model_spec_init(&spec, &cfg, err, sizeof err) == 0, "spec: %s", err);
    uint64_t rows[2] = {3, 3};
    shard_map_init(&map, rows, 2, 2);
    ctx = zmq_ctx_new();
    test_robustness();
    test_bsp();
    test_ssp();
    test_cut_fence();
    test_push_parts();
    test_sparse();
    test_model_parallel();
    test_local_exchange();
    zmq_ctx_term(ctx);
    shard_map_free(&map);
    model_spec_free(&spec);
    EXPECT_DONE();
}
