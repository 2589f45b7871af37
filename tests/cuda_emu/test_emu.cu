/* The host emulator's own test (emu.emulator, TESSERA_CUDA=EMU builds only): what it promises to show, it
 * shows. Kernels with barriers and shuffles compute what a GPU computes; refused launches and bad copies
 * fail through the API; a host that reads a pinned buffer before waiting for the copy sees stale data
 * under the lazy schedule; a stream that waits for another's event sees its work; another process maps
 * an allocation through CUDA IPC and both see each other's kernels' writes; a shuffle naming an
 * exited lane, a host pointer passed to a kernel, a launch of barrier-free blocks whose later block
 * reaches a barrier, and host code reading device memory each stop the program (run in a child) with a
 * message. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

static int failures;

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                  \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
            failures++;                                                                                      \
        }                                                                                                    \
    } while (0)

#define OK(call) CHECK((call) == cudaSuccess, "%s", #call)

/* out[b] = the sum of x over block b's 256 threads, through shared memory and __syncthreads. */
static __global__ void block_sum_kernel(const float *x, float *out) {
    __shared__ float s[256];
    unsigned t = threadIdx.x;
    s[t] = x[blockIdx.x * 256 + t];
    __syncthreads();
    for (unsigned h = 128; h > 0; h >>= 1) {
        if (t < h) s[t] += s[t + h];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

/* out[w] = the sum over warp w's lanes, by xor shuffles; lane 0 writes. */
static __global__ void warp_sum_kernel(const float *x, float *out) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = x[i];
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) out[i / 32] = v;
}

/* Lanes 16..31 return before the shuffle that names them. */
static __global__ void exited_lane_kernel(float *x) {
    if ((threadIdx.x & 31) >= 16) return;
    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
}

/* Only block 0 reaches the barrier; the emulator runs the last block first and finds none. */
static __global__ void late_barrier_kernel(float *x) {
    if (blockIdx.x == 0) __syncthreads();
    x[blockIdx.x] = 1.0f;
}

static __global__ void fill_kernel(float *x, float v, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        x[i] = v;
}

static __global__ void add_kernel(float *y, const float *x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] += x[i];
}

/* Runs f in a child; passes when it dies (a signal, or ASan's exit status) and its stderr holds `want`. */
static void expect_fatal(const char *what, void (*f)(void), const char *want) {
    char path[] = "/tmp/test_emu.XXXXXX";
    int fd = mkstemp(path);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd, 2);
        f();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    char buf[4096] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    CHECK(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0),
          "%s: the child did not fail (status %d)", what, st);
    CHECK(n > 0 && strstr(buf, want), "%s: stderr lacks \"%s\": %s", what, want, buf);
    if (!failures) printf("ok: %s stops the program: %.*s", what, (int)strcspn(buf, "\n") + 1, buf);
}

static void shuffle_exited(void) {
    float *d;
    cudaMalloc(&d, 32 * sizeof(float));
    exited_lane_kernel<<<1, 32>>>(d);
    cudaDeviceSynchronize();
}

static void host_pointer_arg(void) {
    static float host[4];
    fill_kernel<<<1, 4>>>(host, 1.0f, 4);
}

static void host_reads_device(void) {
    float *d;
    cudaMalloc(&d, 4 * sizeof(float));
    volatile float x = d[1];
    (void)x;
}

static void barrier_late(void) {
    float *d;
    cudaMalloc(&d, 4 * sizeof(float));
    late_barrier_kernel<<<4, 32>>>(d);
    cudaDeviceSynchronize();
}

static void test_kernels(void) {
    enum { BLOCKS = 5, N = BLOCKS * 256 };
    float h[N], want[BLOCKS] = {0}, got[N / 32], wsum[N / 32] = {0};
    for (int i = 0; i < N; i++) {
        h[i] = (float)(i % 7) - 3.0f;
        want[i / 256] += h[i];
        wsum[i / 32] += h[i];
    }
    float *x, *out;
    OK(cudaMalloc(&x, sizeof h));
    OK(cudaMalloc(&out, sizeof got));
    OK(cudaMemcpy(x, h, sizeof h, cudaMemcpyHostToDevice));
    block_sum_kernel<<<BLOCKS, 256>>>(x, out);
    OK(cudaGetLastError());
    OK(cudaMemcpy(got, out, BLOCKS * sizeof(float), cudaMemcpyDeviceToHost));
    for (int b = 0; b < BLOCKS; b++)
        CHECK(got[b] == want[b], "block %d: sum %g, want %g", b, got[b], want[b]);
    warp_sum_kernel<<<BLOCKS, 256>>>(x, out);
    OK(cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost));
    for (int w = 0; w < N / 32; w++)
        CHECK(got[w] == wsum[w], "warp %d: sum %g, want %g", w, got[w], wsum[w]);
    OK(cudaFree(x));
    OK(cudaFree(out));
    if (!failures) printf("ok: a __syncthreads tree sum and a warp shuffle sum are exact\n");
}

static void test_refusals(void) {
    float *d;
    OK(cudaMalloc(&d, 64 * sizeof(float)));
    fill_kernel<<<1, 2048>>>(d, 1.0f, 64);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "a 2048-thread block was not refused");
    CHECK(cudaGetLastError() == cudaSuccess, "the launch error was not cleared by reading it");
    fill_kernel<<<dim3(1, 70000), 32>>>(d, 1.0f, 64);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y = 70000 was not refused");
    float h[65];
    CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue,
          "a copy of 65 floats out of a 64-float allocation was not refused");
    CHECK(cudaMemcpy(h, h + 1, 4, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue,
          "a device-to-host copy from host memory was not refused");
    CHECK(cudaMemsetAsync(d + 60, 0, 8 * sizeof(float), 0) == cudaErrorInvalidValue,
          "a memset past the allocation's end was not refused");
    cublasHandle_t blas;
    cublasCreate(&blas);
    float one = 1.0f, zero = 0.0f;
    CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, d, 9, d, 8, &zero, d, 8) ==
              CUBLAS_STATUS_INVALID_VALUE,
          "an 8x8 A with leading dimension 9 (71 floats) in a 64-float allocation was not refused");
    cublasDestroy(blas);
    (void)cudaGetLastError();
    OK(cudaFree(d));
    if (!failures) printf("ok: bad launches, copies, memsets are refused through the API\n");
}

/* cudaHostRegister: the caller's memory counts as pinned (a kernel may take it) until unregistered. */
static void test_register(void) {
    float *h = (float *)malloc(1024 * sizeof(float)), *d;
    cudaPointerAttributes a;
    OK(cudaHostRegister(h, 1024 * sizeof(float), cudaHostRegisterDefault));
    OK(cudaPointerGetAttributes(&a, h + 10));
    CHECK(a.type == cudaMemoryTypeHost, "registered memory is not pinned host memory (%d)", (int)a.type);
    CHECK(cudaHostRegister(h + 512, 16, cudaHostRegisterDefault) == cudaErrorHostMemoryAlreadyRegistered,
          "registering inside a registered range was not refused");
    CHECK(cudaFreeHost(h) == cudaErrorInvalidValue, "cudaFreeHost of registered memory was not refused");
    OK(cudaMalloc(&d, 1024 * sizeof(float)));
    fill_kernel<<<4, 256>>>(h, 2.0f, 1024); /* the kernel writes it in place */
    OK(cudaDeviceSynchronize());
    CHECK(h[1023] == 2.0f, "a kernel's write to registered memory is missing");
    OK(cudaHostUnregister(h));
    CHECK(cudaHostUnregister(h) == cudaErrorHostMemoryNotRegistered, "a second unregister was not refused");
    (void)cudaGetLastError();
    OK(cudaPointerGetAttributes(&a, h));
    CHECK(a.type == cudaMemoryTypeUnregistered, "unregistered memory still counts as pinned");
    OK(cudaFree(d));
    free(h);
    if (!failures) printf("ok: cudaHostRegister / cudaHostUnregister\n");
}

/* Under TESSERA_CUDA_EMU_SCHEDULE=lazy (set by main): queued work runs only when the host waits. */
/* CUDA IPC between two processes: a child maps the parent's allocation, reads what the parent's kernel
 * wrote, adds to it with a kernel of its own; the parent sees the sum. A process's own handle is
 * refused, as is cudaFree of opened memory. */
static void test_ipc(void) {
    enum { N = 1024 };
    float *d, h[N];
    OK(cudaMalloc(&d, N * sizeof(float)));
    fill_kernel<<<4, 256>>>(d, 3.0f, N);
    cudaIpcMemHandle_t ih;
    OK(cudaIpcGetMemHandle(&ih, d)); /* waits for the kernel: its writes move into the shared pages */
    void *self = NULL;
    CHECK(cudaIpcOpenMemHandle(&self, ih, cudaIpcMemLazyEnablePeerAccess) == cudaErrorInvalidResourceHandle,
          "a process opened its own IPC handle");
    (void)cudaGetLastError();
    int to_child[2], to_parent[2];
    CHECK(!pipe(to_child) && !pipe(to_parent), "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        char c;
        void *p = NULL;
        int bad = read(to_child[0], &c, 1) != 1 ||
                  cudaIpcOpenMemHandle(&p, ih, cudaIpcMemLazyEnablePeerAccess) != cudaSuccess;
        float got[N];
        bad = bad || cudaMemcpy(got, p, sizeof got, cudaMemcpyDeviceToHost) != cudaSuccess ||
              got[N - 1] != 3.0f;
        bad = bad || cudaFree(p) != cudaErrorInvalidValue;
        float *ones = NULL;
        bad = bad || cudaMalloc(&ones, N * sizeof(float)) != cudaSuccess;
        if (!bad) {
            fill_kernel<<<4, 256>>>(ones, 1.0f, N);
            add_kernel<<<4, 256>>>((float *)p, ones, N);
            bad = cudaDeviceSynchronize() != cudaSuccess || cudaIpcCloseMemHandle(p) != cudaSuccess;
        }
        c = bad ? 'x' : 'y';
        _exit(write(to_parent[1], &c, 1) == 1 && !bad ? 0 : 1);
    }
    close(to_child[0]); /* a child that dies closes its end: the read below then ends */
    close(to_parent[1]);
    char c = 0;
    CHECK(write(to_child[1], "g", 1) == 1 && read(to_parent[0], &c, 1) == 1 && c == 'y',
          "the child could not open, read or write the parent's allocation");
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child ended with status %d", st);
    OK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
    CHECK(h[0] == 4.0f && h[N - 1] == 4.0f, "after the child's kernel the parent sees %g, want 4", h[N - 1]);
    OK(cudaFree(d));
    close(to_child[1]);
    close(to_parent[0]);
    if (!failures) printf("ok: CUDA IPC between two processes\n");
}

static void test_ordering(void) {
    enum { N = 1000 };
    float *a, *b, *pinned;
    cudaStream_t s1, s2;
    cudaEvent_t ev;
    OK(cudaMalloc(&a, N * sizeof(float)));
    OK(cudaMalloc(&b, N * sizeof(float)));
    OK(cudaMallocHost((void **)&pinned, N * sizeof(float)));
    OK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    OK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    for (int i = 0; i < N; i++)
        pinned[i] = -1.0f;
    fill_kernel<<<4, 128, 0, s1>>>(a, 2.0f, N);
    OK(cudaMemcpyAsync(pinned, a, N * sizeof(float), cudaMemcpyDeviceToHost, s1));
    CHECK(pinned[N - 1] == -1.0f, "the pinned buffer changed before the stream was waited for");
    OK(cudaStreamSynchronize(s1));
    CHECK(pinned[N - 1] == 2.0f, "after the wait the pinned buffer holds %g, want 2", pinned[N - 1]);

    /* s2 adds a into b: with the wait on s1's event it sees a = 5; without, the fill is still queued. */
    fill_kernel<<<4, 128, 0, s2>>>(b, 1.0f, N);
    fill_kernel<<<4, 128, 0, s1>>>(a, 5.0f, N);
    OK(cudaEventRecord(ev, s1));
    OK(cudaStreamWaitEvent(s2, ev, 0));
    add_kernel<<<4, 128, 0, s2>>>(b, a, N);
    OK(cudaMemcpyAsync(pinned, b, N * sizeof(float), cudaMemcpyDeviceToHost, s2));
    OK(cudaStreamSynchronize(s2));
    CHECK(pinned[0] == 6.0f, "with the event wait b = %g, want 6", pinned[0]);
    fill_kernel<<<4, 128, 0, s2>>>(b, 1.0f, N);
    fill_kernel<<<4, 128, 0, s1>>>(a, 7.0f, N);
    add_kernel<<<4, 128, 0, s2>>>(b, a, N); /* no wait: a is still 5 here */
    OK(cudaMemcpyAsync(pinned, b, N * sizeof(float), cudaMemcpyDeviceToHost, s2));
    OK(cudaStreamSynchronize(s2));
    CHECK(pinned[0] == 6.0f, "without the wait b = %g: the other stream's work ran early", pinned[0]);
    CHECK(cudaEventQuery(ev) == cudaSuccess, "a drained event is not complete");
    OK(cudaEventRecord(ev, s1));
    CHECK(cudaEventQuery(ev) == cudaErrorNotReady, "the first query after a record was not 'not ready'");
    CHECK(cudaEventQuery(ev) == cudaSuccess, "the second query did not complete the event");
    OK(cudaFreeHost(pinned));
    OK(cudaFree(a));
    OK(cudaFree(b));
    if (!failures) printf("ok: pinned results and other streams' work appear only after the waits\n");
}

int main(void) {
    setenv("TESSERA_CUDA_EMU_SCHEDULE", "lazy", 1);
    test_kernels();
    test_refusals();
    test_register();
    test_ipc();
    test_ordering();
    expect_fatal("a shuffle naming exited lanes", shuffle_exited, "has exited");
    expect_fatal("a host pointer passed to a kernel", host_pointer_arg, "neither device nor pinned");
    expect_fatal("a barrier only a later block reaches", barrier_late, "first block did not");
    expect_fatal("host code reading device memory", host_reads_device, "host code touched device memory");
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
