/* A host emulator of the part of the CUDA runtime that cuda/ uses, so that the CUDA backend's kernels,
 * launch configurations and stream discipline run and are tested on a machine without a GPU (CI's). It
 * is a test tool, not a backend: a build with -DTESSERA_CUDA=EMU compiles the .cu files of cuda/ as C++
 * against these headers (tests/cuda_emu/to_host.sh rewrites `k<<<grid, block, smem, stream>>>(args)` into
 * `ts_emu_launch(k, grid, block, smem, stream)(args)`), and its gpu tests are named emu.* (label emu).
 *
 * What it does as a GPU would, or stricter:
 * - Kernels run every thread of every block: barrier-free blocks as plain calls, and blocks that reach
 *   __syncthreads or a warp shuffle as one fiber per thread (Boost.Context), switched at each barrier.
 *   A shuffle whose mask names a lane that has exited or does not exist, or threads of one block waiting
 *   at different barriers, stop the program with a message. Blocks run last to first, the threads of a
 *   block first to last or last to first (the coin below).
 * - Launches are checked as the driver checks them (block and grid limits, 48 KiB of dynamic shared
 *   memory) and fail through cudaGetLastError; pointer arguments must point into device or pinned memory.
 * - Work queued on a stream runs late or early, never in between: each operation, by a seeded coin,
 *   runs either as it is queued or only when the host must see it (cudaStreamSynchronize,
 *   cudaEventSynchronize, cudaFree, a copy into pageable memory, a cudaEventQuery asked twice, another
 *   stream's wait on an event after it). A host that reads a result or reuses a pinned buffer before
 *   waiting for the copy, or a stream that does not wait for another's work, then sees stale data.
 *   TESSERA_CUDA_EMU_SCHEDULE=lazy makes every operation late; TESSERA_CUDA_EMU_SEED picks other coins.
 * - Device memory is its own arena, mapped without access except while device work runs: host code that
 *   dereferences a device pointer faults, with a message. Copies and memsets must stay inside their
 *   allocations. Fresh device and pinned memory is NaN-filled.
 * - cuBLAS SGEMM (cublas_v2.h) runs on the host's CBLAS in column-major order.
 * - CUDA IPC: cudaIpcGetMemHandle moves an allocation into shared memory (a memfd), and another process's
 *   cudaIpcOpenMemHandle maps it into its own device arena; opening it in the process that exported it,
 *   or freeing an opened one with cudaFree instead of cudaIpcCloseMemHandle, is refused as CUDA refuses
 *   it. Processes share no streams: a consumer sees what the producer's host synchronized before saying
 *   so (a message), as on a GPU.
 * What it cannot show: timing, real concurrency between threads or streams (races), device memory
 * limits, and the device's math library (expf, logf, ...: the host's libm runs instead). */
#ifndef TESSERA_CUDA_EMU_RUNTIME_H
#define TESSERA_CUDA_EMU_RUNTIME_H

#define TESSERA_CUDA_EMU 1

/* The runtime API is also C's (bench/src/cuda_bandwidth.c); kernels and launches are C++ only. */
#ifdef __cplusplus
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#define TS_EMU_DEFAULT(v) = v
#define TS_EMU_C_BEGIN    extern "C" {
#define TS_EMU_C_END      }
#else
#include <stddef.h>
#include <stdint.h>
#define TS_EMU_DEFAULT(v)
#define TS_EMU_C_BEGIN
#define TS_EMU_C_END
#endif

#ifdef __cplusplus

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static /* one copy per kernel: the blocks of a launch run one after another */

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
    float x, y, z, w;
};
static inline float4 make_float4(float x, float y, float z, float w) {
    return float4{x, y, z, w};
}

/* The running thread's coordinates, set by the emulator before each thread runs or resumes. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static constexpr int warpSize = 32;

/* The explicitly rounded IEEE operations: the host's float arithmetic, built without contraction. */
static inline float __fadd_rn(float a, float b) {
    return a + b;
}
static inline float __fsub_rn(float a, float b) {
    return a - b;
}
static inline float __fmul_rn(float a, float b) {
    return a * b;
}
static inline float __fdiv_rn(float a, float b) {
    return a / b;
}
static inline float __fsqrt_rn(float a) {
    return std::sqrt(a);
}
static inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
static inline float __uint_as_float(unsigned u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
/* Threads of a block never run at the same time here, so a read-modify-write is atomic. */
static inline float atomicAdd(float *p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}

#endif /* __cplusplus */

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorHostMemoryAlreadyRegistered = 712,
    cudaErrorHostMemoryNotRegistered = 713,
};
typedef enum cudaError_t cudaError_t;
typedef enum cudaError_t cudaError;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
typedef enum cudaMemcpyKind cudaMemcpyKind;
enum cudaMemoryType {
    cudaMemoryTypeUnregistered = 0,
    cudaMemoryTypeHost = 1,
    cudaMemoryTypeDevice = 2,
};
typedef enum cudaMemoryType cudaMemoryType;
struct cudaPointerAttributes {
    cudaMemoryType type;
    int device;
    void *devicePointer, *hostPointer;
};
typedef struct cudaPointerAttributes cudaPointerAttributes;
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock;
    int major, minor, multiProcessorCount, maxThreadsPerBlock, warpSize;
};
typedef struct cudaDeviceProp cudaDeviceProp;
struct cudaFuncAttributes {
    size_t sharedSizeBytes;
    int maxThreadsPerBlock, numRegs, ptxVersion, binaryVersion;
};
typedef struct cudaFuncAttributes cudaFuncAttributes;

/* Another process's device allocation (cudaIpcGetMemHandle): opaque, 64 bytes as CUDA's. */
typedef struct {
    char reserved[64];
} cudaIpcMemHandle_t;
#define cudaIpcMemLazyEnablePeerAccess 0x01

typedef struct ts_emu_stream *cudaStream_t;
typedef struct ts_emu_event *cudaEvent_t;
#define cudaStreamDefault      0x00
#define cudaStreamNonBlocking  0x01
#define cudaEventDefault       0x00
#define cudaEventDisableTiming 0x02

TS_EMU_C_BEGIN
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
#define cudaHostRegisterDefault 0u
cudaError_t cudaHostRegister(void *p, size_t bytes, unsigned flags);
cudaError_t cudaHostUnregister(void *p);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p);
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s TS_EMU_DEFAULT(0));
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s TS_EMU_DEFAULT(0));
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                              size_t height, cudaMemcpyKind kind, cudaStream_t s TS_EMU_DEFAULT(0));
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags TS_EMU_DEFAULT(0));
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s TS_EMU_DEFAULT(0));
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t *h, void *p);
cudaError_t cudaIpcOpenMemHandle(void **p, cudaIpcMemHandle_t h, unsigned flags);
cudaError_t cudaIpcCloseMemHandle(void *p);
TS_EMU_C_END

#ifdef __cplusplus
template <class T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cudaMalloc(reinterpret_cast<void **>(p), bytes);
}
/* Every kernel of an emulated build has "code for the device". */
template <class F> static inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, F *) {
    *a = cudaFuncAttributes{0, 1024, 32, 90, 90};
    return cudaSuccess;
}

/* The launch machinery (tests/cuda_emu/emu.cc). */
namespace ts_emu {
struct launch_cfg {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    const char *kernel; /* for messages */
};
/* Checks the configuration; on failure sets the last error and returns false. */
bool launch_ok(const launch_cfg &c);
/* Fatal unless p is NULL or points into device or pinned memory. */
void check_kernel_pointer(const launch_cfg &c, int arg, const void *p);
/* Queues a grid of `body` on the launch's stream. */
void enqueue_grid(const launch_cfg &c, std::function<void()> body);
/* For the other emulated libraries (nccl.h): queues an operation on stream s; whether [p, p + bytes) lies
 * inside one device allocation; the current device. */
void enqueue_op(cudaStream_t s, std::function<void()> op);
/* One line on stderr: "cuda-emu: " what, then the message. */
void vreport(const char *what, const char *fmt, va_list ap);
bool device_range(const void *p, size_t bytes);
int current_device(void);
/* A thread of a block waits for its block (kind 0) or for the lanes of `mask` in its warp (kind 1). */
void barrier(int kind, unsigned mask);
uint64_t shuffle(unsigned mask, uint64_t v, int src_lane);
void *dynamic_smem(void);
unsigned lane(void);

template <class T> static inline void check_arg(const launch_cfg &c, int i, const T &a) {
    if constexpr (std::is_pointer_v<T>) check_kernel_pointer(c, i, (const void *)a);
}

template <class... P> struct launcher {
    void (*k)(P...);
    launch_cfg c;
    template <class... A> void operator()(A &&...a) const {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        if (!launch_ok(c)) return;
        std::tuple<std::decay_t<P>...> args(static_cast<std::decay_t<P>>(std::forward<A>(a))...);
        std::apply(
            [this](const auto &...v) {
                int i = 0;
                (check_arg(c, i++, v), ...);
            },
            args);
        auto kernel = k;
        enqueue_grid(c, [kernel, args]() { std::apply(kernel, args); });
    }
};
} // namespace ts_emu

template <class... P>
static inline ts_emu::launcher<P...> ts_emu_launch_named(const char *name, void (*k)(P...), dim3 grid,
                                                         dim3 block, size_t smem = 0, cudaStream_t s = 0) {
    return ts_emu::launcher<P...>{k, ts_emu::launch_cfg{grid, block, smem, s, name}};
}
#define ts_emu_launch(k, ...) ts_emu_launch_named(#k, k, __VA_ARGS__)
#define ts_emu_dynamic_smem() ts_emu::dynamic_smem()

static inline void __syncthreads(void) {
    ts_emu::barrier(0, 0);
}
template <class T> static inline T ts_emu_shfl(unsigned mask, T v, int src_lane) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    bits = ts_emu::shuffle(mask, bits, src_lane);
    std::memcpy(&v, &bits, sizeof v);
    return v;
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    unsigned l = ts_emu::lane();
    unsigned base = l & ~(unsigned)(width - 1);
    return ts_emu_shfl(mask, v, (int)(base + ((l ^ (unsigned)lane_mask) & (unsigned)(width - 1))));
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    unsigned l = ts_emu::lane();
    unsigned in = l & (unsigned)(width - 1);
    return ts_emu_shfl(mask, v, (int)(in + delta < (unsigned)width ? l + delta : l));
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    unsigned l = ts_emu::lane();
    return ts_emu_shfl(mask, v,
                       (int)((l & ~(unsigned)(width - 1)) + ((unsigned)src & (unsigned)(width - 1))));
}

#endif /* __cplusplus */

#endif
