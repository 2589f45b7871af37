/* The emulated NCCL of nccl.h. A communicator is a shared-memory header named by the unique id (a
 * process-shared barrier and each rank's device) and one segment per rank that the rank writes its
 * contribution into; a collective publishes, waits at the barrier, reads the others' segments and waits
 * again before anyone may overwrite them. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <vector>

#include "nccl.h"

namespace {
constexpr uint32_t MAGIC = 0x4e43454d; /* "NCEM": rank 0 has set the header up */
constexpr int MAX_RANKS = 64;

struct header {
    uint32_t magic;
    int nranks;
    pthread_barrier_t barrier;
    int device[MAX_RANKS];
};
} // namespace

struct ts_emu_nccl {
    int rank, nranks;
    char name[NCCL_UNIQUE_ID_BYTES];
    header *hdr;
    int seg_fd;
    void *seg;
    size_t seg_bytes;
};

namespace {
ncclResult_t complain(ncclResult_t r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ts_emu::vreport("nccl: ", fmt, ap);
    va_end(ap);
    return r;
}

void segment_name(char *out, size_t len, const char *comm, int rank) {
    snprintf(out, len, "%s-r%d", comm, rank);
}

void wait_all(ts_emu_nccl *c) {
    int rc = pthread_barrier_wait(&c->hdr->barrier);
    if (rc && rc != PTHREAD_BARRIER_SERIAL_THREAD) {
        fprintf(stderr, "cuda-emu: nccl: barrier: %s\n", strerror(rc));
        abort();
    }
}

/* This rank's contribution into its segment, grown as needed. */
void publish(ts_emu_nccl *c, const void *data, size_t bytes) {
    if (bytes > c->seg_bytes) {
        if (c->seg) munmap(c->seg, c->seg_bytes);
        if (ftruncate(c->seg_fd, (off_t)bytes)) {
            fprintf(stderr, "cuda-emu: nccl: cannot grow the segment to %zu bytes: %s\n", bytes,
                    strerror(errno));
            abort();
        }
        c->seg = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, c->seg_fd, 0);
        if (c->seg == MAP_FAILED) abort();
        c->seg_bytes = bytes;
    }
    memcpy(c->seg, data, bytes);
}

/* Rank q's segment, read-only, at least `bytes` long; unmap with munmap(p, bytes). */
const float *peer(ts_emu_nccl *c, int q, size_t bytes) {
    if (q == c->rank) return (const float *)c->seg;
    char name[NCCL_UNIQUE_ID_BYTES + 16];
    segment_name(name, sizeof name, c->name, q);
    int fd = shm_open(name, O_RDONLY, 0);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || (size_t)st.st_size < bytes) {
        fprintf(stderr, "cuda-emu: nccl: rank %d's segment %s is missing or short\n", q, name);
        abort();
    }
    void *p = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) abort();
    return (const float *)p;
}

void unpeer(ts_emu_nccl *c, int q, const float *p, size_t bytes) {
    if (q != c->rank) munmap(const_cast<float *>(p), bytes);
}

void close_comm(ts_emu_nccl *c) {
    char name[NCCL_UNIQUE_ID_BYTES + 16];
    segment_name(name, sizeof name, c->name, c->rank);
    if (c->seg) munmap(c->seg, c->seg_bytes);
    if (c->seg_fd >= 0) close(c->seg_fd);
    shm_unlink(name);
    if (c->hdr) munmap(c->hdr, sizeof(header));
    if (c->rank == 0) shm_unlink(c->name);
    delete c;
}
} // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "/ts-nccl-emu-%d-%lx", (int)getpid(),
             (unsigned long)t.tv_nsec ^ ((unsigned long)t.tv_sec << 20));
    return ncclSuccess;
}

/* Rank 0 makes the header; the others wait for it to appear (NCCL's wait for all ranks: nccl.cu's
 * watchdog bounds it). Every rank then records its device and meets the others at the barrier. */
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    if (nranks < 1 || nranks > MAX_RANKS || rank < 0 || rank >= nranks)
        return complain(ncclInvalidArgument, "ncclCommInitRank: rank %d of %d", rank, nranks);
    ts_emu_nccl *c = new ts_emu_nccl{};
    c->rank = rank;
    c->nranks = nranks;
    c->seg_fd = -1;
    memcpy(c->name, id.internal, sizeof c->name);
    c->name[sizeof c->name - 1] = 0;
    int fd = -1;
    if (rank == 0) {
        fd = shm_open(c->name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0 || ftruncate(fd, sizeof(header))) {
            delete c;
            return complain(ncclSystemError, "shm_open %s: %s", id.internal, strerror(errno));
        }
    } else {
        struct stat st;
        while ((fd = shm_open(c->name, O_RDWR, 0)) < 0 || fstat(fd, &st) ||
               (size_t)st.st_size < sizeof(header)) {
            if (fd >= 0) close(fd);
            usleep(1000);
        }
    }
    c->hdr = (header *)mmap(nullptr, sizeof(header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (c->hdr == MAP_FAILED) {
        c->hdr = nullptr;
        close_comm(c);
        return complain(ncclSystemError, "mmap of the communicator's header: %s", strerror(errno));
    }
    if (rank == 0) {
        pthread_barrierattr_t a;
        pthread_barrierattr_init(&a);
        pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_barrier_init(&c->hdr->barrier, &a, (unsigned)nranks);
        c->hdr->nranks = nranks;
        __atomic_store_n(&c->hdr->magic, MAGIC, __ATOMIC_RELEASE);
    }
    while (__atomic_load_n(&c->hdr->magic, __ATOMIC_ACQUIRE) != MAGIC)
        usleep(1000);
    if (c->hdr->nranks != nranks) {
        int theirs = c->hdr->nranks;
        close_comm(c);
        return complain(ncclInvalidUsage, "rank %d was told of %d ranks, rank 0 of %d", rank, nranks, theirs);
    }
    char seg[NCCL_UNIQUE_ID_BYTES + 16];
    segment_name(seg, sizeof seg, c->name, rank);
    c->seg_fd = shm_open(seg, O_CREAT | O_TRUNC | O_RDWR, 0600);
    c->hdr->device[rank] = ts_emu::current_device();
    wait_all(c);
    for (int q = 0; q < nranks; q++)
        if (q != rank && c->hdr->device[q] == c->hdr->device[rank]) {
            int dev = c->hdr->device[rank];
            wait_all(c); /* every rank has read the devices before rank 0 may unlink the header */
            close_comm(c);
            return complain(ncclInvalidUsage,
                            "Duplicate GPU detected : rank %d and rank %d both on CUDA device %d",
                            rank < q ? rank : q, rank < q ? q : rank, dev);
        }
    wait_all(c);
    if (c->seg_fd < 0) {
        close_comm(c);
        return complain(ncclSystemError, "shm_open %s: %s", seg, strerror(errno));
    }
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t c) {
    if (!c) return ncclInvalidArgument;
    cudaDeviceSynchronize();
    wait_all(c);
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
    if (!c) return ncclInvalidArgument;
    close_comm(c);
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t c) {
    if (!c) return ncclInvalidArgument;
    close_comm(c);
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    }
    return "unknown result code";
}

namespace {
/* A collective over c: this rank contributes `send` (send_n floats), and once every rank has, `gather`
 * reads the ranks' contributions (peer q's: q, its send_n floats) into recv (recv_n floats). Queued on
 * stream s like any device work. */
ncclResult_t collective(const char *call, ts_emu_nccl *c, const void *send, size_t send_n, void *recv,
                        size_t recv_n, cudaStream_t s,
                        std::function<void(int q, const float *contribution)> gather) {
    if (!send_n) return ncclSuccess;
    if (!ts_emu::device_range(send, send_n * sizeof(float)) ||
        !ts_emu::device_range(recv, recv_n * sizeof(float)))
        return complain(ncclInvalidArgument, "%s: send %p (%zu floats) or recv %p (%zu) is not device memory",
                        call, send, send_n, recv, recv_n);
    size_t bytes = send_n * sizeof(float);
    ts_emu::enqueue_op(s, [=]() {
        publish(c, send, bytes);
        wait_all(c); /* every rank has published */
        for (int q = 0; q < c->nranks; q++) {
            const float *p = peer(c, q, bytes);
            gather(q, p);
            unpeer(c, q, p, bytes);
        }
        wait_all(c); /* and read what it needs, before any publishes again */
    });
    return ncclSuccess;
}
} // namespace

/* Sums in rank order into a scratch vector first: recv may lie inside send (in place). */
ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t count, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t c, cudaStream_t s) {
    if (!c || type != ncclFloat || op != ncclSum)
        return complain(ncclInvalidArgument, "ncclReduceScatter: only float sums are emulated");
    size_t at = (size_t)c->rank * count;
    auto sum = std::make_shared<std::vector<float>>(count);
    int last = c->nranks - 1;
    return collective("ncclReduceScatter", c, send, count * (size_t)c->nranks, recv, count, s,
                      [=](int q, const float *p) {
                          for (size_t i = 0; i < count; i++)
                              (*sum)[i] = q ? (*sum)[i] + p[at + i] : p[at + i];
                          if (q == last) memcpy(recv, sum->data(), count * sizeof(float));
                      });
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t type, ncclComm_t c,
                           cudaStream_t s) {
    if (!c || type != ncclFloat)
        return complain(ncclInvalidArgument, "ncclAllGather: only floats are emulated");
    return collective(
        "ncclAllGather", c, send, count, recv, count * (size_t)c->nranks, s,
        [=](int q, const float *p) { memcpy((float *)recv + (size_t)q * count, p, count * sizeof(float)); });
}
