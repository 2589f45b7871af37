/* Check wrappers: every library call that can fail reports the call, file and line. */
#ifndef TESSERA_CHECK_H
#define TESSERA_CHECK_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Error values returned by Tessera functions (negated). */
enum {
    TS_OK = 0,
    TS_EINVAL = 1, /* bad input */
    TS_EIO = 2,    /* file or socket I/O */
    TS_ENOMEM = 3,
    TS_ETIMEDOUT = 4,
    TS_EPROTO = 5,  /* malformed or unexpected message */
    TS_ESTATE = 6,  /* request not valid in the current state */
    TS_EREMOTE = 7, /* peer answered with an error */
};

/* Fatal in the process that hits it: MPI then tears the job down. For programs, not libraries. */
#define MPI_CHECK(call)                                                                                      \
    do {                                                                                                     \
        int mpi_rc_ = (call);                                                                                \
        if (mpi_rc_ != MPI_SUCCESS) {                                                                        \
            char mpi_msg_[MPI_MAX_ERROR_STRING];                                                             \
            int mpi_len_ = 0;                                                                                \
            MPI_Error_string(mpi_rc_, mpi_msg_, &mpi_len_);                                                  \
            log_error("MPI call failed call=%s file=%s line=%d error=\"%s\"", #call, __FILE__, __LINE__,     \
                      mpi_msg_);                                                                             \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                                    \
        }                                                                                                    \
    } while (0)

/* For zmq_* calls that return -1 on failure: logs and evaluates to the negative TS code. */
#define ZMQ_CHECK(call)                                                                                      \
    __extension__({                                                                                          \
        int zmq_rc_ = (call);                                                                                \
        if (zmq_rc_ == -1) {                                                                                 \
            log_error("ZeroMQ call failed call=%s file=%s line=%d error=\"%s\"", #call, __FILE__, __LINE__,  \
                      zmq_strerror(zmq_errno()));                                                            \
            zmq_rc_ = -TS_EIO;                                                                               \
        }                                                                                                    \
        zmq_rc_;                                                                                             \
    })

/* Allocation that cannot reasonably be recovered from in a program: aborts with the site. */
#define XMALLOC(n)     xmalloc_at((n), __FILE__, __LINE__)
#define XCALLOC(n, sz) xcalloc_at((n), (sz), __FILE__, __LINE__)

static inline void *xmalloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        log_error("out of memory bytes=%zu file=%s line=%d", n, file, line);
        abort();
    }
    return p;
}

/* realloc that cannot fail (as XMALLOC). */
#define XREALLOC(p, n) xrealloc_at((p), (n), __FILE__, __LINE__)

static inline void *xrealloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        log_error("out of memory bytes=%zu file=%s line=%d", n, file, line);
        abort();
    }
    return q;
}

/* XMALLOC with the block aligned to `align` (a power of two, a multiple of sizeof(void *)); free()d. */
#define XMALLOC_ALIGNED(align, n) xmalloc_aligned_at((align), (n), __FILE__, __LINE__)

static inline void *xmalloc_aligned_at(size_t align, size_t n, const char *file, int line) {
    void *p = NULL;
    if (posix_memalign(&p, align, n ? n : 1)) {
        log_error("out of memory bytes=%zu align=%zu file=%s line=%d", n, align, file, line);
        abort();
    }
    return p;
}

static inline void *xcalloc_at(size_t n, size_t sz, const char *file, int line) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) {
        log_error("out of memory bytes=%zu file=%s line=%d", n * sz, file, line);
        abort();
    }
    return p;
}

#endif
