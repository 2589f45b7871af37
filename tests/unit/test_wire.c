/* Framing: a header plus tensor frames round-trips byte for byte, zero-copy; truncated, oversized
 * and malformed messages are rejected with the right code, and the socket stays usable. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "expect.h"
#include "util.h"
#include "wire.h"

#define CUR TESSERA__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT

static int freed;
static void on_free(void *data, void *hint) {
    (void)data;
    (void)hint;
    freed++;
}

/* Sends raw frames (the last one without SNDMORE). */
static void send_raw(void *s, const void *const *data, const size_t *len, int n) {
    for (int i = 0; i < n; i++)
        zmq_send(s, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0);
}

/* Packs a header with `nt` tensor descriptors of shape rows x cols. */
static size_t pack_header(uint8_t *out, uint32_t version, int nt, uint64_t rows, uint64_t cols,
                          uint64_t nbytes, int dtype) {
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_PUSH_PULL);
    h.version = version;
    Tessera__TensorDesc d[4], *dp[4];
    uint64_t shape[2] = {rows, cols};
    for (int i = 0; i < nt; i++) {
        tessera__tensor_desc__init(&d[i]);
        d[i].dtype = dtype;
        d[i].n_shape = 2;
        d[i].shape = shape;
        d[i].nbytes = nbytes;
        dp[i] = &d[i];
    }
    h.n_tensors = (size_t)nt;
    h.tensors = dp;
    return tessera__header__pack(&h, out);
}

static int recv_expect(void *router, Tessera__ErrorCode want, const char *what) {
    wire_msg_t m;
    Tessera__ErrorCode code;
    char err[256] = "";
    int rc = wire_recv(router, 1, 1 << 20, &m, &code, err, sizeof err);
    if (want == TESSERA__ERROR_CODE__ERR_NONE)
        EXPECT(rc == 0, "%s: expected success, got %d (%s)", what, rc, err);
    else {
        EXPECT(rc == -TS_EPROTO, "%s: expected rejection, got %d", what, rc);
        EXPECT(code == want, "%s: code %s, expected %s (%s)", what, wire_error_name(code),
               wire_error_name(want), err);
        EXPECT(m.has_identity, "%s: identity lost, cannot answer", what);
        fprintf(stderr, "rejected as expected: %-32s %s: %s\n", what, wire_error_name(code), err);
    }
    wire_msg_free(&m);
    return rc;
}

int main(void) {
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER), *dealer = zmq_socket(ctx, ZMQ_DEALER);
    zmq_bind(router, "inproc://wire");
    zmq_connect(dealer, "inproc://wire");

    /* Round trip. */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1, 0.5f, 1e30f};
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_PUSH_PULL);
    h.request_id = 77;
    h.sender = 3;
    h.clock = 12;
    Tessera__TensorDesc d[2], *dp[2] = {&d[0], &d[1]};
    uint64_t sa[2] = {2, 3}, sb[2] = {3, 1};
    tessera__tensor_desc__init(&d[0]);
    tessera__tensor_desc__init(&d[1]);
    d[0].id = 4;
    d[0].name = "fc.weight";
    d[0].dtype = TESSERA__DTYPE__DTYPE_F32;
    d[0].n_shape = 2;
    d[0].shape = sa;
    d[0].row_begin = 10;
    d[0].nbytes = sizeof a;
    d[1].id = 5;
    d[1].name = "fc.bias";
    d[1].dtype = TESSERA__DTYPE__DTYPE_F32;
    d[1].n_shape = 2;
    d[1].shape = sb;
    d[1].nbytes = sizeof b;
    h.n_tensors = 2;
    h.tensors = dp;
    wire_buf_t bufs[2] = {{a, sizeof a, on_free, NULL}, {b, sizeof b, on_free, NULL}};
    EXPECT(wire_send(dealer, NULL, &h, bufs, 2) == 0, "send");
    wire_msg_t m;
    Tessera__ErrorCode code;
    char err[256];
    EXPECT(wire_recv(router, 1, 1 << 20, &m, &code, err, sizeof err) == 0, "recv: %s", err);
    EXPECT(m.hdr && m.hdr->request_id == 77 && m.hdr->sender == 3 && m.hdr->clock == 12, "header fields");
    EXPECT(m.nframes == 2, "frames %zu", m.nframes);
    if (m.nframes == 2) {
        EXPECT(!memcmp(zmq_msg_data(&m.frames[0]), a, sizeof a), "frame 0 bytes");
        EXPECT(!memcmp(zmq_msg_data(&m.frames[1]), b, sizeof b), "frame 1 bytes");
        EXPECT(!strcmp(m.hdr->tensors[0]->name, "fc.weight") && m.hdr->tensors[0]->row_begin == 10, "desc 0");
    }
    /* The reply path: the router answers and the dealer gets exactly that. */
    EXPECT(wire_send_error(router, &m.identity, 77, TESSERA__ERROR_CODE__ERR_NOT_FOUND, "nope") == 0,
           "reply");
    wire_msg_free(&m);
    wire_msg_t r;
    EXPECT(wire_recv(dealer, 0, 1 << 20, &r, &code, err, sizeof err) == 0, "reply recv");
    EXPECT(r.hdr && r.hdr->kind == TESSERA__KIND__KIND_ERROR &&
               r.hdr->error_code == TESSERA__ERROR_CODE__ERR_NOT_FOUND &&
               !strcmp(r.hdr->error_message, "nope"),
           "error reply fields");
    wire_msg_free(&r);
    EXPECT(freed == 2, "zero-copy buffers released %d times, expected 2", freed);

    uint8_t hdr[4096];
    float frame[6] = {0};
    size_t n;
    { /* random bytes as a header */
        uint8_t junk[64];
        for (int i = 0; i < 64; i++)
            junk[i] = (uint8_t)(i * 37 + 11);
        const void *f[1] = {junk};
        size_t l[1] = {sizeof junk};
        send_raw(dealer, f, l, 1);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "random bytes");
    }
    { /* an empty (all-defaults) header has protocol version 0 */
        const void *f[1] = {""};
        size_t l[1] = {0};
        send_raw(dealer, f, l, 1);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_VERSION_MISMATCH, "empty header");
    }
    { /* wrong protocol version */
        n = pack_header(hdr, 99, 0, 0, 0, 0, 1);
        const void *f[1] = {hdr};
        size_t l[1] = {n};
        send_raw(dealer, f, l, 1);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_VERSION_MISMATCH, "version 99");
    }
    { /* truncated: two tensors described, one frame sent */
        n = pack_header(hdr, CUR, 2, 2, 3, 24, 1);
        const void *f[2] = {hdr, frame};
        size_t l[2] = {n, 24};
        send_raw(dealer, f, l, 2);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "missing frame");
    }
    { /* truncated frame: header says 24 bytes, frame has 20 */
        n = pack_header(hdr, CUR, 1, 2, 3, 24, 1);
        const void *f[2] = {hdr, frame};
        size_t l[2] = {n, 20};
        send_raw(dealer, f, l, 2);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "short frame");
    }
    { /* shape disagrees with nbytes */
        n = pack_header(hdr, CUR, 1, 4, 3, 24, 1);
        const void *f[2] = {hdr, frame};
        size_t l[2] = {n, 24};
        send_raw(dealer, f, l, 2);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "shape vs bytes");
    }
    { /* overflowing shape */
        n = pack_header(hdr, CUR, 1, UINT64_MAX / 2, 3, 24, 1);
        const void *f[2] = {hdr, frame};
        size_t l[2] = {n, 24};
        send_raw(dealer, f, l, 2);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "overflowing shape");
    }
    { /* unknown dtype */
        n = pack_header(hdr, CUR, 1, 2, 3, 24, 0);
        const void *f[2] = {hdr, frame};
        size_t l[2] = {n, 24};
        send_raw(dealer, f, l, 2);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "dtype");
    }
    { /* extra frame beyond the descriptors */
        n = pack_header(hdr, CUR, 1, 2, 3, 24, 1);
        const void *f[3] = {hdr, frame, frame};
        size_t l[3] = {n, 24, 24};
        send_raw(dealer, f, l, 3);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "extra frame");
    }
    { /* oversized message: larger than the receiver's limit */
        size_t big = (1 << 20) + 64;
        uint8_t *payload = calloc(1, big);
        n = pack_header(hdr, CUR, 1, big / 4 / 16, 16, big / 4 / 16 * 16 * 4, 1);
        const void *f[2] = {hdr, payload};
        size_t l[2] = {n, big / 4 / 16 * 16 * 4};
        send_raw(dealer, f, l, 2);
        recv_expect(router, TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "oversized");
        free(payload);
    }
    { /* bfloat16: round to nearest, ties to even; NaN stays NaN; widening is exact */
        float in[9] = {1.0f,
                       1.00390625f /* 1 + 2^-8: a tie, to even (1) */,
                       1.01171875f /* 1 + 3 * 2^-8: a
tie, to even (1 + 2^-6) */
                       ,
                       1.005859375f /* above the tie: up */,
                       -0.0f,
                       INFINITY,
                       NAN,
                       3.4028235e38f /* FLT_MAX: rounds up to infinity */,
                       -2.5e-39f};
        float want[9] = {1.0f, 1.0f, 1.015625f, 1.0078125f, -0.0f, INFINITY, NAN, INFINITY, -2.4795584e-39f};
        uint16_t bf[9];
        float out[9];
        bf16_from_f32(bf, in, 9);
        f32_from_bf16(out, bf, 9);
        for (int i = 0; i < 9; i++)
            EXPECT(isnan(want[i]) ? isnan(out[i]) : out[i] == want[i],
                   "bf16 round trip of %g: %g, expected %g", (double)in[i], (double)out[i], (double)want[i]);
        EXPECT(signbit(out[4]), "-0 lost its sign");
    }
    { /* a BF16 gradient frame in a push arrives widened to F32, exactly */
        float g[6] = {1.5f, -2.25f, 0.0078125f, 3.0e20f, -1.0e-20f, 7.0f}, gw[6];
        uint16_t gb[6];
        bf16_from_f32(gb, g, 6);
        f32_from_bf16(gw, gb, 6);
        Tessera__Header ph;
        wire_header_init(&ph, TESSERA__KIND__KIND_PUSH_PULL);
        Tessera__TensorDesc pd, *pdp = &pd;
        uint64_t ps[2] = {2, 3};
        tessera__tensor_desc__init(&pd);
        pd.dtype = TESSERA__DTYPE__DTYPE_BF16;
        pd.n_shape = 2;
        pd.shape = ps;
        pd.nbytes = sizeof gb;
        ph.n_tensors = 1;
        ph.tensors = &pdp;
        wire_buf_t pb = {gb, sizeof gb, NULL, NULL};
        EXPECT(wire_send(dealer, NULL, &ph, &pb, 1) == 0, "send bf16");
        wire_msg_t bm;
        EXPECT(wire_recv(router, 1, 1 << 20, &bm, &code, err, sizeof err) == 0, "recv bf16: %s", err);
        EXPECT(bm.nframes == 1 && zmq_msg_size(&bm.frames[0]) == sizeof gw, "bf16 frame not widened");
        EXPECT(bm.hdr && bm.hdr->tensors[0]->dtype == TESSERA__DTYPE__DTYPE_F32 &&
                   bm.hdr->tensors[0]->nbytes == sizeof gw,
               "widened frame's descriptor");
        if (bm.nframes == 1 && zmq_msg_size(&bm.frames[0]) == sizeof gw)
            EXPECT(!memcmp(zmq_msg_data(&bm.frames[0]), gw, sizeof gw), "widened values");
        wire_msg_free(&bm);
        /* ... but in anything other than a push or its reply it is refused */
        ph.kind = TESSERA__KIND__KIND_PULL;
        EXPECT(wire_send(dealer, NULL, &ph, &pb, 1) == 0, "send bf16 params");
        recv_expect(router, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "bf16 outside a push");
    }
    /* After all that, a valid message still arrives intact. */
    bufs[0] = (wire_buf_t){a, sizeof a, NULL, NULL};
    h.n_tensors = 1;
    wire_send(dealer, NULL, &h, bufs, 1);
    EXPECT(recv_expect(router, TESSERA__ERROR_CODE__ERR_NONE, "valid after garbage") == 0, "still usable");

    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
    EXPECT_DONE();
}
