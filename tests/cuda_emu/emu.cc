/* The host emulator of the CUDA runtime and cuBLAS declared in cuda_runtime.h and cublas_v2.h: memory,
 * streams, events, copies, kernel grids and SGEMM. One host thread at a time (a global lock); queued work
 * runs on the thread that makes the host wait for it. See cuda_runtime.h for what it checks. */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <sanitizer/asan_interface.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/context/fiber.hpp>
#include <boost/context/pooled_fixedsize_stack.hpp>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cublas_v2.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

struct ts_emu_stream {
    std::deque<std::function<void()>> queue;
    uint64_t queued = 0, done = 0; /* operations ever queued, and run */
    bool destroyed = false;        /* kept, drained, so that waits on its events still resolve */
    bool running = false;          /* drain_to is running its operations */
};
struct ts_emu_event {
    ts_emu_stream *stream = nullptr; /* of the last record; NULL: never recorded (complete) */
    uint64_t seq = 0;                /* complete once stream->done reaches it */
    int queries = 0;                 /* cudaEventQuery calls since the record */
};
struct ts_emu_blas {
    cudaStream_t stream = nullptr;
    cublasMath_t mode = CUBLAS_DEFAULT_MATH;
};

namespace {
namespace ctx = boost::context;

[[noreturn]] void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ts_emu::vreport("FATAL: ", fmt, ap);
    va_end(ap);
    abort();
}

std::recursive_mutex g_lock;
#define LOCKED std::lock_guard<std::recursive_mutex> locked_(g_lock)

thread_local cudaError_t g_last = cudaSuccess;
int g_device = 0;

cudaError_t fail(cudaError_t e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ts_emu::vreport("", fmt, ap);
    va_end(ap);
    g_last = e;
    return e;
}

/* TESSERA_CUDA_EMU_DEVICES (default 1), read once. */
int device_count() {
    static int n = -1;
    if (n >= 0) return n;
    const char *s = getenv("TESSERA_CUDA_EMU_DEVICES");
    char *end = nullptr;
    long v = s && *s ? strtol(s, &end, 10) : 1;
    if (s && *s && (*end || v < 0 || v > 64))
        fatal("TESSERA_CUDA_EMU_DEVICES='%s': a number of emulated devices from 0 to 64", s);
    return n = (int)v;
}

/* ---- memory: every allocation by base address ---- */
enum { MEM_PAGEABLE = 0, MEM_PINNED = 1, MEM_DEVICE = 2 };
struct region {
    size_t bytes;
    int kind;
    bool registered; /* MEM_PINNED by cudaHostRegister: the caller's memory */
    int fd;          /* MEM_DEVICE exported by cudaIpcGetMemHandle: the memfd now behind it */
    bool opened;     /* MEM_DEVICE: another process's, mapped by cudaIpcOpenMemHandle */
};
std::map<uintptr_t, region> g_mem;

/* The allocation holding p (or ending at it), or end(). */
std::map<uintptr_t, region>::iterator region_of(const void *p) {
    auto it = g_mem.upper_bound((uintptr_t)p);
    if (it == g_mem.begin()) return g_mem.end();
    --it;
    return (uintptr_t)p <= it->first + it->second.bytes ? it : g_mem.end();
}

int mem_kind(const void *p) {
    auto it = region_of(p);
    return it == g_mem.end() ? MEM_PAGEABLE : it->second.kind;
}

/* [p, p + bytes) lies inside one allocation of `kind`. */
bool inside(const void *p, size_t bytes, int kind) {
    auto it = region_of(p);
    return it != g_mem.end() && it->second.kind == kind &&
           (uintptr_t)p + bytes <= it->first + it->second.bytes;
}

const char *kind_name(int k) {
    return k == MEM_DEVICE ? "device" : k == MEM_PINNED ? "pinned host" : "pageable host";
}

/* Device memory is an arena of its own that host code cannot touch: it is mapped PROT_NONE except while
 * the emulator itself runs device work (kernels, copies, memsets, GEMMs, collectives), so a host that
 * dereferences a device pointer faults, and the handler below says so before the usual report. The
 * addresses are never reused (a freed allocation's pages are given back and, under ASan, poisoned), and
 * ASan poisons each allocation's tail up to the next page and a page after it. */
constexpr size_t ARENA_BYTES = (size_t)1 << 40;   /* address space over the process's life */
constexpr size_t DEVICE_BYTES = (size_t)16 << 30; /* what may be allocated at once (the "device") */
constexpr size_t PAGE = 4096;
char *g_arena;
size_t g_arena_used, g_device_live;
int g_open_depth;
struct sigaction g_old_segv;

void segv_handler(int sig, siginfo_t *si, void *uc) {
    char *a = (char *)si->si_addr;
    if (g_arena && a >= g_arena && a < g_arena + ARENA_BYTES) {
        char msg[256];
        auto it = region_of(a);
        int n = snprintf(msg, sizeof msg,
                         "cuda-emu: FATAL: host code touched device memory at %p (%s): device pointers are "
                         "for kernels and cudaMemcpy; the stack of the access follows\n",
                         (void *)a, it != g_mem.end() ? "inside a live allocation" : "not allocated");
        if (n > 0 && write(2, msg, (size_t)n) < 0) { /* nothing more to do about it */
        }
    }
    sigaction(SIGSEGV, &g_old_segv, nullptr); /* the previous handler (ASan's report) or the default */
    if ((g_old_segv.sa_flags & SA_SIGINFO) && g_old_segv.sa_sigaction) g_old_segv.sa_sigaction(sig, si, uc);
}

void arena_protect(int prot) {
    if (g_arena_used && mprotect(g_arena, g_arena_used, prot))
        fatal("mprotect of device memory: %s", strerror(errno));
}

/* While one lives, device memory is readable and writable (the emulator is running device work). */
struct device_access {
    device_access() {
        if (!g_open_depth++) arena_protect(PROT_READ | PROT_WRITE);
    }
    ~device_access() {
        if (!--g_open_depth) arena_protect(PROT_NONE);
    }
};

void arena_init() {
    if (!g_arena) {
        void *a = mmap(nullptr, ARENA_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a == MAP_FAILED) fatal("cannot reserve the device arena: %s", strerror(errno));
        g_arena = (char *)a; /* beyond g_arena_used it is never opened: no poisoning needed there */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = segv_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
    }
}

/* Fresh addresses for `bytes` in the arena (never reused), and a page of poisoned gap after them, or
 * NULL when the arena's addresses are spent. */
char *arena_reserve(size_t bytes) {
    arena_init();
    size_t span = (bytes + PAGE - 1) / PAGE * PAGE + PAGE;
    if (span > ARENA_BYTES - g_arena_used) return nullptr;
    char *p = g_arena + g_arena_used;
    g_arena_used += span;
    ASAN_UNPOISON_MEMORY_REGION(p, bytes);
    ASAN_POISON_MEMORY_REGION(p + bytes, span - bytes); /* the tail of the last page, and the gap */
    return p;
}

void *device_alloc(size_t bytes) {
    if (bytes > DEVICE_BYTES - g_device_live) return nullptr;
    char *p = arena_reserve(bytes);
    if (p) g_device_live += bytes;
    return p;
}

/* The arena's pages at p, inaccessible now as the rest is (PROT_NONE unless device work runs). */
int arena_prot() {
    return g_open_depth ? PROT_READ | PROT_WRITE : PROT_NONE;
}

/* Puts anonymous memory back under [p, p + span) (an exported or opened allocation's shared pages). */
void arena_unshare(void *p, size_t span) {
    if (mmap(p, span, arena_prot(), MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) ==
        MAP_FAILED)
        fatal("mmap over released device memory: %s", strerror(errno));
}

void device_release(void *p, const region &r) {
    size_t span = (r.bytes + PAGE - 1) / PAGE * PAGE;
    ASAN_POISON_MEMORY_REGION(p, r.bytes);
    if (r.fd >= 0 || r.opened) { /* the shared pages go: the other processes keep their own mappings */
        arena_unshare(p, span);
        if (r.fd >= 0) close(r.fd);
    } else {
        madvise(p, span, MADV_DONTNEED); /* the pages go back; the addresses are not reused */
    }
    if (!r.opened) g_device_live -= r.bytes;
}

cudaError_t allocate(void **p, size_t bytes, int kind) {
    void *m = nullptr;
    if (kind == MEM_DEVICE ? !(m = device_alloc(bytes ? bytes : 1))
                           : posix_memalign(&m, 256, bytes ? bytes : 1)) {
        *p = nullptr;
        return fail(cudaErrorMemoryAllocation, "cannot allocate %zu bytes of %s memory", bytes,
                    kind_name(kind));
    }
    {
        device_access open;
        memset(m, 0xff, bytes); /* NaN floats: what a kernel reads before anything wrote it */
    }
    g_mem[(uintptr_t)m] = region{bytes ? bytes : 1, kind, false, -1, false};
    *p = m;
    return cudaSuccess;
}

cudaError_t release(void *p, int kind, const char *call) {
    if (!p) return cudaSuccess;
    auto it = g_mem.find((uintptr_t)p);
    if (it == g_mem.end() || it->second.kind != kind || it->second.registered)
        return fail(cudaErrorInvalidValue, "%s(%p): not the start of a %s allocation%s", call, p,
                    kind_name(kind),
                    it != g_mem.end() && it->second.registered ? " (registered: cudaHostUnregister)" : "");
    if (it->second.opened)
        return fail(cudaErrorInvalidValue,
                    "%s(%p): memory opened by cudaIpcOpenMemHandle (cudaIpcCloseMemHandle)", call, p);
    region r = it->second;
    g_mem.erase(it);
    if (kind == MEM_DEVICE)
        device_release(p, r);
    else
        free(p);
    return cudaSuccess;
}

/* ---- streams ---- */
ts_emu_stream g_legacy;
std::vector<ts_emu_stream *> g_streams{&g_legacy};

ts_emu_stream *stream_of(cudaStream_t s) {
    return s ? s : &g_legacy;
}

void drain(ts_emu_stream *s);

/* When queued work runs: TESSERA_CUDA_EMU_SCHEDULE=lazy runs it only when the host waits for it; random
 * (the default) runs each operation either at once (with what is queued before it on its stream) or
 * then, by a coin of seed TESSERA_CUDA_EMU_SEED. Lazy shows a host that reads results too early; random
 * also shows a stream that does not wait for another (its work then often runs before the other's). */
bool g_random = true, g_eager;
uint64_t g_coin;

void schedule_init() {
    static bool done;
    if (done) return;
    done = true;
    const char *m = getenv("TESSERA_CUDA_EMU_SCHEDULE"), *seed = getenv("TESSERA_CUDA_EMU_SEED");
    if (m && strcmp(m, "lazy") && strcmp(m, "random") && strcmp(m, "eager"))
        fatal("TESSERA_CUDA_EMU_SCHEDULE='%s': lazy, random or eager", m);
    g_random = !m || !strcmp(m, "random");
    g_eager = m && !strcmp(m, "eager");
    g_coin = seed && *seed ? strtoull(seed, nullptr, 10) : 20261203;
    if (!g_coin) g_coin = 1;
}

bool coin() {
    schedule_init();
    g_coin ^= g_coin << 13; /* xorshift64 */
    g_coin ^= g_coin >> 7;
    g_coin ^= g_coin << 17;
    return g_coin >> 63;
}

void enqueue(cudaStream_t s, std::function<void()> op) {
    ts_emu_stream *st = stream_of(s);
    if (st->destroyed) fatal("work queued on a destroyed stream");
    st->queue.push_back(std::move(op));
    st->queued++;
    schedule_init();
    if (g_eager || (g_random && coin())) drain(st);
}

void drain_to(ts_emu_stream *s, uint64_t seq) {
    if (s->running) { /* a wait inside one of s's own operations: only what precedes it may be needed */
        if (seq > s->done) fatal("a stream waits, through events, for its own later work (cyclic wait)");
        return;
    }
    s->running = true;
    device_access open;
    while (s->done < seq) {
        std::function<void()> op = std::move(s->queue.front());
        s->queue.pop_front();
        op();
        s->done++;
    }
    s->running = false;
}

void drain(ts_emu_stream *s) {
    drain_to(s, s->queued);
}

void drain_all() {
    for (ts_emu_stream *s : g_streams)
        drain(s);
}

/* ---- grids ---- */
enum { T_RUN, T_WAIT_BLOCK, T_WAIT_WARP, T_DONE };
struct emu_thread {
    ctx::fiber fiber, sink;
    int state = T_RUN;
    unsigned mask = 0;
    uint64_t slot = 0;
    uint3 idx{};
};
std::vector<emu_thread> g_threads;
int g_cur = -1;     /* the running fiber's index in g_threads */
bool g_fibers;      /* the block runs as fibers (barriers allowed) */
bool g_saw_barrier; /* some thread of the block reached a barrier */
const ts_emu::launch_cfg *g_cfg;
unsigned char *g_smem;
ctx::pooled_fixedsize_stack g_stacks(256 * 1024);

uint3 thread_coords(unsigned i, const dim3 &b) {
    return uint3{i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
}

[[noreturn]] void grid_fatal(const char *what) {
    fatal("kernel %s, block (%u,%u,%u) of (%u,%u,%u), %u threads: %s", g_cfg->kernel, blockIdx.x, blockIdx.y,
          blockIdx.z, gridDim.x, gridDim.y, gridDim.z, blockDim.x * blockDim.y * blockDim.z, what);
}

/* Lanes waiting at a shuffle in warp w go on once every lane their masks name waits there too. */
bool release_warp(unsigned w, unsigned nthreads) {
    unsigned mask = 0, base = w * 32;
    for (unsigned l = 0; l < 32 && base + l < nthreads; l++)
        if (g_threads[base + l].state == T_WAIT_WARP) mask |= g_threads[base + l].mask;
    if (!mask) return false;
    for (unsigned l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        char why[160];
        if (base + l >= nthreads) {
            snprintf(why, sizeof why,
                     "a warp shuffle's mask 0x%08x names lane %u, which the block does not have", mask, l);
            grid_fatal(why);
        }
        if (g_threads[base + l].state == T_DONE) {
            snprintf(why, sizeof why,
                     "a warp shuffle's mask 0x%08x names lane %u (thread %u), which has exited", mask, l,
                     base + l);
            grid_fatal(why);
        }
        if (g_threads[base + l].state != T_WAIT_WARP) return false;
    }
    for (unsigned l = 0; l < 32 && base + l < nthreads; l++)
        if (g_threads[base + l].state == T_WAIT_WARP) g_threads[base + l].state = T_RUN;
    return true;
}

void run_block_fibers(const std::function<void()> &body) {
    unsigned n = blockDim.x * blockDim.y * blockDim.z;
    g_threads.clear();
    g_threads.resize(n);
    for (unsigned i = 0; i < n; i++) {
        g_threads[i].idx = thread_coords(i, blockDim);
        g_threads[i].fiber = ctx::fiber(std::allocator_arg, g_stacks, [i, &body](ctx::fiber &&sink) {
            g_threads[i].sink = std::move(sink);
            body();
            g_threads[i].state = T_DONE;
            return std::move(g_threads[i].sink);
        });
    }
    g_fibers = true;
    bool down = coin(); /* threads that run between two barriers: first to last, or last to first */
    for (;;) {
        for (unsigned k = 0; k < n; k++) {
            unsigned i = down ? n - 1 - k : k;
            if (g_threads[i].state != T_RUN) continue;
            g_cur = (int)i;
            threadIdx = g_threads[i].idx;
            g_threads[i].fiber = std::move(g_threads[i].fiber).resume();
        }
        unsigned live = 0, at_block = 0;
        for (auto &t : g_threads) {
            live += t.state != T_DONE;
            at_block += t.state == T_WAIT_BLOCK;
        }
        if (!live) break;
        bool released = false;
        for (unsigned w = 0; w * 32 < n; w++)
            released |= release_warp(w, n);
        if (!released && at_block == live) {
            for (auto &t : g_threads)
                if (t.state == T_WAIT_BLOCK) t.state = T_RUN;
            released = true;
        }
        if (!released)
            grid_fatal("its threads wait at different barriers (__syncthreads and shuffles): deadlock");
    }
    g_fibers = false;
    g_cur = -1;
}

/* Blocks from the last to the first, the threads of each in one direction or the other (a coin), so
 * that code which counts on an order among threads without a barrier sees the order it did not expect.
 * The first block run tells whether the kernel reaches barriers; if it does not, the others run as
 * plain calls, thread after thread. */
void run_grid(const ts_emu::launch_cfg &c, const std::function<void()> &body) {
    std::vector<unsigned char> smem(c.smem, 0xff);
    g_cfg = &c;
    g_smem = smem.data();
    gridDim = c.grid;
    blockDim = c.block;
    unsigned long nb = (unsigned long)c.grid.x * c.grid.y * c.grid.z;
    unsigned nt = c.block.x * c.block.y * c.block.z;
    bool fibers = true;
    for (unsigned long b = nb; b-- > 0;) {
        blockIdx = uint3{(unsigned)(b % c.grid.x), (unsigned)(b / c.grid.x % c.grid.y),
                         (unsigned)(b / ((unsigned long)c.grid.x * c.grid.y))};
        if (fibers) {
            g_saw_barrier = false;
            run_block_fibers(body);
            fibers = g_saw_barrier;
            continue;
        }
        bool down = coin();
        for (unsigned k = 0; k < nt; k++) {
            threadIdx = thread_coords(down ? nt - 1 - k : k, c.block);
            body();
        }
    }
    g_cfg = nullptr;
    g_smem = nullptr;
}
} // namespace

/* ---- the launch machinery ---- */
bool ts_emu::launch_ok(const launch_cfg &c) {
    LOCKED;
    const dim3 &g = c.grid, &b = c.block;
    unsigned long threads = (unsigned long)b.x * b.y * b.z;
    const char *why = nullptr;
    if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z)
        why = "a dimension is 0";
    else if (threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64)
        why = "a block has more than 1024 threads";
    else if (g.x > 2147483647u || g.y > 65535 || g.z > 65535)
        why = "the grid is larger than the device allows";
    else if (c.smem > 48 * 1024)
        why = "more than 48 KiB of dynamic shared memory";
    if (!why) return true;
    fail(cudaErrorInvalidConfiguration, "launch of %s<<<(%u,%u,%u), (%u,%u,%u), %zu>>> refused: %s", c.kernel,
         g.x, g.y, g.z, b.x, b.y, b.z, c.smem, why);
    return false;
}

void ts_emu::check_kernel_pointer(const launch_cfg &c, int arg, const void *p) {
    LOCKED;
    if (p && mem_kind(p) == MEM_PAGEABLE)
        fatal("kernel %s: argument %d (%p) points into neither device nor pinned memory", c.kernel, arg, p);
}

void ts_emu::enqueue_grid(const launch_cfg &c, std::function<void()> body) {
    LOCKED;
    enqueue(c.stream, [c, body]() { run_grid(c, body); });
}

void ts_emu::vreport(const char *what, const char *fmt, va_list ap) {
    fprintf(stderr, "cuda-emu: %s", what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void ts_emu::enqueue_op(cudaStream_t s, std::function<void()> op) {
    LOCKED;
    enqueue(s, std::move(op));
}

bool ts_emu::device_range(const void *p, size_t bytes) {
    LOCKED;
    return inside(p, bytes, MEM_DEVICE);
}

int ts_emu::current_device(void) {
    return g_device;
}

void ts_emu::barrier(int kind, unsigned mask) {
    if (!g_fibers)
        grid_fatal(
            "a thread reached a barrier, but the launch's first block did not, so the emulator runs the "
            "rest without fibers");
    g_saw_barrier = true;
    emu_thread &t = g_threads[(size_t)g_cur];
    t.state = kind ? T_WAIT_WARP : T_WAIT_BLOCK;
    t.mask = mask;
    t.sink = std::move(t.sink).resume();
}

uint64_t ts_emu::shuffle(unsigned mask, uint64_t v, int src_lane) {
    if (!g_fibers) barrier(1, mask); /* reports the missing fibers */
    unsigned me = (unsigned)g_cur, base = me / 32 * 32;
    if (!(mask >> (me - base) & 1)) grid_fatal("a warp shuffle's mask does not name its own lane");
    g_threads[me].slot = v;
    barrier(1, mask); /* every lane of the mask has written its slot */
    if (!(mask >> src_lane & 1)) grid_fatal("a warp shuffle reads a lane its mask does not name");
    uint64_t r = g_threads[base + (unsigned)src_lane].slot;
    barrier(1, mask); /* and read the one it wanted, before any writes the next */
    return r;
}

void *ts_emu::dynamic_smem(void) {
    return g_smem;
}

unsigned ts_emu::lane(void) {
    return (threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y) & 31;
}

/* ---- devices and errors ---- */
cudaError_t cudaGetDeviceCount(int *n) {
    *n = device_count();
    return *n > 0 ? cudaSuccess : fail(cudaErrorNoDevice, "TESSERA_CUDA_EMU_DEVICES=0: no device");
}

cudaError_t cudaSetDevice(int d) {
    LOCKED;
    if (d < 0 || d >= device_count())
        return fail(cudaErrorInvalidDevice, "cudaSetDevice(%d): no such device", d);
    g_device = d;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *d) {
    *d = g_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
    if (d < 0 || d >= device_count()) return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties(%d)", d);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuda-emu %d (the host CPU, not a GPU)", d);
    p->totalGlobalMem = (size_t)16 << 30;
    p->sharedMemPerBlock = 48 * 1024;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 4;
    p->maxThreadsPerBlock = 1024;
    p->warpSize = 32;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) {
    return g_last;
}

namespace {
const struct {
    cudaError_t e;
    const char *name, *text;
} g_errors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection", "invalid copy direction for memcpy"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorHostMemoryAlreadyRegistered, "cudaErrorHostMemoryAlreadyRegistered",
     "part or all of the requested memory range is already mapped"},
    {cudaErrorHostMemoryNotRegistered, "cudaErrorHostMemoryNotRegistered",
     "pointer does not correspond to a registered memory region"},
};

const char *error_field(cudaError_t e, bool name) {
    for (const auto &x : g_errors)
        if (x.e == e) return name ? x.name : x.text;
    return name ? "cudaErrorUnknown" : "unknown error";
}
} // namespace

const char *cudaGetErrorName(cudaError_t e) {
    return error_field(e, true);
}

const char *cudaGetErrorString(cudaError_t e) {
    return error_field(e, false);
}

/* ---- memory ---- */
cudaError_t cudaMalloc(void **p, size_t bytes) {
    LOCKED;
    return allocate(p, bytes, MEM_DEVICE);
}

/* Waits for the device first, as cudaFree does. */
cudaError_t cudaFree(void *p) {
    LOCKED;
    drain_all();
    return release(p, MEM_DEVICE, "cudaFree");
}

cudaError_t cudaMallocHost(void **p, size_t bytes) {
    LOCKED;
    return allocate(p, bytes, MEM_PINNED);
}

cudaError_t cudaFreeHost(void *p) {
    LOCKED;
    drain_all();
    return release(p, MEM_PINNED, "cudaFreeHost");
}

/* Registered memory counts as pinned until unregistered; it must not overlap another allocation. */
cudaError_t cudaHostRegister(void *p, size_t bytes, unsigned flags) {
    LOCKED;
    if (!p || !bytes || flags != cudaHostRegisterDefault)
        return fail(cudaErrorInvalidValue, "cudaHostRegister(%p, %zu, %u): needs memory and default flags", p,
                    bytes, flags);
    auto it = g_mem.lower_bound((uintptr_t)p);
    if (mem_kind(p) != MEM_PAGEABLE || (it != g_mem.end() && it->first < (uintptr_t)p + bytes))
        return fail(cudaErrorHostMemoryAlreadyRegistered, "cudaHostRegister(%p, %zu): overlaps an allocation",
                    p, bytes);
    g_mem[(uintptr_t)p] = region{bytes, MEM_PINNED, true, -1, false};
    return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p) {
    LOCKED;
    drain_all();
    auto it = g_mem.find((uintptr_t)p);
    if (it == g_mem.end() || !it->second.registered)
        return fail(cudaErrorHostMemoryNotRegistered, "cudaHostUnregister(%p): not registered", p);
    g_mem.erase(it);
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p) {
    LOCKED;
    int k = mem_kind(p);
    a->type = k == MEM_DEVICE   ? cudaMemoryTypeDevice
              : k == MEM_PINNED ? cudaMemoryTypeHost
                                : cudaMemoryTypeUnregistered;
    a->device = g_device;
    a->devicePointer = k == MEM_PAGEABLE ? nullptr : const_cast<void *>(p);
    a->hostPointer = k == MEM_DEVICE ? nullptr : const_cast<void *>(p);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s) {
    LOCKED;
    if (!bytes) return cudaSuccess;
    if (!inside(p, bytes, MEM_DEVICE))
        return fail(cudaErrorInvalidValue, "cudaMemsetAsync(%p, %zu bytes): not inside one device allocation",
                    p, bytes);
    enqueue(s, [p, v, bytes]() { memset(p, v, bytes); });
    return cudaSuccess;
}

namespace {
/* What is wrong with one side of a copy (span bytes at p, of memory kind k, device memory wanted or
 * not), or NULL. */
const char *side_problem(const void *p, size_t span, int k, bool want_device) {
    if (want_device && k != MEM_DEVICE) return "the copy's kind wants device memory; this is host memory";
    if (!want_device && k == MEM_DEVICE) return "the copy's kind wants host memory; this is device memory";
    if (k != MEM_PAGEABLE && !inside(p, span, k)) return "runs past the end of its allocation";
    return nullptr;
}

/* Checks a copy of `rows` rows of `width` bytes (pitches dpitch, spitch) against its kind and the
 * allocations; returns the source and destination memory kinds through sk and dk. */
cudaError_t check_copy(const char *call, void *dst, size_t dpitch, const void *src, size_t spitch,
                       size_t width, size_t rows, cudaMemcpyKind kind, int *dk, int *sk) {
    *dk = mem_kind(dst);
    *sk = mem_kind(src);
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyDefault) {
        dst_dev = *dk == MEM_DEVICE;
        src_dev = *sk == MEM_DEVICE;
    } else if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) {
        return fail(cudaErrorInvalidMemcpyDirection, "%s: copy kind %d", call, (int)kind);
    }
    size_t dspan = (rows - 1) * dpitch + width, sspan = (rows - 1) * spitch + width;
    const char *why = side_problem(dst, dspan, *dk, dst_dev);
    if (why) return fail(cudaErrorInvalidValue, "%s: destination %p (%zu bytes): %s", call, dst, dspan, why);
    why = side_problem(src, sspan, *sk, src_dev);
    if (why) return fail(cudaErrorInvalidValue, "%s: source %p (%zu bytes): %s", call, src, sspan, why);
    return cudaSuccess;
}

void copy_rows(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t rows) {
    for (size_t r = 0; r < rows; r++)
        memcpy((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
}

/* As the CUDA runtime orders it: from pageable memory the source is staged at once (the caller may reuse
 * it on return); into pageable memory the call returns once the copy is done; between device and pinned
 * memory the copy waits its turn on the stream. */
cudaError_t copy_async(const char *call, void *dst, size_t dpitch, const void *src, size_t spitch,
                       size_t width, size_t rows, cudaMemcpyKind kind, cudaStream_t s) {
    int dk, sk;
    if (!width || !rows) return cudaSuccess;
    cudaError_t e = check_copy(call, dst, dpitch, src, spitch, width, rows, kind, &dk, &sk);
    if (e != cudaSuccess) return e;
    if (sk == MEM_PAGEABLE) {
        auto staged = std::make_shared<std::vector<char>>(width * rows);
        copy_rows(staged->data(), width, src, spitch, width, rows);
        enqueue(s, [=]() { copy_rows(dst, dpitch, staged->data(), width, width, rows); });
    } else if (dk == MEM_PAGEABLE) {
        drain(stream_of(s));
        device_access open;
        copy_rows(dst, dpitch, src, spitch, width, rows);
    } else {
        enqueue(s, [=]() { copy_rows(dst, dpitch, src, spitch, width, rows); });
    }
    return cudaSuccess;
}
} // namespace

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    LOCKED;
    cudaError_t e = copy_async("cudaMemcpy", dst, bytes, src, bytes, bytes, 1, kind, nullptr);
    if (e == cudaSuccess) drain(&g_legacy);
    return e;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    LOCKED;
    return copy_async("cudaMemcpyAsync", dst, bytes, src, bytes, bytes, 1, kind, s);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                              size_t height, cudaMemcpyKind kind, cudaStream_t s) {
    LOCKED;
    if (width > dpitch || width > spitch)
        return fail(cudaErrorInvalidValue, "cudaMemcpy2DAsync: width %zu exceeds a pitch (%zu, %zu)", width,
                    dpitch, spitch);
    return copy_async("cudaMemcpy2DAsync", dst, dpitch, src, spitch, width, height, kind, s);
}

/* ---- streams and events ---- */
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    LOCKED;
    (void)flags; /* no implicit synchronisation with the legacy stream is modelled: all streams are
                    non-blocking */
    *s = new ts_emu_stream;
    g_streams.push_back(*s);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    LOCKED;
    if (!s || s->destroyed)
        return fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: not a live stream");
    drain(s);
    s->destroyed = true;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    LOCKED;
    drain(stream_of(s));
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    LOCKED;
    (void)flags;
    if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: NULL event");
    ts_emu_stream *other = e->stream;
    uint64_t seq = e->seq;
    if (other && other != stream_of(s)) enqueue(s, [other, seq]() { drain_to(other, seq); });
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    (void)flags;
    *e = new ts_emu_event;
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    LOCKED;
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    LOCKED;
    if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: NULL event");
    e->stream = stream_of(s);
    e->seq = e->stream->queued;
    e->queries = 0;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    LOCKED;
    if (e->stream) drain_to(e->stream, e->seq);
    return cudaSuccess;
}

/* Not ready at the first query after a record, whatever is queued before it; done (run) at the second. */
cudaError_t cudaEventQuery(cudaEvent_t e) {
    LOCKED;
    if (!e->stream || e->stream->done >= e->seq) return cudaSuccess;
    if (++e->queries < 2) return cudaErrorNotReady;
    drain_to(e->stream, e->seq);
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    LOCKED;
    drain_all();
    return cudaSuccess;
}

/* ---- CUDA IPC ---- */
namespace {
/* What a handle holds: the exporting process and the memfd behind the allocation there. */
struct ipc_handle {
    uint64_t magic;
    int64_t pid;
    int32_t fd;
    uint64_t bytes;
};
constexpr uint64_t IPC_MAGIC = 0x7473656d75495043ull;
static_assert(sizeof(ipc_handle) <= sizeof(cudaIpcMemHandle_t), "an IPC handle fits CUDA's 64 bytes");
} // namespace

cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t *h, void *p) {
    LOCKED;
    drain_all();
    auto it = g_mem.find((uintptr_t)p);
    if (!h || it == g_mem.end() || it->second.kind != MEM_DEVICE || it->second.opened)
        return fail(cudaErrorInvalidValue,
                    "cudaIpcGetMemHandle(%p): not the start of this process's cudaMalloc", p);
    region &r = it->second;
    size_t span = (r.bytes + PAGE - 1) / PAGE * PAGE;
    if (r.fd < 0) { /* its pages move into a memfd, which other processes can map */
        int fd = memfd_create("cuda-emu-ipc", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)span)) {
            int e = errno;
            if (fd >= 0) close(fd);
            return fail(cudaErrorMemoryAllocation, "cudaIpcGetMemHandle: memfd of %zu bytes: %s", span,
                        strerror(e));
        }
        device_access open;
        ssize_t n = pwrite(fd, p, r.bytes, 0);
        if (n != (ssize_t)r.bytes) fatal("cudaIpcGetMemHandle: copying into the memfd: %s", strerror(errno));
        if (mmap(p, span, arena_prot(), MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
            fatal("cudaIpcGetMemHandle: mapping the memfd: %s", strerror(errno));
        r.fd = fd;
    }
    ipc_handle ih{IPC_MAGIC, (int64_t)getpid(), r.fd, r.bytes};
    memset(h, 0, sizeof *h);
    memcpy(h->reserved, &ih, sizeof ih);
    return cudaSuccess;
}

cudaError_t cudaIpcOpenMemHandle(void **p, cudaIpcMemHandle_t h, unsigned flags) {
    LOCKED;
    ipc_handle ih;
    memcpy(&ih, h.reserved, sizeof ih);
    if (!p || ih.magic != IPC_MAGIC || flags & ~(unsigned)cudaIpcMemLazyEnablePeerAccess)
        return fail(cudaErrorInvalidValue, "cudaIpcOpenMemHandle: not a handle of cudaIpcGetMemHandle");
    if (ih.pid == (int64_t)getpid())
        return fail(cudaErrorInvalidResourceHandle,
                    "cudaIpcOpenMemHandle: the handle is this process's own allocation (CUDA refuses that)");
    char path[64];
    snprintf(path, sizeof path, "/proc/%lld/fd/%d", (long long)ih.pid, (int)ih.fd);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    size_t span = (ih.bytes + PAGE - 1) / PAGE * PAGE;
    char self[64], name[64] = "";
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    if (fd < 0 || readlink(self, name, sizeof name - 1) < 0 || strncmp(name, "/memfd:cuda-emu-ipc", 19) ||
        fstat(fd, &st) || (size_t)st.st_size < span) {
        if (fd >= 0) close(fd);
        return fail(cudaErrorInvalidResourceHandle,
                    "cudaIpcOpenMemHandle: %s: the exporting process or its "
                    "allocation is gone",
                    path);
    }
    char *at = arena_reserve(ih.bytes);
    if (!at) {
        close(fd);
        return fail(cudaErrorMemoryAllocation,
                    "cudaIpcOpenMemHandle: the device arena's addresses are spent");
    }
    void *m = mmap(at, span, arena_prot(), MAP_SHARED | MAP_FIXED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) fatal("cudaIpcOpenMemHandle: mapping %s: %s", path, strerror(errno));
    region r{ih.bytes, MEM_DEVICE, false, -1, true};
    g_mem[(uintptr_t)at] = r;
    *p = at;
    return cudaSuccess;
}

cudaError_t cudaIpcCloseMemHandle(void *p) {
    LOCKED;
    drain_all();
    auto it = g_mem.find((uintptr_t)p);
    if (it == g_mem.end() || !it->second.opened)
        return fail(cudaErrorInvalidValue,
                    "cudaIpcCloseMemHandle(%p): not memory cudaIpcOpenMemHandle mapped", p);
    region r = it->second;
    g_mem.erase(it);
    device_release(p, r);
    return cudaSuccess;
}

/* ---- cuBLAS ---- */
cublasStatus_t cublasCreate(cublasHandle_t *h) {
    /* The host's BLAS on one thread: its idle threads wait by spinning on sched_yield, and would take the
     * cores that the job's other ranks (and the emulated kernels) run on. */
    openblas_set_num_threads(1);
    *h = new ts_emu_blas;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->mode = m;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

namespace {
cublasStatus_t blas_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ts_emu::vreport("cublasSgemm: ", fmt, ap);
    va_end(ap);
    return CUBLAS_STATUS_INVALID_VALUE;
}

/* A column-major rows x cols matrix with leading dimension ld lies inside one device allocation. */
bool matrix_inside(const float *p, int rows, int cols, int ld) {
    if (rows <= 0 || cols <= 0) return true;
    return inside(p, ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * sizeof(float), MEM_DEVICE);
}
} // namespace

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *a, int lda, const float *b, int ldb,
                           const float *beta, float *c, int ldc) {
    LOCKED;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    if (m < 0 || n < 0 || k < 0) return blas_fail("m=%d n=%d k=%d", m, n, k);
    if (lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1))
        return blas_fail("lda=%d ldb=%d ldc=%d for m=%d n=%d k=%d", lda, ldb, ldc, m, n, k);
    if (!m || !n) return CUBLAS_STATUS_SUCCESS;
    if (!matrix_inside(a, ar, ac, lda) || !matrix_inside(b, br, bc, ldb) || !matrix_inside(c, m, n, ldc))
        return blas_fail("A %p, B %p or C %p runs outside its device allocation", (const void *)a,
                         (const void *)b, (const void *)c);
    float al = *alpha, be = *beta;
    CBLAS_TRANSPOSE oa = ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                    ob = tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
    enqueue(h->stream,
            [=]() { cblas_sgemm(CblasColMajor, oa, ob, m, n, k, al, a, lda, b, ldb, be, c, ldc); });
    return CUBLAS_STATUS_SUCCESS;
}
