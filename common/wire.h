/* Wire framing: a protobuf-c Header frame plus raw tensor frames (see proto/tessera.proto). */
#ifndef TESSERA_WIRE_H
#define TESSERA_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "tessera.pb-c.h"

#define WIRE_MAX_TENSOR_FRAMES 4096
#define WIRE_MAX_HEADER_BYTES  (1u << 20)

/* One received message. The header and frames are owned by it; free with wire_msg_free. */
typedef struct {
    zmq_msg_t identity; /* ROUTER peer identity, valid when has_identity */
    int has_identity;
    Tessera__Header *hdr; /* NULL when frame 0 was not a valid header */
    size_t nframes;       /* tensor frames (frames 1..n) */
    zmq_msg_t *frames;
    size_t frame_bytes; /* the tensor frames' bytes as they came (before bfloat16 frames were widened) */
} wire_msg_t;

/* A tensor frame to send. With `ffn` set, ownership of `data` passes to ZeroMQ, which calls
 * ffn(data, hint) when done; with `ffn` NULL the caller keeps `data` alive and unchanged until the
 * peer has answered (the protocol guarantees this for request/reply pairs). */
typedef struct {
    const void *data;
    size_t nbytes;
    zmq_free_fn *ffn;
    void *hint;
} wire_buf_t;

/* Receives one whole multipart message from `sock` (blocking; poll first) and validates it: the
 * header parses, carries the current protocol version, and describes exactly the tensor frames that
 * follow (F32, or U64 ids in SPARSE_PULL and PUSH_PULL; 2-D shape, byte length equal to shape and frame
 * size), all within `max_bytes`. Returns 0; -TS_EPROTO for a malformed message (m->has_identity tells whether
 * it can be answered, *code gets the error code to answer with, `err` the message); -TS_EIO for a socket
 * error. On every return, `m` must be released with wire_msg_free. */
int wire_recv(void *sock, int is_router, size_t max_bytes, wire_msg_t *m, Tessera__ErrorCode *code, char *err,
              size_t errlen);

/* wire_recv, but with `keep_bf16` bfloat16 frames stay as they came (DTYPE_BF16, 2 bytes each) for a
 * receiver that widens them itself (a device worker's parameters). */
int wire_recv_keep(void *sock, int is_router, size_t max_bytes, int keep_bf16, wire_msg_t *m,
                   Tessera__ErrorCode *code, char *err, size_t errlen);

void wire_msg_free(wire_msg_t *m);

/* Describes a float32 row block [row_begin, row_begin + rows) x cols of tensor `id` (name may be
 * NULL); `shape` (2 entries, caller-owned) must live as long as `d`. */
void wire_desc_init(Tessera__TensorDesc *d, uint64_t shape[2], uint32_t id, const char *name,
                    uint64_t row_begin, uint64_t rows, uint64_t cols);

/* Describes n row ids (U64 [n, 1]) of sparse table `table`; `shape` as for wire_desc_init. */
/* In a PREDICT's ids tensor: this slot has no id (an empty bag). */
#define PREDICT_ID_MISSING UINT64_MAX

void wire_desc_ids(Tessera__TensorDesc *d, uint64_t shape[2], uint32_t table, uint64_t n);

/* Sets the protocol version and kind on a fresh header. */
void wire_header_init(Tessera__Header *hdr, Tessera__Kind kind);

/* Sends `hdr` then `n` tensor frames (zero-copy), prefixed by `identity` when not NULL (ROUTER).
 * Returns 0 or -TS_EIO. Frames with an ffn are released even when sending fails. */
int wire_send(void *sock, zmq_msg_t *identity, const Tessera__Header *hdr, const wire_buf_t *bufs, size_t n);

/* Sends an error reply to request `request_id`. Returns 0 or -TS_EIO. */
int wire_send_error(void *sock, zmq_msg_t *identity, uint64_t request_id, Tessera__ErrorCode code,
                    const char *message);

/* Sends a reply with no payload of `kind` (KIND_OK usually). */
int wire_send_simple(void *sock, zmq_msg_t *identity, uint64_t request_id, Tessera__Kind kind);

/* ZeroMQ keeps small frames inside the message, where floats may be misaligned: such a frame is
 * moved to an aligned copy so it can be read as float[]. Returns 0 or -TS_ENOMEM. */
int wire_align_frame(zmq_msg_t *msg);

/* Whether a message is waiting on `sock` (ZMQ_EVENTS): lets a loop drain a socket after one poll. */
int wire_readable(void *sock);

const char *wire_kind_name(int kind);
const char *wire_error_name(int code);

#endif
