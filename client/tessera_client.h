/* libtessera_client: the C client of a Tessera serving endpoint (`tessera serve`, or
 * `tessera train --serve`). Speaks the RPC of docs/serving-protocol.md over ZeroMQ.
 *
 *   tsc_client_t *c = tsc_connect("tcp://127.0.0.1:5555", err, sizeof err);
 *   tsc_result_t r;
 *   if (tsc_predict(c, "fashion_mlp", 0, x, rows, cols, &r) == TSC_OK)
 *       ... r.outputs[row * r.cols + k], r.version ...
 *   tsc_result_free(&r);
 *   tsc_close(c);
 *
 * A client is one connection and is not thread-safe: use one per thread. Calls block for at most the
 * client's timeout (tsc_set_timeout; default 5000 ms). */
#ifndef TESSERA_CLIENT_H
#define TESSERA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Outcomes: TSC_OK, or the server's error code (the ErrorCode values of proto/tessera.proto), or a
 * local failure. tsc_error() holds the message. */
enum {
    TSC_OK = 0,
    TSC_INVALID_ARGUMENT = 1,
    TSC_NOT_FOUND = 2,
    TSC_UNAVAILABLE = 3,
    TSC_RESOURCE_EXHAUSTED = 4,
    TSC_DEADLINE_EXCEEDED = 5,
    TSC_FAILED_PRECONDITION = 6,
    TSC_VERSION_MISMATCH = 7,
    TSC_INTERNAL = 8,
    TSC_TIMEOUT = 100, /* no reply within the client's timeout */
    TSC_IO = 101,      /* the connection or a local call failed */
};

typedef struct tsc_client tsc_client_t;

typedef struct {
    float *outputs; /* rows x cols, row-major (malloc'd; tsc_result_free) */
    size_t rows, cols;
    uint64_t version;    /* the model version that answered */
    uint64_t compute_us; /* model time of the batch the request ran in */
    uint32_t batch_rows; /* rows in that batch */
} tsc_result_t;

/* Connects to `endpoint` (tcp://HOST:PORT or ipc://PATH). NULL with a message on failure. ZeroMQ
 * connects lazily: an unreachable server shows up as TSC_TIMEOUT on the first call. */
tsc_client_t *tsc_connect(const char *endpoint, char *err, size_t errlen);
void tsc_close(tsc_client_t *c);

/* Per-call timeout (also sent as the request deadline); 0 < ms. */
void tsc_set_timeout(tsc_client_t *c, int ms);

/* Predicts `rows` inputs of `cols` floats each with `model` ("" or NULL: the served model) at
 * `version` (0: the server's default). Fills *out on TSC_OK. */
int tsc_predict(tsc_client_t *c, const char *model, uint64_t version, const float *x, size_t rows,
                size_t cols, tsc_result_t *out);
/* The same for a model with embedding tables: x holds the dense features [rows, cols] and ids the
 * categorical ids [rows, slots], one per slot (TSC_ID_MISSING for none); the server resolves the ids'
 * rows on its shards. */
#define TSC_ID_MISSING UINT64_MAX
int tsc_predict_ids(tsc_client_t *c, const char *model, uint64_t version, const float *x, size_t rows,
                    size_t cols, const uint64_t *ids, size_t slots, tsc_result_t *out);
void tsc_result_free(tsc_result_t *r);

/* TSC_OK when the server process answers. */
int tsc_live(tsc_client_t *c);
/* TSC_OK when `model` has a version available; TSC_UNAVAILABLE while loading. */
int tsc_ready(tsc_client_t *c, const char *model);
/* The status of `model` as JSON text (malloc'd; free it): versions, replicas, counters. */
int tsc_status_json(tsc_client_t *c, const char *model, char **json);

/* The served model's shape and the training job's input scaling (raw image bytes b become
 * (b / 255 - input_mean) / input_std), from a STATUS call. */
typedef struct {
    uint32_t input_dim, outputs;
    uint64_t default_version; /* 0 while no version is available */
    double input_mean, input_std;
    uint32_t categorical_slots; /* models with tables: ids per row that tsc_predict_ids takes */
} tsc_model_info_t;
int tsc_model_info(tsc_client_t *c, const char *model, tsc_model_info_t *info);

/* Pipelined predictions: many requests in flight on one client (one thread), as `tessera loadtest`
 * does. tsc_predict_send queues a request (x is copied) with the client's timeout as its deadline
 * and returns at once with its id. tsc_predict_recv waits up to timeout_ms (0: not at all) for the
 * next reply to any request and sets *request_id to the request it answers: TSC_OK with *out
 * filled; the server's error code; TSC_IO for a malformed reply (*request_id != 0) or a failed
 * socket (*request_id == 0); TSC_TIMEOUT when nothing arrived (*request_id == 0). The caller
 * matches ids and drops replies to requests it gave up on. Blocking calls on the same client drop
 * replies that are not theirs, so do not make them while pipelined requests are outstanding. */
int tsc_predict_send(tsc_client_t *c, const char *model, uint64_t version, const float *x, size_t rows,
                     size_t cols, uint64_t *request_id);
int tsc_predict_recv(tsc_client_t *c, int timeout_ms, uint64_t *request_id, tsc_result_t *out);

/* The message of the last failure on `c` ("" after success). */
const char *tsc_error(const tsc_client_t *c);
/* "OK", "INVALID_ARGUMENT", ... for an outcome code. */
const char *tsc_code_name(int code);

#ifdef __cplusplus
}
#endif

#endif
