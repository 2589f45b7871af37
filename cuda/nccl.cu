/* NCCL collectives over the GPUs of one node (the interface is cuda/nccl_coll.h). One communicator, one
 * stream and one device buffer per worker. The CUDA backend's stream is private to backend_cuda.cu, so
 * the two streams meet only at explicit synchronisations: callers sync the backend before handing its
 * memory here, and every collective waits for its stream before it returns (correctness first). */
#include <errno.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_check.h"
#include "nccl_coll.h"

extern "C" {
#include "check.h"
}

struct nccl_coll {
    ncclComm_t comm;
    cudaStream_t stream;
    float *buf;
};

/* What rank 0 sends the others: whether it made a unique id, and the id. */
typedef struct {
    int ok;
    ncclUniqueId id;
} nccl_boot_t;

/* 1 when `ok` on every rank of `node`. */
static int node_all(MPI_Comm node, int ok) {
    int all = 0;
    MPI_CHECK(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, node));
    return all;
}

/* The stream and the zeroed buffer: 0, or -1 with a message. */
static int open_local(nccl_coll_t *c, size_t buf_floats, char *err, size_t errlen) {
    size_t bytes = (buf_floats ? buf_floats : 1) * sizeof(float);
    if (CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), err, errlen)) return -1;
    if (CUDA_TRY(cudaMalloc((void **)&c->buf, bytes), err, errlen)) return -1;
    return CUDA_TRY(cudaMemsetAsync(c->buf, 0, bytes, c->stream), err, errlen) ||
                   CUDA_TRY(cudaStreamSynchronize(c->stream), err, errlen)
               ? -1
               : 0;
}

static void close_local(nccl_coll_t *c) {
    if (!c) return;
    if (c->buf) cudaFree(c->buf);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

/* ncclCommInitRank waits for every rank of the node, and the agreement after it cannot help a rank that
 * fails or dies inside it while the others wait there: each rank runs a watchdog that logs and aborts
 * once init has taken TESSERA_NCCL_INIT_TIMEOUT_S seconds (default 300), so mpirun ends the job with a
 * reason instead of a hang. */
#define INIT_TIMEOUT_S_DEFAULT 300.0

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    double timeout_s;
    int rank, size;
} init_watch_t;

static void *init_watch(void *arg) {
    init_watch_t *w = (init_watch_t *)arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double whole = (double)(time_t)w->timeout_s;
    until.tv_sec += (time_t)whole;
    until.tv_nsec += (long)((w->timeout_s - whole) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (!w->done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&w->cv, &w->mu, &until);
    int done = w->done;
    pthread_mutex_unlock(&w->mu);
    if (!done) {
        log_error("nccl: ncclCommInitRank did not return within %g s on node rank %d of %d: another worker "
                  "of this node failed or left inside it (raise TESSERA_NCCL_INIT_TIMEOUT_S if init is "
                  "just slow); aborting",
                  w->timeout_s, w->rank, w->size);
        abort();
    }
    return NULL;
}

/* The watchdog's timeout from the environment: 0, or -1 with a message. */
static int init_timeout(double *out, char *err, size_t errlen) {
    const char *v = getenv("TESSERA_NCCL_INIT_TIMEOUT_S");
    *out = INIT_TIMEOUT_S_DEFAULT;
    if (!v || !v[0]) return 0;
    char *end = NULL;
    errno = 0;
    double t = strtod(v, &end);
    if (end == v || *end || errno || !(t > 0.0) || t > 1e9) {
        snprintf(err, errlen, "nccl: TESSERA_NCCL_INIT_TIMEOUT_S='%s' is not a positive number of seconds",
                 v);
        return -1;
    }
    *out = t;
    return 0;
}

/* ncclCommInitRank under the watchdog: 0, or -1 with a message (logged at once, since the agreement
 * that follows may wait for ranks the watchdog is about to abort). */
static int init_comm(nccl_coll_t *c, int rank, int size, const ncclUniqueId *id, double timeout_s, char *err,
                     size_t errlen) {
    init_watch_t w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.timeout_s = timeout_s;
    w.rank = rank;
    w.size = size;
    pthread_t th;
    int rc = pthread_create(&th, NULL, init_watch, &w);
    if (rc) {
        snprintf(err, errlen, "nccl: cannot start the init watchdog: %s", strerror(rc));
        log_error("%s", err);
        return -1;
    }
    int failed = NCCL_TRY(ncclCommInitRank(&c->comm, size, *id, rank), err, errlen);
    pthread_mutex_lock(&w.mu);
    w.done = 1;
    pthread_cond_signal(&w.cv);
    pthread_mutex_unlock(&w.mu);
    pthread_join(th, NULL);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    if (failed) log_error("%s (node rank %d of %d)", err, rank, size);
    return failed ? -1 : 0;
}

/* Every step that can fail on one rank alone is followed by an agreement over the node, so no rank
 * enters ncclCommInitRank (which waits for all of them) unless every rank will. */
extern "C" nccl_coll_t *nccl_coll_create(MPI_Comm node, size_t buf_floats, char *err, size_t errlen) {
    int rank = 0, size = 0;
    MPI_CHECK(MPI_Comm_rank(node, &rank));
    MPI_CHECK(MPI_Comm_size(node, &size));
    char why[512] = "";
    nccl_coll_t *c = (nccl_coll_t *)calloc(1, sizeof *c);
    double timeout_s = INIT_TIMEOUT_S_DEFAULT;
    int ok = c != NULL;
    if (!c) snprintf(why, sizeof why, "nccl: out of host memory");
    if (ok) ok = !init_timeout(&timeout_s, why, sizeof why);
    if (ok) ok = !open_local(c, buf_floats, why, sizeof why);
    nccl_boot_t boot;
    memset(&boot, 0, sizeof boot);
    if (rank == 0) boot.ok = ok && !NCCL_TRY(ncclGetUniqueId(&boot.id), why, sizeof why);
    MPI_CHECK(MPI_Bcast(&boot, (int)sizeof boot, MPI_BYTE, 0, node));
    if (!node_all(node, ok && boot.ok)) {
        snprintf(err, errlen, "%s", why[0] ? why : "nccl: another worker of this node could not set up");
        close_local(c);
        return NULL;
    }
    ok = !init_comm(c, rank, size, &boot.id, timeout_s, why, sizeof why);
    if (!node_all(node, ok)) {
        snprintf(err, errlen, "%s",
                 ok ? "nccl: another worker of this node could not open the communicator" : why);
        if (ok) ncclCommAbort(c->comm); /* local, unlike finalize: the others have no communicator */
        close_local(c);
        return NULL;
    }
    return c;
}

extern "C" void nccl_coll_free(nccl_coll_t *c) {
    if (!c) return;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    NCCL_CHECK(ncclCommFinalize(c->comm)); /* blocking communicator: returns when the node is done */
    NCCL_CHECK(ncclCommDestroy(c->comm));
    CUDA_CHECK(cudaFree(c->buf));
    CUDA_CHECK(cudaStreamDestroy(c->stream));
    free(c);
}

extern "C" float *nccl_coll_buffer(nccl_coll_t *c) {
    return c->buf;
}

extern "C" void nccl_coll_copy(nccl_coll_t *c, float *dst, const float *src, size_t n) {
    if (n) CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDefault, c->stream));
}

extern "C" void nccl_coll_sync(nccl_coll_t *c) {
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

extern "C" void nccl_coll_reduce_scatter(nccl_coll_t *c, const float *send, float *recv, size_t count) {
    NCCL_CHECK(ncclReduceScatter(send, recv, count, ncclFloat, ncclSum, c->comm, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

extern "C" void nccl_coll_all_gather(nccl_coll_t *c, const float *send, float *recv, size_t count) {
    NCCL_CHECK(ncclAllGather(send, recv, count, ncclFloat, c->comm, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}
