/* tessera-bench-null: the transport floor for the serving benchmark. Answers every PREDICT at once
 * with zero logits, through the same ZeroMQ sockets, framing and protobuf header as the router, but
 * with no queue, batching, model or version logic: latency against it is what the wire alone costs,
 * and the router's own overhead is the difference.  usage: tessera-bench-null ENDPOINT [OUTPUTS] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "wire.h"

static volatile sig_atomic_t stop;
static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void free_buffer(void *data, void *hint) {
    (void)hint;
    free(data);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: tessera-bench-null ENDPOINT [OUTPUTS (default 10)]\n");
        return 2;
    }
    uint64_t outputs = argc > 2 ? strtoull(argv[2], NULL, 10) : 10;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(sock, argv[1])) {
        fprintf(stderr, "tessera-bench-null: cannot bind %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
        return 1;
    }
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    while (!stop) {
        if (zmq_poll(&it, 1, 200) <= 0) continue;
        wire_msg_t m;
        Tessera__ErrorCode code;
        char err[256];
        if (wire_recv(sock, 1, 1u << 30, &m, &code, err, sizeof err) == 0) {
            Tessera__Header h;
            if (m.hdr->kind == TESSERA__KIND__KIND_PREDICT && m.nframes == 1) {
                uint64_t rows = m.hdr->tensors[0]->shape[0];
                wire_header_init(&h, TESSERA__KIND__KIND_PREDICTION);
                h.request_id = m.hdr->request_id;
                h.model_version = 1;
                h.batch_rows = (uint32_t)rows;
                Tessera__TensorDesc d, *dp = &d;
                uint64_t shape[2];
                wire_desc_init(&d, shape, 0, "logits", 0, rows, outputs);
                h.n_tensors = 1;
                h.tensors = &dp;
                wire_buf_t b = {calloc(rows * outputs + 1, sizeof(float)), rows * outputs * sizeof(float),
                                free_buffer, NULL};
                wire_send(sock, &m.identity, &h, &b, 1);
            } else {
                /* STATUS and the rest: the load tool only needs input_dim, from STATUS. */
                Tessera__ModelStatus st;
                tessera__model_status__init(&st);
                st.name = "null";
                st.input_dim = 784;
                st.outputs = (uint32_t)outputs;
                st.input_std = 1;
                st.default_version = 1;
                wire_header_init(&h, m.hdr->kind == TESSERA__KIND__KIND_STATUS ? TESSERA__KIND__KIND_STATUS
                                                                               : TESSERA__KIND__KIND_OK);
                h.request_id = m.hdr->request_id;
                h.status = m.hdr->kind == TESSERA__KIND__KIND_STATUS ? &st : NULL;
                wire_send(sock, &m.identity, &h, NULL, 0);
            }
        }
        wire_msg_free(&m);
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}
