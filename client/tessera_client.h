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
    float *outputs;      /* rows x cols, row-major (malloc'd; tsc_result_free) */
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
int tsc_predict(tsc_client_t *c, const char *model, uint64_t version, const float *x, size_t rows, size_t cols,
                tsc_result_t *out);
void tsc_result_free(tsc_result_t *r);

/* TSC_OK when the server process answers. */
int tsc_live(tsc_client_t *c);
/* TSC_OK when `model` has a version available; TSC_UNAVAILABLE while loading. */
int tsc_ready(tsc_client_t *c, const char *model);
/* The status of `model` as JSON text (malloc'd; free it): versions, replicas, counters. */
int tsc_status_json(tsc_client_t *c, const char *model, char **json);

/* The message of the last failure on `c` ("" after success). */
const char *tsc_error(const tsc_client_t *c);
/* "OK", "INVALID_ARGUMENT", ... for an outcome code. */
const char *tsc_code_name(int code);

#ifdef __cplusplus
}
#endif

#endif
