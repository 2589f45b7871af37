#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "util.h"

void wire_header_init(Tessera__Header *hdr, Tessera__Kind kind) {
    tessera__header__init(hdr);
    hdr->version = TESSERA__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT;
    hdr->kind = kind;
    hdr->sender = -1;
}

void wire_desc_init(Tessera__TensorDesc *d, uint64_t shape[2], uint32_t id, const char *name,
                    uint64_t row_begin, uint64_t rows, uint64_t cols) {
    tessera__tensor_desc__init(d);
    shape[0] = rows;
    shape[1] = cols;
    d->id = id;
    d->name = (char *)(name ? name : "");
    d->dtype = TESSERA__DTYPE__DTYPE_F32;
    d->n_shape = 2;
    d->shape = shape;
    d->row_begin = row_begin;
    d->nbytes = rows * cols * sizeof(float);
}

void wire_desc_ids(Tessera__TensorDesc *d, uint64_t shape[2], uint32_t table, uint64_t n) {
    wire_desc_init(d, shape, table, NULL, 0, n, 1);
    d->dtype = TESSERA__DTYPE__DTYPE_U64;
    d->nbytes = n * sizeof(uint64_t);
}

void wire_msg_free(wire_msg_t *m) {
    if (!m) return;
    if (m->has_identity) zmq_msg_close(&m->identity);
    if (m->hdr) tessera__header__free_unpacked(m->hdr, NULL);
    for (size_t i = 0; i < m->nframes; i++)
        zmq_msg_close(&m->frames[i]);
    free(m->frames);
    memset(m, 0, sizeof *m);
}

/* A bfloat16 frame of `elems` values becomes the float32 frame it stands for (exact), so that what
 * reads it sees float32 only. */
static int widen_bf16(zmq_msg_t *f, Tessera__TensorDesc *d, uint64_t elems) {
    zmq_msg_t wide;
    if (zmq_msg_init_size(&wide, (size_t)elems * sizeof(float))) return -TS_ENOMEM;
    f32_from_bf16(zmq_msg_data(&wide), zmq_msg_data(f), (size_t)elems);
    zmq_msg_move(f, &wide); /* releases the bfloat16 frame */
    zmq_msg_close(&wide);
    d->dtype = TESSERA__DTYPE__DTYPE_F32;
    d->nbytes = elems * sizeof(float);
    return 0;
}

/* Reads and discards the remaining parts of a multipart message. */
static void drain(void *sock) {
    int more = 1;
    size_t len = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        int rc = zmq_msg_recv(&part, sock, 0);
        zmq_msg_close(&part);
        if (rc < 0) return;
    }
}

static int has_more(void *sock) {
    int more = 0;
    size_t len = sizeof more;
    return zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more;
}

#define PROTO_ERR(c, ...)                                                                                    \
    do {                                                                                                     \
        *code = (c);                                                                                         \
        snprintf(err, errlen, __VA_ARGS__);                                                                  \
        drain(sock);                                                                                         \
        return -TS_EPROTO;                                                                                   \
    } while (0)

int wire_recv(void *sock, int is_router, size_t max_bytes, wire_msg_t *m, Tessera__ErrorCode *code, char *err,
              size_t errlen) {
    return wire_recv_keep(sock, is_router, max_bytes, 0, m, code, err, errlen);
}

int wire_recv_keep(void *sock, int is_router, size_t max_bytes, int keep_bf16, wire_msg_t *m,
                   Tessera__ErrorCode *code, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    *code = TESSERA__ERROR_CODE__ERR_NONE;
    if (is_router) {
        zmq_msg_init(&m->identity);
        if (zmq_msg_recv(&m->identity, sock, 0) < 0) {
            zmq_msg_close(&m->identity);
            snprintf(err, errlen, "recv: %s", zmq_strerror(zmq_errno()));
            return -TS_EIO;
        }
        m->has_identity = 1;
        if (!has_more(sock)) PROTO_ERR(TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "empty message");
    }
    zmq_msg_t head;
    zmq_msg_init(&head);
    if (zmq_msg_recv(&head, sock, 0) < 0) {
        zmq_msg_close(&head);
        snprintf(err, errlen, "recv: %s", zmq_strerror(zmq_errno()));
        return -TS_EIO;
    }
    size_t hlen = zmq_msg_size(&head);
    if (hlen > WIRE_MAX_HEADER_BYTES) {
        zmq_msg_close(&head);
        PROTO_ERR(TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "header of %zu bytes exceeds %u", hlen,
                  WIRE_MAX_HEADER_BYTES);
    }
    m->hdr = tessera__header__unpack(NULL, hlen, zmq_msg_data(&head));
    zmq_msg_close(&head);
    if (!m->hdr)
        PROTO_ERR(TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "header frame is not a valid protobuf Header");
    if (m->hdr->version != TESSERA__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT)
        PROTO_ERR(TESSERA__ERROR_CODE__ERR_VERSION_MISMATCH, "protocol version %u, expected %d",
                  m->hdr->version, TESSERA__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT);
    size_t nt = m->hdr->n_tensors;
    if (nt > WIRE_MAX_TENSOR_FRAMES)
        PROTO_ERR(TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "%zu tensors exceed the limit of %d", nt,
                  WIRE_MAX_TENSOR_FRAMES);
    m->frames = calloc(nt ? nt : 1, sizeof *m->frames);
    if (!m->frames) PROTO_ERR(TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "out of memory");
    size_t total = hlen;
    while (has_more(sock)) {
        if (m->nframes == nt)
            PROTO_ERR(TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                      "header describes %zu tensors but more frames follow", nt);
        zmq_msg_t *f = &m->frames[m->nframes];
        zmq_msg_init(f);
        if (zmq_msg_recv(f, sock, 0) < 0) {
            zmq_msg_close(f);
            snprintf(err, errlen, "recv: %s", zmq_strerror(zmq_errno()));
            return -TS_EIO;
        }
        m->nframes++;
        total += zmq_msg_size(f);
        m->frame_bytes += zmq_msg_size(f);
        if (total > max_bytes)
            PROTO_ERR(TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "message exceeds %zu bytes", max_bytes);
    }
    if (m->nframes != nt)
        PROTO_ERR(TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                  "header describes %zu tensors but %zu frames follow", nt, m->nframes);
    /* Row ids (U64) travel only in the requests that carry them, bfloat16 only in pushes (gradients)
     * and their replies (parameters); everything else is float32. */
    int kind = m->hdr->kind;
    int ids_ok = kind == TESSERA__KIND__KIND_SPARSE_PULL || kind == TESSERA__KIND__KIND_PUSH_PULL ||
                 kind == TESSERA__KIND__KIND_PREDICT;
    int bf16_ok = kind == TESSERA__KIND__KIND_PUSH_PULL || kind == TESSERA__KIND__KIND_PUSH_PART ||
                  kind == TESSERA__KIND__KIND_PARAMS;
    for (size_t i = 0; i < nt; i++) {
        const Tessera__TensorDesc *d = m->hdr->tensors[i];
        int u64 = d->dtype == TESSERA__DTYPE__DTYPE_U64 && ids_ok;
        int bf16 = d->dtype == TESSERA__DTYPE__DTYPE_BF16 && bf16_ok;
        if (d->dtype != TESSERA__DTYPE__DTYPE_F32 && !u64 && !bf16)
            PROTO_ERR(TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "tensor %zu: unsupported dtype %d", i,
                      (int)d->dtype);
        if (d->n_shape != 2)
            PROTO_ERR(TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT, "tensor %zu: shape has %zu dims, expected 2",
                      i, d->n_shape);
        /* in_region (local exchange): float32 dense slices of pushes and their replies, the frame empty */
        if (d->in_region && (!bf16_ok || d->dtype != TESSERA__DTYPE__DTYPE_F32))
            PROTO_ERR(TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                      "tensor %zu: in_region is for float32 slices of PUSH_PULL, PUSH_PART and PARAMS", i);
        uint64_t elems, esize = u64 ? 8 : bf16 ? 2 : 4;
        size_t frame = d->in_region ? d->nbytes : zmq_msg_size(&m->frames[i]);
        if (d->in_region && zmq_msg_size(&m->frames[i]))
            PROTO_ERR(TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                      "tensor %zu: in_region, but its frame holds %zu bytes", i, zmq_msg_size(&m->frames[i]));
        if (__builtin_mul_overflow(d->shape[0], d->shape[1], &elems) || elems > SIZE_MAX / esize ||
            elems * esize != d->nbytes || d->nbytes != frame)
            PROTO_ERR(TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                      "tensor %zu: shape %llux%llu, nbytes %llu and frame size %zu disagree", i,
                      (unsigned long long)d->shape[0], (unsigned long long)d->shape[1],
                      (unsigned long long)d->nbytes, zmq_msg_size(&m->frames[i]));
        if (bf16 && !keep_bf16 && widen_bf16(&m->frames[i], m->hdr->tensors[i], elems))
            PROTO_ERR(TESSERA__ERROR_CODE__ERR_RESOURCE_EXHAUSTED, "out of memory");
    }
    return 0;
}

int wire_send(void *sock, zmq_msg_t *identity, const Tessera__Header *hdr, const wire_buf_t *bufs, size_t n) {
    int rc = 0;
    size_t i = 0;
    size_t hlen = tessera__header__get_packed_size(hdr);
    zmq_msg_t head;
    if (identity) {
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_copy(&id, identity) || zmq_msg_send(&id, sock, ZMQ_SNDMORE) < 0) {
            zmq_msg_close(&id);
            rc = -TS_EIO;
            goto release;
        }
    }
    if (zmq_msg_init_size(&head, hlen)) {
        rc = -TS_ENOMEM;
        goto release;
    }
    tessera__header__pack(hdr, zmq_msg_data(&head));
    if (zmq_msg_send(&head, sock, n ? ZMQ_SNDMORE : 0) < 0) {
        zmq_msg_close(&head);
        rc = -TS_EIO;
        goto release;
    }
    for (; i < n; i++) {
        zmq_msg_t f;
        /* zero-copy: ZeroMQ references the caller's buffer */
        if (zmq_msg_init_data(&f, (void *)bufs[i].data, bufs[i].nbytes, bufs[i].ffn, bufs[i].hint)) {
            rc = -TS_ENOMEM; /* ZeroMQ did not take the buffer: release it below */
            goto release;
        }
        if (zmq_msg_send(&f, sock, i + 1 < n ? ZMQ_SNDMORE : 0) < 0) {
            zmq_msg_close(&f); /* runs ffn */
            i++;
            rc = -TS_EIO;
            goto release;
        }
    }
    return 0;
release:
    if (rc == -TS_EIO) log_warn("send failed error=\"%s\"", zmq_strerror(zmq_errno()));
    for (; i < n; i++)
        if (bufs[i].ffn) bufs[i].ffn((void *)bufs[i].data, bufs[i].hint);
    return rc;
}

int wire_send_error(void *sock, zmq_msg_t *identity, uint64_t request_id, Tessera__ErrorCode code,
                    const char *message) {
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_ERROR);
    h.request_id = request_id;
    h.error_code = code;
    h.error_message = (char *)message;
    return wire_send(sock, identity, &h, NULL, 0);
}

int wire_send_simple(void *sock, zmq_msg_t *identity, uint64_t request_id, Tessera__Kind kind) {
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.request_id = request_id;
    return wire_send(sock, identity, &h, NULL, 0);
}

const char *wire_kind_name(int kind) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&tessera__kind__descriptor, kind);
    return v ? v->name : "KIND_INVALID";
}

const char *wire_error_name(int code) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&tessera__error_code__descriptor, code);
    return v ? v->name : "ERR_INVALID";
}

static void free_aligned(void *data, void *hint) {
    (void)hint;
    free(data);
}

int wire_align_frame(zmq_msg_t *msg) {
    void *data = zmq_msg_data(msg);
    size_t n = zmq_msg_size(msg);
    if ((uintptr_t)data % _Alignof(uint64_t) == 0) return 0; /* floats and row ids */
    void *copy = NULL;
    if (posix_memalign(&copy, 64, n ? n : 64)) return -TS_ENOMEM;
    memcpy(copy, data, n);
    zmq_msg_close(msg);
    if (zmq_msg_init_data(msg, copy, n, free_aligned, NULL)) {
        free(copy);
        zmq_msg_init(msg);
        return -TS_ENOMEM;
    }
    return 0;
}

int wire_readable(void *sock) {
    int events = 0;
    size_t len = sizeof events;
    return zmq_getsockopt(sock, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}
